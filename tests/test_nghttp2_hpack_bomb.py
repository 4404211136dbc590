"""HPACK bombs on the nghttp2 backend (issue 13): a header block over
SETTINGS_MAX_HEADER_LIST_SIZE that decodes from far fewer bytes than it decodes to, and to more
than four times our dynamic table (the same entries referenced over and over), ends the
connection at once with GOAWAY(ENHANCE_YOUR_CALM) and no 431; a client whose block is merely too
large (sent literally, or one big indexed field) still gets 431 on that stream and the
connection goes on.  Raw frames over real sockets; every wait is for a frame or a close."""

from __future__ import annotations

import asyncio

import hpack
import pytest

from dataplane.engine import ErrorCode, H2Settings
from tests.conftest import start_origin
from tests.test_rfc9113_errors import (
    ACK,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PREFACE,
    frame,
    settings,
)

pytestmark = pytest.mark.parametrize("backend", ["nghttp2"])

# :method GET, :scheme http, :path /, :authority "abuse" (a literal not indexed)
HEAD = b"\x82\x86\x84\x01\x05abuse"
# x-bomb: 4,000 x "b", literal with incremental indexing: the newest entry (index 62)
ENTRY = b"\x40\x06x-bomb\x7f\xa1\x1e" + b"b" * 4000


async def _frames_until_goaway_or(reader, pred) -> list[tuple[int, int, int, bytes]]:
    """Read frames until a GOAWAY, ``pred(frame)``, or the close; returns them all."""
    got, buf = [], b""
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n])
            buf = buf[9 + n:]
            got.append(f)
            if f[0] == GOAWAY or pred(f):
                return got
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            return got
        buf += data


def status(block: bytes, dec: hpack.Decoder) -> bytes:
    return dict(dec.decode(block, raw=True))[b":status"]


@pytest.mark.parametrize("after", [1, 20], ids=["one_more_block", "twenty_more_blocks"])
async def test_bomb_block_is_cut_at_once(backend, after):
    """A bomb block ends the connection before any answer, also when the same read opens
    more blocks after it than the frame scan's ring of encoded sizes holds (20): such a read is
    fed to the session in parts, so the bomb is still told from a merely large block (it used
    to get 431, and cost a decode of each such block until the refused-stream budget cut the
    client)."""
    origin = await start_origin(backend, settings=H2Settings())
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        # the entry goes into the table with a normal request (served), then one block of 60
        # references to it: ~242 KB decoded from 69 bytes, under the 256 KiB hard limit
        writer.write(PREFACE + settings() + settings(flags=ACK)
                     + frame(HEADERS, END_HEADERS | END_STREAM, 1, HEAD + ENTRY))
        dec = hpack.Decoder()
        got = await _frames_until_goaway_or(reader, lambda f: f[0] == HEADERS)
        assert status(got[-1][3], dec) == b"200"
        more = HEAD + b"\xbe" * 60 if after == 1 else HEAD
        writer.write(frame(HEADERS, END_HEADERS | END_STREAM, 3, HEAD + b"\xbe" * 60)
                     + b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 5 + 2 * i, more)
                                for i in range(after)))
        got = await _frames_until_goaway_or(reader, lambda f: False)
        assert got and got[-1][0] == GOAWAY
        assert int.from_bytes(got[-1][3][4:8], "big") == ErrorCode.ENHANCE_YOUR_CALM
        assert not [f for f in got if f[0] == HEADERS]  # no 431: cut before any answer
        assert len(origin.handler.requests) == 1
        assert await reader.read() == b""  # and closed
    finally:
        writer.close()
        await origin.stop()


@pytest.mark.parametrize("indexed", [False, True], ids=["literal", "indexed_once"])
async def test_merely_too_large_block_gets_431(backend, indexed):
    """Over a 2 KiB list limit: 40 literal fields of 100 bytes (never indexed), or the 4,000-byte
    field from the table referenced once (decoded 4 KB from a byte: no more than our table)."""
    origin = await start_origin(backend, settings=H2Settings(max_header_list_size=2048))
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        if indexed:
            big = HEAD + b"\xbe"
            first = HEAD + b"\x40\x06x-bomb\x7f\xe9\x06" + b"b" * 1000  # 1 KB entry: served
        else:
            big = HEAD + b"".join(b"\x10\x04x-%02d\x64" % i + b"v" * 100 for i in range(40))
            first = HEAD
        writer.write(PREFACE + settings() + settings(flags=ACK)
                     + frame(HEADERS, END_HEADERS | END_STREAM, 1, first))
        dec = hpack.Decoder()
        got = await _frames_until_goaway_or(reader, lambda f: f[0] == HEADERS)
        assert status(got[-1][3], dec) == b"200"
        if indexed:  # a 4,000-byte entry now (the 1 KB one evicted by it)
            writer.write(frame(HEADERS, END_HEADERS | END_STREAM, 3,
                               HEAD + b"\x40\x06x-bomb\x7f\xa1\x1e" + b"b" * 4000))
            got = await _frames_until_goaway_or(reader, lambda f: f[0] == HEADERS)
            assert status(got[-1][3], dec) == b"431"  # a 4 KB literal is too large too
        writer.write(frame(HEADERS, END_HEADERS | END_STREAM, 5, big))
        got = await _frames_until_goaway_or(reader, lambda f: f[0] == HEADERS)
        assert got[-1][0] == HEADERS and got[-1][2] == 5 and status(got[-1][3], dec) == b"431"
        writer.write(frame(HEADERS, END_HEADERS | END_STREAM, 7, HEAD))
        got = await _frames_until_goaway_or(reader, lambda f: f[0] == HEADERS)
        assert got[-1][2] == 7 and status(got[-1][3], dec) == b"200"
    finally:
        writer.close()
        await origin.stop()
