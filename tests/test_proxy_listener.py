"""The listener: peer_info, TCP_NODELAY, on_connection_made, SO_REUSEPORT workers, drain of
idle connections (both backends)."""

from __future__ import annotations

import asyncio
import socket

import h2.events

from dataplane.client import H2Client
from dataplane.listener import serve
from tests.conftest import OriginHandler, free_port
from tests.test_engine_limits import RawH2, is_
from tests.waiting import wait_until


async def test_peer_info_nodelay_and_connection_hook(backend):
    handler = OriginHandler()
    server = await serve("127.0.0.1", 0, lambda: handler, backend)
    port = server.sockets[0].getsockname()[1]
    client = H2Client(backend.NAME)
    try:
        assert (await client.request("GET", f"http://127.0.0.1:{port}/x")).status == 200
        assert len(handler.connections) == 1  # told by on_connection_made
        info = handler.connections[0].peer_info
        assert info["peername"][0] == "127.0.0.1"
        assert "sslobject" not in info  # h2c
        transport = getattr(handler.connections[0], "transport", None) or \
            getattr(handler.connections[0], "_transport", None)
        if transport is not None:
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()
        server.close()
        for conn in handler.connections:
            conn.close()


async def test_reuse_port_lets_workers_share_a_port(backend):
    port = free_port()
    first, second = OriginHandler("w1"), OriginHandler("w2")
    s1 = await serve("127.0.0.1", port, lambda: first, backend, reuse_port=True)
    s2 = await serve("127.0.0.1", port, lambda: second, backend, reuse_port=True)
    clients = [H2Client(backend.NAME) for _ in range(16)]
    try:
        bodies = await asyncio.gather(*[
            c.request("GET", f"http://127.0.0.1:{port}/x") for c in clients])
        names = {r.body for r in bodies}
        assert names <= {b"ok w1", b"ok w2"}
        assert len(first.connections) + len(second.connections) == 16
    finally:
        for c in clients:
            c.close()
        s1.close()
        s2.close()
        for conn in first.connections + second.connections:
            conn.close()


async def test_proxy_drain_reaches_idle_connections(backend):
    from dataplane.engine import H2Settings
    from dataplane.proxy import Proxy
    from dataplane.routing import LocalResponse, RouterSlot
    from dataplane.upstream_pool import UpstreamPools

    class Static:
        def route(self, headers, peer):
            return LocalResponse(200, [], b"hi")

    proxy = Proxy(RouterSlot(Static()), UpstreamPools(backend, H2Settings()))
    server = await serve("127.0.0.1", 0, lambda: proxy, backend)
    port = server.sockets[0].getsockname()[1]
    # a connection that never sent a request (the raw h2 client answers PINGs and SETTINGS)
    raw = await RawH2.connect(port)
    raw.flush()
    await wait_until(lambda: proxy.connections)
    assert len(proxy.connections) == 1
    server.close()
    proxy.drain()
    goaway = await raw.until(lambda e: isinstance(e, h2.events.ConnectionTerminated)
                             and e.last_stream_id < 2**31 - 1)
    assert goaway.error_code == 0 and goaway.last_stream_id == 0
    await raw.wait_closed()
    assert not raw.reset_seen  # a clean close (FIN), not a reset that could eat the GOAWAY
    assert await proxy.wait_drained(30.0)  # a hang guard
    raw.close()


async def test_idle_connections_are_drained_busy_ones_kept(backend):
    from dataplane.engine import H2Settings
    from dataplane.proxy import Proxy
    from dataplane.routing import LocalResponse, RouterSlot
    from dataplane.upstream_pool import UpstreamPools

    class Static:
        def route(self, headers, peer):
            return LocalResponse(200, [], b"hi")

    proxy = Proxy(RouterSlot(Static()), UpstreamPools(backend, H2Settings()), idle_timeout=0.3)
    server = await serve("127.0.0.1", 0, lambda: proxy, backend)
    port = server.sockets[0].getsockname()[1]
    idle = await RawH2.connect(port)  # connects, says hello, then nothing
    idle.flush()
    busy = H2Client(backend.NAME)
    try:
        for _ in range(12):  # a request every 0.1 s for 1.2 s (time passing is the test)
            assert (await busy.request("GET", f"http://127.0.0.1:{port}/x")).status == 200
            await asyncio.sleep(0.1)
        goaway = await idle.until(is_(h2.events.ConnectionTerminated), timeout=30)  # a hang guard
        assert goaway.error_code == 0
        await idle.wait_closed()
        idle.close()
        await wait_until(lambda: len(proxy.connections) == 1)  # the busy one is still there
    finally:
        idle.close()
        busy.close()
        server.close()
        for conn in list(proxy.connections):
            conn.close()
