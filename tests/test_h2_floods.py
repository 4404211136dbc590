"""Floods against the pure-Python engine (h2 backend), over real sockets: the attacker is cut
(GOAWAY ENHANCE_YOUR_CALM, then EOF) after a small, bounded number of frames handed to h2, the
engine's ``frames_fed`` counter says how many, and a legitimate client on another connection
is served meanwhile.  The budgets are charged from the raw frame headers of each read before
h2 parses any of it, so a read that takes a connection over its budget costs no parsing; a long
read is fed to h2 a slice at a time, one slice per loop iteration."""

from __future__ import annotations

import asyncio
import struct

import hpack
import pytest

from dataplane.client import H2Client
from dataplane.engine import ErrorCode, H2Settings, load_backend
from dataplane.h2_splice import FEED_FRAMES, HEADERS_WEIGHT
from tests.conftest import start_origin
from tests.h2_frames import (
    HEADERS,
    PING,
    PRIORITY,
    RST_STREAM,
    frame,
    get_requests,
    greeting,
    read_until,
    read_until_eof,
    request_block,
    settings,
)
from tests.waiting import wait_until

BUDGET = 50  # resets and control frames per second in these tests
FLOOD = 5000  # frames the attacker sends (in writes of 200)


def flood(case: str, enc: hpack.Encoder) -> list[bytes]:
    """The attacker's writes after its greeting."""
    out = []
    sid = 1
    for _ in range(FLOOD // 200):
        if case == "rapid_reset":
            chunk = []
            for _ in range(100):
                chunk.append(frame(HEADERS, 0x5, sid, request_block(enc, b"/hold")))
                chunk.append(frame(RST_STREAM, 0, sid, struct.pack(">I", ErrorCode.CANCEL)))
                sid += 2
            out.append(b"".join(chunk))
        elif case == "settings_flood":
            out.append(settings() * 200)
        elif case == "ping_flood":
            out.append(frame(PING, 0, 0, b"\0" * 8) * 200)
        elif case == "priority_flood":
            out.append(b"".join(frame(PRIORITY, 0, 2 * i + 1, b"\0\0\0\0\x10")
                                for i in range(200)))
    return out


@pytest.fixture
async def origin():
    settings_ = H2Settings(max_resets_per_second=BUDGET, max_control_frames_per_second=BUDGET)
    running = await start_origin(load_backend("h2"), settings=settings_)
    yield running
    await running.stop()


async def legit_requests(port: int, n: int) -> list[int]:
    client = H2Client("h2")
    try:
        statuses = []
        for _ in range(n):
            resp = await asyncio.wait_for(client.request("GET", f"http://127.0.0.1:{port}/x"), 10)
            statuses.append(resp.status)
        return statuses
    finally:
        await client.close()


@pytest.mark.parametrize("case", ["rapid_reset", "settings_flood", "ping_flood",
                                  "priority_flood"])
async def test_flood_is_cut_after_a_bounded_number_of_frames(origin, case):
    legit = asyncio.ensure_future(legit_requests(origin.port, 5))
    await asyncio.sleep(0)
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        writer.write(greeting())
        for chunk in flood(case, hpack.Encoder()):
            writer.write(chunk)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        got = await read_until_eof(reader)
    finally:
        writer.close()
    assert got.goaway == [ErrorCode.ENHANCE_YOUR_CALM]
    assert got.eof
    conn = next(c for c in origin.handler.connections if c.calm_goaway)
    # what h2 parsed: the greeting (2 SETTINGS), at most the budget of the flooded kind, the
    # HEADERS between rapid resets, and at most one read's slice beyond the scan's cut point
    bound = 2 + BUDGET * (2 if case == "rapid_reset" else 1) + FEED_FRAMES
    assert conn.frames_fed <= bound, (conn.frames_fed, bound)
    assert conn.frames_scanned < 2 * bound  # the scan stopped at the budget too
    if case == "rapid_reset":
        assert len(origin.handler.requests) <= BUDGET + FEED_FRAMES
    assert await legit == [200] * 5


async def test_a_long_read_is_fed_in_slices_and_answered_whole(origin):
    """Many requests in one write (under every budget): h2 gets them a slice at a time (16
    requests a slice), with reading paused in between, and every one is answered."""
    n = 6 * FEED_FRAMES
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        writer.write(greeting() + get_requests(n))
        await writer.drain()
        got_task = asyncio.ensure_future(read_until(reader, lambda got: len(got.ended) == n))
        await wait_until(lambda: origin.handler.connections
                         and origin.handler.connections[0].frames_fed >= n + 2)
        conn = origin.handler.connections[0]
        assert conn.frames_fed == n + 2
        # a request weighs HEADERS_WEIGHT frames: FEED_FRAMES / HEADERS_WEIGHT (16) a slice,
        # so 24 slices in one read (23 deferred; 6 before the weight), a few fewer when the
        # kernel splits the write into several reads
        assert conn.deferred_slices >= n * HEADERS_WEIGHT // FEED_FRAMES // 2
        assert not conn.calm_goaway
        await wait_until(lambda: len(origin.handler.requests) == n)
        got = await got_task  # every answer, read before the socket closes
    finally:
        writer.close()
    assert sorted(got.ended) == [1 + 2 * i for i in range(n)]


PAIRS = 10  # HEADERS + RST_STREAM pairs: with the last request, one slice of a read


async def test_streams_opened_and_reset_in_one_read_never_reach_the_handler(origin):
    """Under the budget, a stream the client opens and resets in the same read costs h2's
    parsing only: the handler (the proxy: a splice upstream) never hears of it."""
    enc = hpack.Encoder()
    pairs = b"".join(frame(HEADERS, 0x5, 1 + 2 * i, request_block(enc, b"/hold"))
                     + frame(RST_STREAM, 0, 1 + 2 * i, struct.pack(">I", ErrorCode.CANCEL))
                     for i in range(PAIRS))
    last = frame(HEADERS, 0x5, 1 + 2 * PAIRS, request_block(enc, b"/x"))
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        writer.write(greeting() + pairs + last)
        await writer.drain()
        got_task = asyncio.ensure_future(
            read_until(reader, lambda got: 1 + 2 * PAIRS in got.ended))
        await wait_until(lambda: origin.handler.requests)
        conn = origin.handler.connections[0]
        await wait_until(lambda: conn.open_streams == 0)
        assert conn.skipped_requests == PAIRS
        assert [dict(r)[b":path"] for r in origin.handler.requests] == [b"/x"]
        assert not origin.handler.held
        got = await got_task  # the answer, read before the socket closes
    finally:
        writer.close()
    assert 1 + 2 * PAIRS in got.ended
