"""Interop with nghttp2's tools and curl through the proxy (both backends).

nghttp, curl --http2-prior-knowledge and h2load are the clients and nghttpd the server (its
files, and ``--echo-upload`` for request bodies), so both peers of the proxy are
implementations the project did not write.  Only the HTTP/1.1 test, which is about the proxy's
own listener, has the in-process origin behind it.  Each test is skipped with a reason when its
program is missing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil

import pytest

from dataplane.routing import Endpoint
from tests.conftest import StaticRouter, free_port, pattern, start_origin, start_proxy
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian package nghttp2-client/-server or curl)")
    return path


async def run(*argv: str, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out, err


async def wait_port(port: int) -> None:
    async def listening() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_until(listening, interval=0.05, what=f"something listens on {port}")


@pytest.fixture
async def nghttpd(tmp_path):
    exe = need("nghttpd")
    docroot = tmp_path / "htdocs"
    docroot.mkdir()
    (docroot / "hello.txt").write_bytes(b"hello from nghttpd\n")
    (docroot / "big.bin").write_bytes(pattern(3 << 20))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        exe, "--no-tls", "--echo-upload", "-d", str(docroot), "--address=127.0.0.1", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await wait_port(port)
        yield Endpoint("127.0.0.1", port)
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


@pytest.fixture
async def proxy_to_origin(backend, origin):
    running = await start_proxy(backend, StaticRouter(origin.endpoint))
    yield running
    await running.stop()


@pytest.fixture
async def proxy_to_nghttpd(backend, nghttpd):
    running = await start_proxy(backend, StaticRouter(nghttpd))
    yield running
    await running.stop()


async def test_nghttp_to_nghttpd_through_proxy(proxy_to_nghttpd):
    exe = need("nghttp")
    rc, out, err = await run(exe, "-s", f"http://127.0.0.1:{proxy_to_nghttpd.port}/hello.txt")
    assert rc == 0, err
    rc, out, err = await run(exe, f"http://127.0.0.1:{proxy_to_nghttpd.port}/hello.txt")
    assert rc == 0 and out == b"hello from nghttpd\n"
    rc, out, err = await run(exe, f"http://127.0.0.1:{proxy_to_nghttpd.port}/big.bin")
    assert rc == 0 and out == pattern(3 << 20)
    rc, out, err = await run(exe, "-v", f"http://127.0.0.1:{proxy_to_nghttpd.port}/missing")
    assert rc == 0 and b":status: 404" in out


async def test_curl_prior_knowledge_to_nghttpd_through_proxy(proxy_to_nghttpd):
    exe = need("curl")
    rc, out, err = await run(exe, "-sS", "--http2-prior-knowledge",
                             "-w", "\n%{http_code} %{http_version}",
                             f"http://127.0.0.1:{proxy_to_nghttpd.port}/hello.txt")
    assert rc == 0, err
    assert out == b"hello from nghttpd\n\n200 2"


async def test_nghttp_upload_to_nghttpd_through_proxy(proxy_to_nghttpd, tmp_path):
    """2 MiB up through the proxy's flow control both ways; nghttpd echoes it back."""
    exe = need("nghttp")
    data = pattern(2 << 20)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    rc, out, err = await run(exe, "-d", str(path),
                             f"http://127.0.0.1:{proxy_to_nghttpd.port}/upload")
    assert rc == 0, err
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_curl_post_to_nghttpd_through_proxy(proxy_to_nghttpd, tmp_path):
    exe = need("curl")
    body = tmp_path / "body.json"
    body.write_bytes(b'{"supi": "imsi-001010000000001"}')
    rc, out, err = await run(exe, "-sS", "--http2-prior-knowledge", "-X", "POST",
                             "-H", "content-type: application/json", "--data-binary",
                             f"@{body}", "-D", "-",
                             f"http://127.0.0.1:{proxy_to_nghttpd.port}/echo")
    assert rc == 0, err
    head, _, payload = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    assert b"nghttpd-response: echo" in head  # nghttpd answered it
    assert b"x-nfmesh: 1" in head  # through the proxy
    assert payload == b'{"supi": "imsi-001010000000001"}'
    # ProblemDetails from the proxy itself
    dead = await start_proxy(proxy_to_nghttpd.handler.pools.backend,
                             StaticRouter(Endpoint("127.0.0.1", free_port())))
    try:
        rc, out, err = await run(exe, "-sS", "--http2-prior-knowledge", "-D", "-",
                                 f"http://127.0.0.1:{dead.port}/x")
        assert b"HTTP/2 504" in out and b"application/problem+json" in out
        assert b'"cause":"TARGET_NF_NOT_REACHABLE"' in out
    finally:
        await dead.stop()


async def test_h2load_no_failures_through_proxy_to_nghttpd(proxy_to_nghttpd):
    exe = need("h2load")
    rc, out, err = await run(exe, "-n", "2000", "-c", "10", "-m", "10",
                             f"http://127.0.0.1:{proxy_to_nghttpd.port}/hello.txt", timeout=120)
    assert rc == 0, err
    text = out.decode()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text)
    assert m, text
    total, started, done, succeeded, failed, errored = map(int, m.groups())
    assert (total, done, succeeded, failed, errored) == (2000, 2000, 2000, 0, 0)
    assert re.search(r"status codes: 2000 2xx", text), text
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    if rps and os.environ.get("NFMESH_PRINT_PERF"):
        print(f"h2load through proxy: {rps.group(1)} req/s")


async def _first_answer(port: int, request: bytes) -> bytes:
    """Everything the listener sends to a connection that opens with ``request``, until it
    closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_http1_client_gets_505_problem_details_in_http1(proxy_to_origin):
    """An HTTP/1.1 client on the h2c port gets one clean HTTP/1.1 505 with a ProblemDetails
    body (no HTTP/2 bytes before it) and the connection closes; curl says so in its own
    terms; HTTP/2 clients on the same listener are unaffected."""
    port = proxy_to_origin.port
    answer = await _first_answer(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer[:80]
    assert b"content-type: application/problem+json" in head
    assert b"connection: close" in head
    problem = json.loads(body)
    assert problem["status"] == 505 and "HTTP/2 only" in problem["detail"]
    exe = need("curl")
    rc, out, err = await run(exe, "-sS", "--http1.1", "-w", "\n%{http_code}",
                             f"http://127.0.0.1:{port}/hello")
    assert rc == 0, err
    assert out.endswith(b"\n505") and b'"status":505' in out
    rc, out, err = await run(exe, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_code}",
                             f"http://127.0.0.1:{port}/hello")
    assert rc == 0 and out.endswith(b"\n200"), (out, err)
    # not HTTP/1 and not the preface: closed as before, no HTTP/1 answer
    answer = await _first_answer(port, b"\x16\x03\x01\x02\x00garbage-not-a-preface")
    assert not answer.startswith(b"HTTP/1.1")
