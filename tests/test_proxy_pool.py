"""Upstream pools: stream limits, single-flight connects, back-off, connect timeout, idle close,
GOAWAY from the producer (both backends)."""

from __future__ import annotations

import asyncio

import pytest

from dataplane.client import H2Client
from dataplane.engine import H2Settings
from dataplane.routing import Endpoint
from dataplane.upstream_pool import UpstreamPools, UpstreamUnavailable
from tests.conftest import StaticRouter, eventually, free_port, start_origin, start_proxy


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
        for _ in range(50):
            try:
                conn = await pools.acquire(endpoint)
                break
            except UpstreamUnavailable:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("pool never recovered")
        assert conn.available
    finally:
        server.close()
        for c in handler.connections:
            c.close()


async def test_connect_timeout_when_peer_never_speaks_h2(backend, pools):
    async def silent(reader, writer):
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamUnavailable, match="timed out"):
            await pools.acquire(Endpoint("127.0.0.1", port))
    finally:
        server.close()


async def test_idle_connections_are_closed(backend, pools):
    origin = await start_origin(backend)
    try:
        conn = await pools.acquire(origin.endpoint)
        assert pools.close_idle(60.0) == 0  # recently used
        assert pools.close_idle(0.0) == 1
        assert pools.get_ready(origin.endpoint) is None
        assert await eventually(lambda: conn.closed)
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
        for _ in range(100):
            if not proxy.extra["pools"].connections(origin.endpoint):
                break
            await asyncio.sleep(0.01)
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
        refused = [r for r in results if r.status == 503]
        assert refused and "stream limit" in refused[0].json()["detail"]
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()
