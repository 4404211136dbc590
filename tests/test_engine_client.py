"""H2Client (dataplane/client.py) against the in-process origin and nghttpd-free paths, on each
backend: reuse, bodies, JSON, stream limits, timeouts and clear errors."""

from __future__ import annotations

import asyncio

import pytest

from dataplane.client import H2Client, H2ClientError, Response
from dataplane.engine import H2Settings
from tests.conftest import free_port, pattern, start_origin


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend, settings=H2Settings(max_concurrent_streams=3))
    yield running
    await running.stop()


@pytest.fixture
async def client(backend):
    c = H2Client(backend.NAME)
    yield c
    await c.close()


async def test_get_post_json_and_reuse(origin, client):
    base = f"http://127.0.0.1:{origin.port}"
    resp = await client.request("GET", base + "/hello")
    assert isinstance(resp, Response)
    assert (resp.status, resp.body) == (200, b"ok origin")
    assert resp.header("Content-Type") == "text/plain"
    resp = await client.request("PUT", base + "/echo", [("Content-Type", "application/json")],
                                b'{"nfStatus": "REGISTERED"}')
    assert resp.json() == {"nfStatus": "REGISTERED"}
    resp = await client.request("GET", base + "/headers?a=1&b=2", [("User-Agent", "AMF-test")])
    sent = dict(resp.json())
    assert sent[":path"] == "/headers?a=1&b=2"
    assert sent["user-agent"] == "AMF-test"
    assert sent[":authority"] == f"127.0.0.1:{origin.port}"
    assert len(origin.handler.connections) == 1


async def test_large_bodies(origin, client):
    body = pattern(5 << 20)
    resp = await client.request("POST", f"http://127.0.0.1:{origin.port}/echo", body=body,
                                timeout=30)
    assert resp.body == body


async def test_over_the_peer_stream_limit(origin, client):
    results = await asyncio.gather(*[
        client.request("GET", f"http://127.0.0.1:{origin.port}/slow?ms=50") for _ in range(9)
    ])
    assert all(r.status == 200 for r in results)
    assert 3 <= len(origin.handler.connections) <= 4


async def test_timeout_and_errors(origin, client):
    with pytest.raises(TimeoutError):
        await client.request("GET", f"http://127.0.0.1:{origin.port}/hold", timeout=0.2)
    with pytest.raises(H2ClientError, match="cannot connect"):
        await client.request("GET", f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ValueError, match="unsupported URL"):
        await client.request("GET", "ftp://127.0.0.1/")
    # a reset stream is an error naming the code
    with pytest.raises(H2ClientError, match="INTERNAL_ERROR"):
        await client.request("GET", f"http://127.0.0.1:{origin.port}/reset?code=2")
    # and the connection is still usable afterwards
    assert (await client.request("GET", f"http://127.0.0.1:{origin.port}/x")).status == 200
