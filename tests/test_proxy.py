"""End-to-end through the Proxy: client -> proxy listener -> upstream pool -> origin.

Every test runs on each available backend (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from dataplane.client import H2Client, H2ClientError
from dataplane.engine import ErrorCode, H2Settings
from dataplane.routing import Endpoint
from tests.conftest import StaticRouter, free_port, pattern, start_origin, start_proxy
from tests.waiting import wait_until

WINDOW = 256 << 10
SMALL_WINDOWS = H2Settings(initial_window_size=WINDOW, connection_window_size=4 * WINDOW)


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


@pytest.fixture
async def client(backend):
    c = H2Client(backend.NAME)
    yield c
    c.close()


@pytest.fixture
async def proxy(backend, origin):
    running = await start_proxy(backend, StaticRouter(origin.endpoint))
    yield running
    await running.stop()


def url(running, path: str) -> str:
    return f"http://127.0.0.1:{running.port}{path}"


async def raw_request(backend, port: int, headers, body: bytes = b"", trailers=None,
                      timeout: float = 5.0):
    """One request over the engine's own ClientConnection: (status, headers, body, trailers,
    error)."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: backend.ClientConnection(H2Settings()),
                                           "127.0.0.1", port)
    await conn.ready
    fut = loop.create_future()
    conn.request(headers, body or None, lambda *a: fut.done() or fut.set_result(a), trailers)
    try:
        return await asyncio.wait_for(fut, timeout)
    finally:
        conn.close()


def req(method: str, path: str, port: int, *extra):
    return [(b":method", method.encode()), (b":scheme", b"http"),
            (b":authority", f"127.0.0.1:{port}".encode()), (b":path", path.encode()), *extra]


# ---- plain exchanges --------------------------------------------------------------------------

async def test_plain_request_response(proxy, client):
    resp = await client.request("GET", url(proxy, "/hello"))
    assert resp.status == 200
    assert resp.body == b"ok origin"
    assert resp.header("x-nfmesh") == "1"
    assert proxy.extra["stats"].done == [("test", "GET", 200, 0)]


async def test_small_bodies_both_ways(proxy, client):
    resp = await client.request("POST", url(proxy, "/echo"),
                                [("content-type", "application/json")], b'{"a": 1}')
    assert resp.status == 200
    assert resp.json() == {"a": 1}
    assert resp.header("content-type") == "application/json"


async def test_status_codes_pass_through(proxy, client):
    resp = await client.request("DELETE", url(proxy, "/status/204"))
    assert resp.status == 204
    assert resp.body == b""
    assert proxy.extra["stats"].done[-1] == ("test", "DELETE", 204, 0)


async def test_many_requests_share_one_upstream_connection(proxy, origin, client):
    results = await asyncio.gather(*[
        client.request("GET", url(proxy, f"/headers?i={i}")) for i in range(50)
    ])
    assert all(r.status == 200 for r in results)
    paths = {dict(r.json())[":path"] for r in results}
    assert len(paths) == 50
    assert len(origin.handler.connections) == 1
    assert json.loads(results[0].body)[0][0] == ":method"


# ---- streaming: 10 MB each way, bounded buffering ------------------------------------------------

def max_buffered(proxy) -> int | None:
    conns = list(proxy.handler.connections)
    values = [getattr(c, "peak_buffered", None) for c in conns]
    if not values or any(v is None for v in values):
        return None  # this backend exposes no counter
    return max(values)


@pytest.fixture
async def small_window_stack(backend):
    origin = await start_origin(backend, settings=SMALL_WINDOWS)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint), settings=SMALL_WINDOWS)
    client = H2Client(backend.NAME, settings=SMALL_WINDOWS)
    yield origin, proxy, client
    client.close()
    await proxy.stop()
    await origin.stop()


async def test_upload_10mb_is_streamed_not_buffered(small_window_stack):
    origin, proxy, client = small_window_stack
    body = pattern(10 << 20)
    resp = await client.request("POST", url(proxy, "/upload"), body=body, timeout=30)
    assert resp.status == 200
    assert resp.json() == {"len": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    peak = max_buffered(proxy)
    if peak is not None:
        # flow control bounds what the proxy holds to about one stream window
        assert 0 < peak <= 2 * WINDOW


async def test_download_10mb_is_streamed_not_buffered(small_window_stack):
    origin, proxy, client = small_window_stack
    resp = await client.request("GET", url(proxy, f"/download?size={10 << 20}"), timeout=30)
    assert resp.status == 200
    assert len(resp.body) == 10 << 20
    assert resp.body == pattern(10 << 20)
    peak = max_buffered(proxy)
    if peak is not None:
        # (0 is possible: the h2 backend opens the producer a smaller window than the client's)
        assert peak <= 2 * WINDOW


# ---- trailers ------------------------------------------------------------------------------------

async def test_response_trailers_relayed(backend, proxy):
    status, headers, body, trailers, error = await raw_request(
        backend, proxy.port, req("GET", "/trailers", proxy.port))
    assert error is None
    assert status == 200 and body == b"with trailers"
    assert (b"grpc-status", b"0") in trailers and (b"x-checksum", b"abc") in trailers


async def test_request_trailers_relayed(backend, proxy):
    status, headers, body, trailers, error = await raw_request(
        backend, proxy.port, req("POST", "/echo", proxy.port), b"payload",
        [(b"x-req-trailer", b"yes")])
    assert error is None
    assert status == 200 and body == b"payload"
    assert trailers == [(b"x-req-trailer", b"yes")]


# ---- resets ---------------------------------------------------------------------------------------

async def test_upstream_reset_before_headers_is_502_problem(proxy, client):
    resp = await client.request("GET", url(proxy, "/reset?code=2"))
    assert resp.status == 502
    assert resp.header("content-type") == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == 502 and problem["cause"] == "UNSPECIFIED_NF_FAILURE"
    assert "INTERNAL_ERROR" in problem["detail"]


async def test_upstream_reset_after_headers_propagates(backend, proxy):
    status, headers, body, trailers, error = await raw_request(
        backend, proxy.port, req("GET", "/reset_mid?code=2&size=3000000", proxy.port))
    assert error is not None
    assert "INTERNAL_ERROR" in str(error)
    stats = proxy.extra["stats"]
    await wait_until(lambda: stats.done and stats.done[-1][2:] == (200, ErrorCode.INTERNAL_ERROR))


async def test_client_reset_propagates_upstream(proxy, origin):
    client = H2Client("h2")  # the client side must be able to cancel (RST) its request
    with pytest.raises(TimeoutError):
        await client.request("GET", url(proxy, "/hold"), timeout=0.3)
    await wait_until(lambda: origin.handler.resets)
    assert origin.handler.resets[0][1] == ErrorCode.CANCEL
    assert proxy.extra["stats"].done[-1][2:] == (0, ErrorCode.CANCEL)
    # the connection survived: another request works
    assert (await client.request("GET", url(proxy, "/x"))).status == 200
    client.close()


# ---- failures before the request reached a producer ---------------------------------------------

async def test_unreachable_upstream_is_504_problem(backend, client):
    dead = Endpoint("127.0.0.1", free_port())
    proxy = await start_proxy(backend, StaticRouter(dead))
    try:
        resp = await client.request("GET", url(proxy, "/x"))
        assert resp.status == 504
        assert resp.header("content-type") == "application/problem+json"
        problem = resp.json()
        assert problem["cause"] == "TARGET_NF_NOT_REACHABLE"
        assert str(dead.port) in problem["detail"]
        # in back-off: fails fast, clear reason, and the connection is still good
        resp2 = await client.request("GET", url(proxy, "/y"))
        assert resp2.status == 504 and "back-off" in resp2.json()["detail"]
        # a big upload gets its answer without being read whole (then RST NO_ERROR stops it)
        resp3 = await client.request("POST", url(proxy, "/z"), body=pattern(3 << 20))
        assert resp3.status == 504
        assert (await client.request("GET", url(proxy, "/w"))).status == 504
    finally:
        await proxy.stop()


async def test_alternate_used_when_first_endpoint_refuses(backend, origin, client):
    dead = Endpoint("127.0.0.1", free_port())
    proxy = await start_proxy(backend, StaticRouter(dead, alternates=[origin.endpoint]))
    try:
        resp = await client.request("POST", url(proxy, "/echo"), body=b"replayed body")
        assert resp.status == 200 and resp.body == b"replayed body"
    finally:
        await proxy.stop()


async def test_alternate_used_on_refused_stream(backend, client):
    """The first producer answers REFUSED_STREAM (not processed): the retained body is replayed
    to the alternate."""
    first = await start_origin(backend, "first")
    first.handler.refuse_all = True
    second = await start_origin(backend, "second")
    proxy = await start_proxy(backend, StaticRouter(first.endpoint, [second.endpoint]))
    try:
        body = pattern(20000)
        resp = await client.request("POST", url(proxy, "/echo"), body=body)
        assert resp.status == 200 and resp.body == body
        assert len(first.handler.requests) == 1 and len(second.handler.requests) == 1
        # without an alternate: retried once on the same endpoint, then 503
        proxy2 = await start_proxy(backend, StaticRouter(first.endpoint))
        try:
            resp = await client.request("POST", url(proxy2, "/echo"), body=b"abc")
            assert resp.status == 504 and resp.json()["cause"] == "TARGET_NF_NOT_REACHABLE"
            assert len(first.handler.requests) == 3
        finally:
            await proxy2.stop()
    finally:
        await proxy.stop()
        await first.stop()
        await second.stop()


async def test_unreplayable_body_on_refused_stream_returns_all_window_credit(backend):
    """A refused request whose body is over max_retained_body cannot be replayed: 503, and every
    byte of it is still acknowledged, so the connection does not stall afterwards."""
    first = await start_origin(backend, "first", settings=SMALL_WINDOWS)
    first.handler.refuse_all = "after_body"
    second = await start_origin(backend, "second", settings=SMALL_WINDOWS)
    proxy = await start_proxy(backend, StaticRouter(first.endpoint, [second.endpoint]),
                              settings=SMALL_WINDOWS)
    client = H2Client(backend.NAME, settings=SMALL_WINDOWS)
    try:
        body = pattern(200_000)  # > max_retained_body (64 KiB), < one stream window
        for _ in range(12):  # 2.4 MB in all, over the 1 MiB connection window
            resp = await client.request("POST", url(proxy, "/echo"), body=body, timeout=5)
            assert resp.status == 504
            assert resp.json()["cause"] == "TARGET_NF_NOT_REACHABLE"
        assert second.handler.requests == []
        # a small body is retained whole: replayed to the alternate
        small = await client.request("POST", url(proxy, "/echo"), body=b"small", timeout=5)
        assert small.status == 200 and small.body == b"small"
    finally:
        client.close()
        await proxy.stop()
        await first.stop()
        await second.stop()


@pytest.mark.parametrize("retryable", [True, False])
async def test_reset_after_reaching_producer_retried_only_when_retryable(backend, client,
                                                                        retryable):
    first = await start_origin(backend, "first")
    first.handler.reset_all = ErrorCode.INTERNAL_ERROR
    second = await start_origin(backend, "second")
    proxy = await start_proxy(backend, StaticRouter(first.endpoint, [second.endpoint],
                                                    retryable=retryable))
    try:
        resp = await client.request("PUT", url(proxy, "/echo"), body=b"idempotent")
        if retryable:
            assert resp.status == 200 and resp.body == b"idempotent"
            assert len(second.handler.requests) == 1
        else:
            assert resp.status == 502 and resp.json()["cause"] == "UNSPECIFIED_NF_FAILURE"
            assert second.handler.requests == []
    finally:
        await proxy.stop()
        await first.stop()
        await second.stop()


async def test_timeout_is_504_and_upstream_stream_reset(backend, origin, client):
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, timeout=0.2))
    try:
        # the client's own timeout only guards against a hang: the proxy's 0.2 s answers first
        resp = await client.request("GET", url(proxy, "/hold"), timeout=30.0)
        assert resp.status == 504
        assert resp.json()["cause"] == "TIMED_OUT_REQUEST"
        await wait_until(lambda: origin.handler.resets)
        assert origin.handler.resets[0][1] == ErrorCode.CANCEL
        assert proxy.extra["stats"].done[-1][2] == 504
        # a response that started in time is not cut by the deadline
        resp = await client.request("GET", url(proxy, "/slow?ms=50"))
        assert resp.status == 200
    finally:
        await proxy.stop()


async def test_router_exception_costs_only_the_stream(backend, client):
    class Broken:
        def route(self, headers, peer):
            raise KeyError("boom")

    proxy = await start_proxy(backend, Broken())
    try:
        resp = await client.request("GET", url(proxy, "/x"))
        assert resp.status == 500 and resp.json()["cause"] == "SYSTEM_FAILURE"
        resp = await client.request("GET", url(proxy, "/y"))
        assert resp.status == 500
    finally:
        await proxy.stop()


# ---- graceful drain --------------------------------------------------------------------------------

async def test_drain_lets_in_flight_finish(proxy, origin, client):
    slow = asyncio.ensure_future(client.request("GET", url(proxy, "/slow?ms=200")))
    await wait_until(lambda: origin.handler.requests)  # in flight: forwarded, not answered
    proxy.handler.drain()
    resp = await slow
    assert resp.status == 200 and resp.body == b"slow origin"
    assert await proxy.handler.wait_drained(30.0)  # a hang guard


async def test_client_error_on_closed_port(client):
    with pytest.raises(H2ClientError):
        await client.request("GET", f"http://127.0.0.1:{free_port()}/")


# ---- local services and hooks ------------------------------------------------------------------

class LocalRouter:
    """/svc/* goes to an in-process service, /static answers at once."""

    def __init__(self) -> None:
        from dataplane.routing import LocalResponse, LocalService

        async def handle(request):
            if request.path.endswith("/boom"):
                raise ValueError("service bug")
            await asyncio.sleep(0)
            body = json.dumps({"method": request.method, "path": request.path,
                               "len": len(request.body)}).encode()
            return LocalResponse(201, [(b"content-type", b"application/json")], body)

        self.service = LocalService("nrf", handle, max_body=1000)
        self.static = LocalResponse(200, [(b"content-type", b"text/plain")], b"static")

    def route(self, headers, peer):
        path = dict(headers)[b":path"]
        return self.service if path.startswith(b"/svc") else self.static


async def test_local_service_and_local_response(backend, client):
    log_entries = []
    proxy = await start_proxy(backend, LocalRouter(),
                              access_log=lambda **entry: log_entries.append(entry))
    try:
        resp = await client.request("PUT", url(proxy, "/svc/nf-instances/1"), body=b"x" * 500)
        assert resp.status == 201
        assert resp.json() == {"method": "PUT", "path": "/svc/nf-instances/1", "len": 500}
        resp = await client.request("GET", url(proxy, "/static"))
        assert (resp.status, resp.body) == (200, b"static")
        resp = await client.request("POST", url(proxy, "/svc/too-big"), body=b"x" * 5000)
        assert resp.status == 413
        resp = await client.request("GET", url(proxy, "/svc/boom"))
        assert resp.status == 500 and resp.json()["cause"] == "SYSTEM_FAILURE"
        # one access-log entry per request, with what an operator needs
        assert [e["status"] for e in log_entries] == [201, 200, 413, 500]
        first = log_entries[0]
        assert first["method"] == "PUT" and first["path"] == "/svc/nf-instances/1"
        assert first["cluster"] == "nrf" and first["peer"][0] == "127.0.0.1"
        done = proxy.extra["stats"].done
        assert [d[2] for d in done] == [201, 200, 413, 500]
    finally:
        await proxy.stop()


async def test_custom_error_responder(backend, client):
    from dataplane.routing import LocalResponse

    def responder(status, cause, detail):
        return LocalResponse(status, [(b"content-type", b"application/problem+json"),
                                      (b"x-cause", cause.encode())], b"{}")

    proxy = await start_proxy(backend, StaticRouter(Endpoint("127.0.0.1", free_port())),
                              error_responder=responder)
    try:
        resp = await client.request("GET", url(proxy, "/x"))
        assert resp.status == 504 and resp.header("x-cause") == "TARGET_NF_NOT_REACHABLE"
    finally:
        await proxy.stop()


# ---- a producer that sends GOAWAY below our stream -------------------------------------------------

async def start_goaway_server() -> tuple[asyncio.Server, int]:
    """A raw h2-library server that answers every request with GOAWAY(last_stream_id=0): the
    request provably was not processed."""
    import h2.config
    import h2.connection
    import h2.events

    async def serve(reader, writer):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.close_connection(0, last_stream_id=0)
            writer.write(conn.data_to_send())
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_goaway_below_our_stream_moves_to_alternate(backend, origin, client):
    server, port = await start_goaway_server()
    proxy = await start_proxy(backend, StaticRouter(Endpoint("127.0.0.1", port),
                                                    alternates=[origin.endpoint]))
    try:
        resp = await client.request("POST", url(proxy, "/echo"), body=b"not processed")
        assert resp.status == 200 and resp.body == b"not processed"
    finally:
        await proxy.stop()
        server.close()


# ---- backpressure ----------------------------------------------------------------------------------

async def test_slow_reader_backpressure_reaches_the_producer(backend, origin):
    """A client that stops reading (no WINDOW_UPDATE) holds the producer back: the proxy keeps
    about one upstream stream window, not the 10 MB response; reading again finishes it."""
    import h2.events

    from tests.test_engine_limits import RawH2, is_

    settings = SMALL_WINDOWS
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint), settings=settings)
    raw = await RawH2.connect(proxy.port)
    try:
        size = 10 << 20
        sid = raw.request(f"/download?size={size}")
        raw.flush()
        await raw.until(is_(h2.events.ResponseReceived, sid))
        # letting time pass IS the test: not reading, not acknowledging, the proxy must not
        # buffer more than its windows however long the client stalls
        await asyncio.sleep(0.3)
        peak = max_buffered(proxy)
        if peak is not None:
            assert peak <= 2 * WINDOW
        got = 0
        chunks = []
        for event in raw.events:
            if isinstance(event, h2.events.DataReceived):
                got += len(event.data)
                chunks.append(event.data)
                raw.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        assert got < size // 4  # only windows' worth arrived while we did not acknowledge
        raw.events.clear()
        raw.flush()
        while got < size:
            ev = await raw.until(lambda e: isinstance(e, (h2.events.DataReceived,
                                                          h2.events.StreamReset)), timeout=10)
            assert isinstance(ev, h2.events.DataReceived)
            for event in raw.events:
                if isinstance(event, h2.events.DataReceived):
                    got += len(event.data)
                    chunks.append(event.data)
                    raw.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            raw.events.clear()
            raw.flush()
        assert got == size
        assert b"".join(chunks) == pattern(size)
    finally:
        raw.close()
        await proxy.stop()


# ---- IPv6 ------------------------------------------------------------------------------------------

def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) here")
async def test_ipv6_listener_and_producer(backend, client):
    from dataplane.listener import serve
    from dataplane.proxy import Proxy
    from dataplane.routing import RouterSlot
    from dataplane.upstream_pool import UpstreamPools
    from tests.conftest import OriginHandler

    handler = OriginHandler("v6")
    origin = await serve("::1", 0, lambda: handler, backend)
    endpoint = Endpoint("::1", origin.sockets[0].getsockname()[1])
    pools = UpstreamPools(backend, H2Settings())
    proxy = Proxy(RouterSlot(StaticRouter(endpoint)), pools)
    listener = await serve("::1", 0, lambda: proxy, backend)
    try:
        port = listener.sockets[0].getsockname()[1]
        resp = await client.request("GET", f"http://[::1]:{port}/headers")
        assert resp.status == 200
        sent = dict(resp.json())
        assert sent[":authority"] == f"[::1]:{port}"
        assert next(iter(proxy.connections)).peer_info["peername"][0] == "::1"
    finally:
        listener.close()
        for conn in list(proxy.connections):
            conn.close()
        pools.close()
        origin.close()
        for conn in handler.connections:
            conn.close()
