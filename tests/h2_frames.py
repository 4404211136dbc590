"""Raw HTTP/2 frames for the tests that play a hostile or unusual client over a plain socket
(tests/test_h2_*.py, tests/test_nghttp2_*.py): frame builders, readers that wait for the
peer's answers, GOAWAY or EOF, and ``RawPeer``, a client that records every frame.  Frames are
split by ``perf.abuse_attacks.split_frames``, the attacker's own."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import hpack

from perf.abuse_attacks import split_frames  # noqa: F401  (re-exported for the tests)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One frame."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(
        ">I", sid) + payload


def settings(*values: tuple[int, int], ack: bool = False) -> bytes:
    """A SETTINGS frame with ``values`` ((id, value) pairs), or its ACK."""
    return frame(SETTINGS, 1 if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in values))


def request_block(enc: hpack.Encoder, path: bytes, method: bytes = b"GET",
                  authority: bytes = b"test") -> bytes:
    return enc.encode([(b":method", method), (b":scheme", b"http"), (b":authority", authority),
                       (b":path", path)])


def get_requests(n: int, path: bytes = b"/x") -> bytes:
    """``n`` GET requests (HEADERS with END_STREAM) on streams 1, 3, 5, ..., one encoder."""
    enc = hpack.Encoder()
    return b"".join(frame(HEADERS, 0x5, 1 + 2 * i, request_block(enc, path)) for i in range(n))


def greeting(*values: tuple[int, int]) -> bytes:
    """What a client sends first: the magic, its SETTINGS, and the ACK of the server's."""
    return PREFACE + settings(*values) + settings(ack=True)


class Received:
    """What the peer sent until EOF: the GOAWAY codes, response HEADERS stream ids, DATA bytes
    per stream, RST_STREAM stream ids."""

    def __init__(self) -> None:
        self.goaway: list[int] = []
        self.headers: list[int] = []
        self.data: dict[int, int] = {}
        self.ended: set[int] = set()
        self.resets: list[int] = []
        self.eof = False

    def take(self, buf: bytes) -> bytes:
        """Count the whole frames in ``buf``; returns what is left (a partial frame)."""
        frames, rest = split_frames(buf)
        for ftype, flags, sid, payload in frames:
            if ftype == GOAWAY:
                self.goaway.append(struct.unpack_from(">I", payload, 4)[0])
            elif ftype == HEADERS:
                self.headers.append(sid)
                if flags & 1:
                    self.ended.add(sid)
            elif ftype == DATA:
                self.data[sid] = self.data.get(sid, 0) + len(payload) - (
                    payload[0] + 1 if flags & 0x8 else 0)
                if flags & 1:
                    self.ended.add(sid)
            elif ftype == RST_STREAM:
                self.resets.append(sid)
        return rest


async def read_until_eof(reader: asyncio.StreamReader, timeout: float = 30.0) -> Received:
    """Read until the peer closes (or ``timeout``, a hang guard); what came."""
    return await read_until(reader, lambda got: False, timeout)


async def read_until(reader: asyncio.StreamReader, done: Callable[[Received], bool],
                     timeout: float = 30.0) -> Received:
    """Read until ``done`` says what came is enough, the peer closes, or ``timeout`` (a hang
    guard) passes; what came."""
    got = Received()
    buf = b""
    while not done(got):
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout)
        except (TimeoutError, ConnectionError):
            return got
        if not data:
            got.eof = True
            return got
        buf = got.take(buf + data)
    return got


async def read_bodies(reader: asyncio.StreamReader, sids: list[int],
                      timeout: float = 30.0) -> dict[int, bytearray]:
    """Read until every stream of ``sids`` has ended; each one's DATA payload (the peer pads
    nothing here).  Fails when the peer closes first or sends GOAWAY."""
    bodies: dict[int, bytearray] = {sid: bytearray() for sid in sids}
    ended: set[int] = set()
    buf = b""
    while len(ended) < len(sids):
        data = await asyncio.wait_for(reader.read(1 << 20), timeout)
        assert data, "connection closed before all responses"
        frames, buf = split_frames(buf + data)
        for ftype, flags, sid, payload in frames:
            assert ftype != GOAWAY, payload
            if ftype == DATA:
                bodies[sid] += payload
            if ftype in (DATA, HEADERS) and flags & 1:
                ended.add(sid)
    return bodies


class RawPeer:
    """A raw HTTP/2 client that records every frame the server sends (``frames``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.pending: list[tuple[int, int, int, bytes]] = []  # split, not yet looked at
        self.frames: list[tuple[int, int, int, bytes]] = []

    @classmethod
    async def open(cls, port: int) -> RawPeer:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def until(self, pred: Callable[[tuple[int, int, int, bytes]], bool]
                    ) -> tuple[int, int, int, bytes]:
        """Read frames until ``pred(frame)`` holds for a new one; returns it."""
        while True:
            while self.pending:
                f = self.pending.pop(0)
                self.frames.append(f)
                if pred(f):
                    return f
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the server closed the connection"
            got, self.buf = split_frames(self.buf + data)
            self.pending += got

    def count(self, ftype: int, flags: int | None = None, sid: int | None = 0) -> int:
        """Frames of ``ftype`` seen (with the ACK flag ``flags``, on stream ``sid``)."""
        return sum(1 for t, fl, s, _ in self.frames if t == ftype
                   and (flags is None or fl & 1 == flags) and (sid is None or s == sid))

    def close(self) -> None:
        self.writer.close()
