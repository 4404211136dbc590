"""The HPACK bomb against the pure-Python engine (h2 backend), over a real socket: one 4 KB
dynamic-table entry, then header blocks of 60 references to it (~240 KB decoded from ~70
bytes, under the 256 KiB hard limit).  The first such block ends the connection with GOAWAY
ENHANCE_YOUR_CALM: hpack stops decoding once the block is over the advertised limit and more
than ``bomb_ratio`` times its encoded size, so no block of the bomb is decoded whole, let alone
answered 431 one after another.  A large block sent literally is still answered 431
(tests/test_engine_limits.py, test_engine_budgets.py)."""

from __future__ import annotations

import asyncio

import pytest

from dataplane.engine import ErrorCode, H2Settings, load_backend
from tests.conftest import start_origin
from tests.h2_frames import HEADERS, frame, greeting, read_until_eof

# :method GET, :scheme http, :path / (static table), :authority "abuse" (not indexed)
HEAD = b"\x82\x86\x84\x01\x05abuse"
ENTRY = HEAD + b"\x40\x06x-bomb\x7f\xa1\x1e" + b"b" * 4000  # x-bomb: 4,000 b's, indexed (62)
BOMB = HEAD + b"\xbe" * 60  # 60 references to index 62


@pytest.fixture
async def origin():
    running = await start_origin(load_backend("h2"), settings=H2Settings())
    yield running
    await running.stop()


async def test_first_bomb_block_ends_the_connection(origin):
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        writer.write(greeting() + frame(HEADERS, 0x5, 1, ENTRY)
                     + b"".join(frame(HEADERS, 0x5, 3 + 2 * i, BOMB) for i in range(20)))
        await writer.drain()
        got = await read_until_eof(reader)
    finally:
        writer.close()
    assert got.goaway == [ErrorCode.ENHANCE_YOUR_CALM]
    assert got.eof
    # no bomb block reached the handler or got a 431 (the entry's own request may not have
    # been served either: h2 parses a whole slice before its events are handled)
    assert len(origin.handler.requests) <= 1
    assert set(got.headers) <= {1}
    conn = origin.handler.connections[0]
    assert conn.calm_goaway
    # hpack stopped at the advertised limit (64 KiB: 17 of the 60 references), not the hard one
    assert conn._h2.decoder.max_header_list_size == 65536
