"""A seeded mix of good and bad exchanges through the proxy at once (echo, downloads, resets
before and after headers, cancelled requests, trailers, slow answers), then the invariants:
every exchange ended the way its kind must, and nothing is left open or buffered anywhere."""

from __future__ import annotations

import asyncio
import random

import pytest

from dataplane.client import H2Client, H2ClientError
from dataplane.engine import H2Settings
from tests.conftest import StaticRouter, pattern, start_origin, start_proxy
from tests.waiting import wait_until

SETTINGS = H2Settings(initial_window_size=128 << 10, connection_window_size=512 << 10)


async def one(client: H2Client, base: str, kind: str, rng: random.Random):
    if kind == "echo":
        body = pattern(rng.choice([0, 1, 1000, 70_000, 300_000]))
        resp = await client.request("POST", base + "/echo", body=body, timeout=20)
        assert resp.status == 200 and resp.body == body
    elif kind == "download":
        size = rng.choice([10, 50_000, 600_000])
        resp = await client.request("GET", base + f"/download?size={size}", timeout=20)
        assert resp.status == 200 and resp.body == pattern(size)
    elif kind == "reset":
        resp = await client.request("GET", base + "/reset?code=2", timeout=20)
        assert resp.status == 502
    elif kind == "reset_mid":
        with pytest.raises(H2ClientError):
            await client.request("GET", base + "/reset_mid?size=2000000&code=2", timeout=20)
    elif kind == "cancel":
        with pytest.raises(TimeoutError):
            await client.request("GET", base + "/hold", timeout=rng.uniform(0.05, 0.2))
    elif kind == "trailers":
        resp = await client.request("GET", base + "/trailers", timeout=20)
        assert ("grpc-status", "0") in resp.trailers
    elif kind == "slow":
        resp = await client.request("GET", base + f"/slow?ms={rng.randint(1, 100)}", timeout=20)
        assert resp.status == 200


@pytest.mark.parametrize("seed", [1, 2])
async def test_mixed_traffic_leaves_nothing_behind(backend, seed):
    rng = random.Random(seed)
    origin = await start_origin(backend, settings=SETTINGS)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint), settings=SETTINGS)
    clients = [H2Client("h2", settings=SETTINGS) for _ in range(3)]  # h2 clients can cancel
    base = f"http://127.0.0.1:{proxy.port}"
    kinds = ["echo", "download", "reset", "reset_mid", "cancel", "trailers", "slow"]
    try:
        jobs = [one(rng.choice(clients), base, rng.choice(kinds), rng) for _ in range(60)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        # let resets and cancels settle, then nothing may be left open or buffered
        def settled():
            conns = (list(proxy.handler.connections)
                     + proxy.extra["pools"].connections(origin.endpoint)
                     + list(origin.handler.connections))
            return all(c.open_streams == 0 for c in conns if not getattr(c, "closed", False)) and conns

        conns = await wait_until(settled)
        for conn in conns:
            if getattr(conn, "closed", False):
                continue
            assert conn.open_streams == 0
            buffered = getattr(conn, "buffered_bytes", None)
            assert buffered in (None, 0)
        # and the proxy still answers
        resp = await clients[0].request("GET", base + "/after")
        assert resp.status == 200
        # every request the proxy saw was accounted exactly once (a cancelled client may
        # have given up before its request was even sent)
        assert len(proxy.extra["stats"].done) == proxy.handler.requests
        assert proxy.handler.requests >= 50
    finally:
        for c in clients:
            c.close()
        await proxy.stop()
        await origin.stop()
