"""End-to-end through the Proxy: client -> proxy listener -> upstream pool -> origin (both backends)."""

from __future__ import annotations

import json

import pytest

from dataplane.client import H2Client
from tests.conftest import StaticRouter, start_origin, start_proxy


@pytest.fixture
async def stack(backend):
    origin = await start_origin(backend)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint))
    client = H2Client(backend.NAME)
    yield origin, proxy, client
    client.close()
    await proxy.stop()
    await origin.stop()


async def test_plain_request_response(stack):
    origin, proxy, client = stack
    resp = await client.request("GET", f"http://127.0.0.1:{proxy.port}/hello")
    assert resp.status == 200
    assert resp.body == b"ok origin"
    assert resp.header("x-nfmesh") == "1"
    assert proxy.extra["stats"].done == [("test", "GET", 200, 0)]


async def test_small_bodies_both_ways(stack):
    origin, proxy, client = stack
    resp = await client.request("POST", f"http://127.0.0.1:{proxy.port}/echo",
                                [("content-type", "application/json")], b'{"a": 1}')
    assert resp.status == 200
    assert resp.json() == {"a": 1}
    assert resp.header("content-type") == "application/json"


async def test_many_requests_share_one_upstream_connection(stack):
    import asyncio

    origin, proxy, client = stack
    results = await asyncio.gather(*[
        client.request("GET", f"http://127.0.0.1:{proxy.port}/headers?i={i}") for i in range(50)
    ])
    assert all(r.status == 200 for r in results)
    paths = {dict(r.json())[":path"] for r in results}
    assert len(paths) == 50
    assert len(origin.handler.connections) == 1
    assert json.loads(results[0].body)[0][0] == ":method"
