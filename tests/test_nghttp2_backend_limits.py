"""The nghttp2 (Cython) backend's limits and shutdown, against real sockets.

A body over ``read_body``'s limit (413) and a header list over the advertised size (431),
streams over SETTINGS_MAX_CONCURRENT_STREAMS refused, floods (rapid reset, PING) answered
GOAWAY(ENHANCE_YOUR_CALM), a handler's exception costing one stream, and graceful drains both
ways (GOAWAY + PING, the final GOAWAY even without a PING ACK).  Clients are the engine's own
(``tests.nghttp2_rig``) and python-hyper's ``h2``, driven by hand for the abuse.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from dataplane.engine import ErrorCode, H2Settings
from tests.conftest import OriginHandler, start_origin
from tests.h2_frames import get_requests, greeting, read_until, split_frames
from tests.nghttp2_rig import (
    connect,
    hdr,
    request,
    start_local,
)
from tests.waiting import HANG_GUARD_S, wait_until

nghttp2 = pytest.importorskip("dataplane._nghttp2")

pytestmark = pytest.mark.interop


@pytest.fixture
async def origin():
    running = await start_origin(nghttp2)
    yield running
    await running.stop()


# ---- limits --------------------------------------------------------------------------------------


class LimitHandler(OriginHandler):
    """/small: read_body limited to 1000 bytes; the rest as the origin."""

    def __init__(self) -> None:
        super().__init__("limits")
        self.bodies: list = []

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        if hdr(headers, b":path") == b"/small":

            def done(body, trailers):
                self.bodies.append(body)
                if body is not None:
                    conn.respond(stream_id, 200, [], b"%d" % len(body))

            conn.read_body(stream_id, 1000, done)
            return
        super().on_request(conn, stream_id, headers, end_stream)


async def test_read_body_limit_413_and_header_list_431():
    handler = LimitHandler()
    server, port, conns = await start_local(handler, H2Settings(max_header_list_size=2048))
    try:
        status, _, body, _, err = await request(nghttp2, port, "POST", "/small", b"x" * 500)
        assert (status, body) == (200, b"500")
        status, _, _, _, err = await request(nghttp2, port, "POST", "/small", b"x" * 50_000)
        assert status == 413 and handler.bodies[-1] is None
        status, *_ = await request(nghttp2, port, "GET", "/x", extra=[(b"x-big", b"v" * 4000)])
        assert status == 431
        status, *_ = await request(nghttp2, port, "GET", "/x")
        assert status == 200
    finally:
        server.close()
        for c in conns:
            c.close()


async def test_streams_over_the_limit_are_refused():
    handler = OriginHandler("lim")
    server, port, conns = await start_local(handler, H2Settings(max_concurrent_streams=2))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        for sid in (1, 3, 5):  # sent before the server's SETTINGS are known
            h2c.send_headers(
                sid,
                [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/hold")],
                end_stream=True,
            )
        writer.write(h2c.data_to_send())
        resets = {}
        while not resets:
            data = await asyncio.wait_for(reader.read(65536), HANG_GUARD_S)
            assert data
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.StreamReset):
                    resets[ev.stream_id] = ev.error_code
            writer.write(h2c.data_to_send())
        assert resets == {5: ErrorCode.REFUSED_STREAM}
        assert len(handler.held) == 2
        writer.close()
    finally:
        server.close()
        for c in conns:
            c.close()


async def _flood(port: int, build, settings=None) -> tuple[int | None, bool]:
    """Send what ``build(h2c)`` queues in one write; return (GOAWAY code, connection closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2c.initiate_connection()
    build(h2c)
    writer.write(h2c.data_to_send())
    code = None
    eof = False
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), HANG_GUARD_S)
            if not data:
                eof = True
                break
            try:
                events = h2c.receive_data(data)
            except h2.exceptions.ProtocolError:
                continue
            for ev in events:
                if isinstance(ev, h2.events.ConnectionTerminated):
                    code = ev.error_code
    finally:
        writer.close()
    return code, eof


async def test_rapid_reset_gets_enhance_your_calm():
    handler = OriginHandler("rr")
    server, port, conns = await start_local(handler, H2Settings(max_resets_per_second=50))
    try:

        def build(h2c):
            for i in range(200):
                sid = 1 + 2 * i
                h2c.send_headers(
                    sid,
                    [
                        (":method", "GET"),
                        (":scheme", "http"),
                        (":authority", "x"),
                        (":path", "/hold"),
                    ],
                )
                h2c.reset_stream(sid, ErrorCode.CANCEL)

        code, eof = await _flood(port, build)
        assert code == ErrorCode.ENHANCE_YOUR_CALM and eof
        # far fewer than the 200 requests were announced to the handler
        assert len(handler.requests) <= 60
        # an honest client on a new connection is served
        status, *_ = await request(nghttp2, port, "GET", "/x")
        assert status == 200
    finally:
        server.close()
        for c in conns:
            c.close()


async def test_ping_flood_gets_enhance_your_calm():
    server, port, conns = await start_local(
        OriginHandler("pf"), H2Settings(max_control_frames_per_second=100)
    )
    try:

        def build(h2c):
            for i in range(300):
                h2c.ping(i.to_bytes(8, "big"))

        code, eof = await _flood(port, build)
        assert code == ErrorCode.ENHANCE_YOUR_CALM and eof
    finally:
        server.close()
        for c in conns:
            c.close()


async def test_handler_exception_resets_only_that_stream():
    class Broken(OriginHandler):
        def on_request(self, conn, stream_id, headers, end_stream):
            if hdr(headers, b":path") == b"/boom":
                raise RuntimeError("boom")
            super().on_request(conn, stream_id, headers, end_stream)

    server, port, conns = await start_local(Broken("b"))
    try:
        conn = await connect(nghttp2, port)
        fut1 = asyncio.get_running_loop().create_future()
        fut2 = asyncio.get_running_loop().create_future()
        base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x")]
        conn.request(base + [(b":path", b"/boom")], None, lambda *a: fut1.set_result(a))
        conn.request(base + [(b":path", b"/fine")], None, lambda *a: fut2.set_result(a))
        r1, r2 = await asyncio.wait_for(asyncio.gather(fut1, fut2), HANG_GUARD_S)
        assert r1[4].error_code == ErrorCode.INTERNAL_ERROR
        assert (r2[0], r2[2]) == (200, b"ok b")
        conn.close()
    finally:
        server.close()
        for c in conns:
            c.close()


# ---- graceful shutdown ---------------------------------------------------------------------------


async def test_goaway_drain_finishes_in_flight_streams(origin):
    client = await connect(nghttp2, origin.port)
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    results = []

    def cb(*a):
        results.append(a)

    for _ in range(3):
        client.request(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b":path", b"/slow?ms=150"),
            ],
            None,
            cb,
        )
    await wait_until(lambda: len(origin.handler.requests) == 3,
                     what=lambda: f"the origin has 3 requests: {len(origin.handler.requests)}")
    (server_conn,) = origin.handler.connections
    lost = server_conn.connection_lost

    def watch(exc, _lost=lost):
        closed.done() or closed.set_result(True)
        _lost(exc)

    server_conn.connection_lost = watch  # the listener's subclass allows it
    server_conn.drain()
    await asyncio.wait_for(closed, HANG_GUARD_S)
    assert [(r[0], r[2], r[4]) for r in results] == [(200, b"slow origin", None)] * 3
    # the client sees the server's close (its GOAWAY, then the transport lost)
    await wait_until(lambda: client.closed and not client.available,
                     what="the client knows the drained connection is closed")
    with pytest.raises(ConnectionError):
        client.request(
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/x")],
            None,
            cb,
        )


def _frames(buf: bytearray):
    """Pop whole HTTP/2 frames (type, flags, stream id, payload) off ``buf``."""
    out, rest = split_frames(bytes(buf))
    buf[:] = rest
    return out


async def test_drain_without_ping_ack_still_sends_final_goaway():
    handler = OriginHandler("d")
    server, port, conns = await start_local(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        h2c.send_headers(
            1,
            [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/hold")],
            end_stream=True,
        )
        writer.write(h2c.data_to_send())  # from here on we never write (no PING ACK)
        await wait_until(lambda: handler.held, what="the server holds the request")
        conns[0].drain()
        buf, goaways, saw_ping, eof = bytearray(), [], False, False
        while len(goaways) < 2:
            data = await asyncio.wait_for(reader.read(65536), HANG_GUARD_S)
            assert data
            buf += data
            for ftype, flags, _sid, payload in _frames(buf):
                if ftype == 0x7:
                    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                    goaways.append((last, int.from_bytes(payload[4:8], "big")))
                elif ftype == 0x6 and not flags & 0x1:
                    saw_ping = True
        assert saw_ping and goaways == [(2**31 - 1, 0), (1, 0)]
        # the in-flight stream still completes, then the server closes the connection
        conn, sid = handler.held[0]
        conn.respond(sid, 200, [], b"done")
        got_data = False
        while not eof:
            data = await asyncio.wait_for(reader.read(65536), HANG_GUARD_S)
            eof = not data
            buf += data
            got_data |= any(f[0] == 0x0 and f[3] == b"done" for f in _frames(buf))
        assert got_data
        writer.close()
    finally:
        server.close()
        for c in conns:
            c.close()


async def test_client_ping_and_drain_close_the_connection(origin):
    closed = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: nghttp2.ClientConnection(H2Settings(), on_closed=closed.set_result),
        "127.0.0.1",
        origin.port,
    )
    await asyncio.wait_for(conn.ready, HANG_GUARD_S)
    assert conn.max_streams == H2Settings().max_concurrent_streams
    conn.ping()
    fut = loop.create_future()
    conn.request(
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"x"),
            (b":path", b"/slow?ms=100"),
        ],
        None,
        lambda *a: fut.set_result(a),
    )
    conn.drain()
    assert not conn.available
    result = await asyncio.wait_for(fut, HANG_GUARD_S)
    assert (result[0], result[2], result[4]) == (200, b"slow origin", None)
    assert await asyncio.wait_for(closed, HANG_GUARD_S) is conn
    assert conn.closed


async def test_a_long_read_is_fed_in_slices_and_answered_whole(origin):
    """Many requests in one write (under every budget): the session gets them a slice of
    header blocks per loop iteration, with reading paused in between, and every one is
    answered (as on the h2 backend: tests/test_h2_floods.py)."""
    n = 400
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        writer.write(greeting() + get_requests(n))
        got = await read_until(reader, lambda got: len(got.ended) == n)
        (conn,) = origin.handler.connections
        assert conn.deferred_slices >= 2
    finally:
        writer.close()
    assert sorted(got.ended) == [1 + 2 * i for i in range(n)]
    assert len(origin.handler.requests) == n
