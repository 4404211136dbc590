"""Internals of the pure h2 backend that the shared tests cannot see: stream tables are cleaned
up (h2 keeps closed streams until it walks them), and no body bytes stay buffered."""

from __future__ import annotations

import asyncio

from dataplane.client import H2Client
from dataplane.engine import load_backend
from tests.conftest import StaticRouter, start_origin, start_proxy
from tests.waiting import wait_until

H2 = load_backend("h2")


async def test_stream_tables_are_emptied_after_traffic():
    origin = await start_origin(H2)
    proxy = await start_proxy(H2, StaticRouter(origin.endpoint))
    client = H2Client("h2")
    try:
        base = f"http://127.0.0.1:{proxy.port}"
        for _ in range(3):
            results = await asyncio.gather(*[
                client.request("POST", base + "/echo", body=b"x" * 100) for _ in range(100)])
            assert all(r.status == 200 for r in results)
        await client.request("GET", base + "/reset?code=2")  # a reset stream, too
        downstream = list(proxy.handler.connections)
        upstream = proxy.extra["pools"].connections(origin.endpoint)
        assert len(downstream) == 1 and len(upstream) == 1
        # the reset reaches the far side on its own time: wait for every table to settle
        await wait_until(lambda: all(c.open_streams == 0 and not c._h2.streams
                                     for c in downstream + upstream + origin.handler.connections))
        for conn in downstream + upstream + origin.handler.connections:
            assert conn.open_streams == 0
            assert len(conn._h2.streams) == 0
            assert conn.buffered_bytes == 0
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()
