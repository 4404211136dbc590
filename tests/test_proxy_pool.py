"""Upstream pools: stream limits, single-flight connects, back-off, connect timeout, idle close,
GOAWAY from the producer, headroom over streams pinned by a client that does not read (both
backends)."""

from __future__ import annotations

import asyncio

import hpack
import pytest

from dataplane.client import H2Client
from dataplane.engine import H2Settings
from dataplane.routing import Endpoint
from dataplane.upstream_pool import UpstreamPools, UpstreamUnavailable
from tests.conftest import StaticRouter, free_port, start_origin, start_proxy
from tests.h2_frames import HEADERS, frame, greeting, request_block
from tests.waiting import wait_until


@pytest.fixture
async def pools(backend):
    p = UpstreamPools(backend, H2Settings(), connect_timeout=0.5, backoff_base=0.05,
                      backoff_max=0.2)
    yield p
    p.close()


async def test_peer_stream_limit_opens_more_connections(backend):
    origin = await start_origin(backend, settings=H2Settings(max_concurrent_streams=2))
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint))
    client = H2Client(backend.NAME)
    try:
        results = await asyncio.gather(*[
            client.request("GET", f"http://127.0.0.1:{proxy.port}/slow?ms=150")
            for _ in range(8)
        ])
        assert [r.status for r in results] == [200] * 8
        conns = len(origin.handler.connections)
        assert 2 <= conns <= 8  # more than one connection, never more than the cap
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()


async def test_streams_pinned_by_a_non_reader_leave_room_for_others(backend):
    """A client with a zero window pins the producer streams its responses come on (the
    producer allows 2 a connection here): 20 such streams take 10 of the pool's default
    connections, and another client is still answered at once (the old default of 8 left it
    waiting for a stream that never came free)."""
    origin = await start_origin(backend, settings=H2Settings(max_concurrent_streams=2))
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    client = H2Client(backend.NAME)
    try:
        enc = hpack.Encoder()
        writer.write(greeting((0x4, 0)) + b"".join(  # SETTINGS_INITIAL_WINDOW_SIZE = 0
            frame(HEADERS, 0x5, 1 + 2 * i, request_block(enc, b"/download?size=1048576"))
            for i in range(20)))
        await wait_until(lambda: len(origin.handler.requests) == 20)
        assert 10 <= len(origin.handler.connections) <= 16  # 2 streams each, at most the cap
        resp = await asyncio.wait_for(
            client.request("GET", f"http://127.0.0.1:{proxy.port}/status/204"), 5)
        assert resp.status == 204
    finally:
        writer.close()
        client.close()
        await proxy.stop()


async def test_concurrent_acquires_share_one_connect(backend, pools):
    origin = await start_origin(backend)
    try:
        conns = await asyncio.gather(*[pools.acquire(origin.endpoint) for _ in range(20)])
        assert len({id(c) for c in conns}) == 1
        assert pools.connects == 1
        assert pools.get_ready(origin.endpoint) is conns[0]
    finally:
        await origin.stop()


async def test_backoff_fails_fast_then_recovers(backend, pools):
    port = free_port()
    endpoint = Endpoint("127.0.0.1", port)
    with pytest.raises(UpstreamUnavailable, match="connect failed"):
        await pools.acquire(endpoint)
    with pytest.raises(UpstreamUnavailable, match="back-off") as info:
        await pools.acquire(endpoint)
    assert "connect failed" in info.value.reason  # says why it is in back-off
    # the producer comes up; once the back-off (at most backoff_max) is over, it connects
    from dataplane.listener import serve
    from tests.conftest import OriginHandler

    handler = OriginHandler()
    server = await serve("127.0.0.1", port, lambda: handler, backend)
    try:
        async def connected():
            try:
                return await pools.acquire(endpoint)
            except UpstreamUnavailable:
                return None

        conn = await wait_until(connected, what="the pool reconnects after its back-off")
        assert conn.available
    finally:
        server.close()
        for c in handler.connections:
            c.close()


async def test_connect_timeout_when_peer_never_speaks_h2(backend, pools):
    async def silent(reader, writer):
        await asyncio.sleep(5)  # the behaviour under test: a peer that accepts and says nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamUnavailable, match="timed out"):
            await pools.acquire(Endpoint("127.0.0.1", port))
    finally:
        server.close()


async def test_endpoint_limits_cap_connections_and_bound_connects(backend, pools):
    """An endpoint given its own limits (a cluster's max_connections and connect_timeout_s)
    keeps to them while another endpoint keeps the pools' defaults; a change applies to a
    pool already open."""
    origin = await start_origin(backend, settings=H2Settings(max_concurrent_streams=2))

    async def silent(reader, writer):
        await asyncio.sleep(5)  # a peer that accepts and says nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    quiet = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        pools.set_endpoint_limits({origin.endpoint: (0, 1.0)})
    pools.set_endpoint_limits({origin.endpoint: (1, 0.5), quiet: (1, 0.1)})
    assert pools.limits_for(origin.endpoint) == (1, 0.5)
    assert pools.limits_for(Endpoint("10.9.9.9", 1)) == (pools.max_connections, 0.5)
    try:
        # 6 streams at once against a peer allowing 2 per connection: one connection, the
        # rest queue for its streams (the defaults would have opened 3)
        conns = await asyncio.gather(*[pools.acquire(origin.endpoint) for _ in range(2)])
        assert pools.connects == 1 and len({id(c) for c in conns}) == 1
        streams = [conns[0].request([(b":method", b"GET"), (b":scheme", b"http"),
                                     (b":authority", b"o"), (b":path", b"/slow?ms=100")],
                                    None, lambda *a: None) for _ in range(2)]
        assert len(streams) == 2
        waiting = asyncio.ensure_future(pools.acquire(origin.endpoint))
        # an absence cannot be awaited: a window in which a wrong second connect would show
        await asyncio.sleep(0.05)
        assert not waiting.done() and pools.connects == 1  # queued, no second connection
        assert (await waiting) is conns[0]  # a stream freed on the same connection
        # the quiet endpoint's own 0.1 s bound, not the pools' 0.5 s (the reason names it)
        with pytest.raises(UpstreamUnavailable, match=r"timed out after 0\.1s"):
            await pools.acquire(quiet)
        # back to the defaults for every endpoint, open pools included
        pools.set_endpoint_limits({})
        assert pools._pools[origin.endpoint].max_connections == pools.max_connections
    finally:
        server.close()
        await origin.stop()


async def test_cluster_max_connections_and_connect_timeout_reach_the_pools(backend):
    """A cluster's ``max_connections`` and ``connect_timeout_s`` (config) are its endpoints'
    pool limits, from start and after a reload; an endpoint in two clusters gets the smaller
    of each."""
    from gateway.app import Gateway
    from gateway.config import parse_config

    origin = await start_origin(backend, settings=H2Settings(max_concurrent_streams=2))
    ep = {"host": "127.0.0.1", "port": origin.port}

    def config(max_conns: int) -> object:
        return parse_config({
            "gateway": {"name": "scp-pools", "backend": backend.NAME, "workers": 1},
            "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "h2c"}],
            "clusters": [
                {"name": "udm", "endpoints": [ep], "max_connections": max_conns,
                 "connect_timeout_s": 0.75},
                {"name": "udm-b", "endpoints": [ep, {"host": "udm.example", "port": 8443,
                                                      "tls": True}],
                 "max_connections": 5, "connect_timeout_s": 0.25}],
            "routes": [{"name": "udm", "match": {"path_prefix": "/"}, "cluster": "udm"}],
        })

    gw = Gateway(config(1))
    await gw.start()
    client = H2Client(backend.NAME)
    try:
        assert gw.pools.limits_for(origin.endpoint) == (1, 0.25)
        assert gw.pools.limits_for(Endpoint("udm.example", 8443, True, "udm.example")) == (5, 0.25)
        port = gw.ports["sbi"]
        results = await asyncio.gather(*[
            client.request("GET", f"http://127.0.0.1:{port}/slow?ms=150") for _ in range(6)])
        assert [r.status for r in results] == [200] * 6
        assert len(origin.handler.connections) == 1  # 6 streams, 2 per connection, 1 allowed
        assert gw.reload(config(3)) == []
        assert gw.pools.limits_for(origin.endpoint) == (3, 0.25)
        results = await asyncio.gather(*[
            client.request("GET", f"http://127.0.0.1:{port}/slow?ms=150") for _ in range(6)])
        assert [r.status for r in results] == [200] * 6
        assert 2 <= len(origin.handler.connections) <= 3
    finally:
        client.close()
        await gw.stop(drain=False)
        await origin.stop()


async def test_idle_connections_are_closed(backend, pools):
    origin = await start_origin(backend)
    try:
        conn = await pools.acquire(origin.endpoint)
        assert pools.close_idle(60.0) == 0  # recently used
        assert pools.close_idle(0.0) == 1
        assert pools.get_ready(origin.endpoint) is None
        await wait_until(lambda: conn.closed)
        # the next acquire connects again
        conn2 = await pools.acquire(origin.endpoint)
        assert conn2 is not conn and conn2.available
    finally:
        await origin.stop()


async def test_producer_goaway_moves_traffic_to_a_new_connection(backend):
    origin = await start_origin(backend)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint))
    client = H2Client(backend.NAME)
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        assert (await client.request("GET", url + "/a")).status == 200
        first = origin.handler.connections[0]
        first.drain()
        await wait_until(lambda: not proxy.extra["pools"].connections(origin.endpoint))
        resp = await client.request("GET", url + "/b")
        assert resp.status == 200
        assert len(origin.handler.connections) == 2
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()


async def test_closed_pools_refuse(backend, pools):
    pools.close()
    with pytest.raises(UpstreamUnavailable, match="closed"):
        await pools.acquire(Endpoint("127.0.0.1", 1))


async def test_saturated_pool_waits_for_a_free_stream(backend):
    origin = await start_origin(backend, settings=H2Settings(max_concurrent_streams=2))
    pools = UpstreamPools(backend, H2Settings(), max_connections=1, pending_timeout=5.0)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint), pools=pools)
    client = H2Client(backend.NAME)
    try:
        results = await asyncio.gather(*[
            client.request("GET", f"http://127.0.0.1:{proxy.port}/slow?ms=50") for _ in range(7)
        ])
        assert [r.status for r in results] == [200] * 7, [r.body for r in results]
        assert len(origin.handler.connections) == 1
        # with no patience at all the same burst is partly refused, with a clear reason
        pools.pending_timeout = 0.0
        results = await asyncio.gather(*[
            client.request("GET", f"http://127.0.0.1:{proxy.port}/slow?ms=50") for _ in range(7)
        ])
        refused = [r for r in results if r.status == 504]
        assert refused and "stream limit" in refused[0].json()["detail"]
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()
