"""TLS listeners and upstreams: curl over TLS with ALPN h2, HTTP/1.1 refused cleanly, mTLS with
the client identity in ``peer_info``, H2Client over https, and TLS to the producer."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl

import pytest

from dataplane.client import H2Client, H2ClientError
from dataplane.engine import H2Settings
from dataplane.routing import Endpoint, LocalResponse
from dataplane.tls import TLSConfigError, client_context, server_context, uri_sans
from dataplane.upstream_pool import UpstreamPools
from tests.certs import CLIENT_URI
from tests.conftest import StaticRouter, free_port, start_origin, start_proxy
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


async def run(*argv: str, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out, err


def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed")
    return path


class WhoAmI:
    """Answers with what the listener put in peer_info."""

    def route(self, headers, peer):
        body = json.dumps({"alpn": peer.get("alpn"), "uris": uri_sans(peer.get("peercert")),
                           "tls": peer.get("sslobject") is not None}).encode()
        return LocalResponse(200, [(b"content-type", b"application/json")], body)


@pytest.fixture
async def tls_proxy(backend, pki):
    origin = await start_origin(backend)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint),
                              ssl_context=server_context(pki.server_cert, pki.server_key))
    yield proxy
    await proxy.stop()
    await origin.stop()


async def test_curl_over_tls_negotiates_h2(tls_proxy, pki):
    rc, out, err = await run(curl(), "-sS", "--cacert", pki.ca_cert, "-w",
                             "\n%{http_code} %{http_version}",
                             f"https://localhost:{tls_proxy.port}/hello")
    assert rc == 0, err
    assert out == b"ok origin\n200 2"


async def test_http11_over_tls_is_refused_cleanly(tls_proxy, pki):
    rc, out, err = await run(curl(), "-sS", "--http1.1", "--cacert", pki.ca_cert, "-D", "-",
                             f"https://localhost:{tls_proxy.port}/hello")
    assert out.startswith(b"HTTP/1.1 505")
    assert b"HTTP/2 only" in out
    assert tls_proxy.handler.requests == 0


async def test_h2client_over_https(tls_proxy, pki):
    client = H2Client("h2", ssl_context=client_context(ca_file=pki.ca_cert))
    try:
        resp = await client.request("POST", f"https://localhost:{tls_proxy.port}/echo",
                                    body=b"over tls")
        assert resp.status == 200 and resp.body == b"over tls"
    finally:
        client.close()
    # a client that does not trust the CA fails with a clear error
    client = H2Client("h2", ssl_context=client_context(ca_file=pki.other_ca_cert))
    with pytest.raises(H2ClientError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
        await client.request("GET", f"https://localhost:{tls_proxy.port}/x")
    client.close()


async def test_mtls_identity_reaches_the_router(backend, pki):
    ctx = server_context(pki.server_cert, pki.server_key, ca_file=pki.ca_cert,
                         require_client_cert=True)
    proxy = await start_proxy(backend, WhoAmI(), ssl_context=ctx)
    try:
        rc, out, err = await run(curl(), "-sS", "--cacert", pki.ca_cert, "--cert",
                                 pki.client_cert, "--key", pki.client_key,
                                 f"https://localhost:{proxy.port}/whoami")
        assert rc == 0, err
        assert json.loads(out) == {"alpn": "h2", "uris": [CLIENT_URI], "tls": True}
        # without a client certificate the handshake fails
        rc, out, err = await run(curl(), "-sS", "--cacert", pki.ca_cert,
                                 f"https://localhost:{proxy.port}/whoami")
        assert rc != 0
        assert proxy.handler.requests == 1
    finally:
        await proxy.stop()


async def test_tls_to_the_producer_presents_the_client_identity(backend, pki):
    """The proxy's client certificate reaches the producer (here the project's own engine,
    which can report the certificate it saw; the independent peer is nghttpd, below)."""
    origin = await start_origin(backend, "tls-origin", ssl_context=server_context(
        pki.server_cert, pki.server_key, ca_file=pki.ca_cert, require_client_cert=True))
    ctx = client_context(ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key)
    pools = UpstreamPools(backend, H2Settings(), ssl_context_factory=lambda ep: ctx)
    endpoint = Endpoint("127.0.0.1", origin.port, tls=True, server_name="localhost")
    proxy = await start_proxy(backend, StaticRouter(endpoint), pools=pools)
    client = H2Client(backend.NAME)
    try:
        resp = await client.request("GET", f"http://127.0.0.1:{proxy.port}/x")
        assert resp.status == 200 and resp.body == b"ok tls-origin"
        conn = origin.handler.connections[0]
        assert uri_sans(conn.peer_info["peercert"]) == [CLIENT_URI]
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()


async def test_tls_to_an_nghttpd_producer_that_requires_a_client_certificate(backend, pki, tmp_path):
    """nghttpd (nghttp2 + OpenSSL, a server the project did not write) over TLS with ALPN h2
    and ``--verify-client``: the proxy's upstream handshake with its client certificate gets
    the file; without a certificate nghttpd ends the handshake and the proxy answers 5xx."""
    exe = shutil.which("nghttpd")
    if exe is None:
        pytest.skip("nghttpd is not installed (Debian package nghttp2-server)")
    (tmp_path / "hello.txt").write_bytes(b"hello over tls\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        exe, "--verify-client", "-d", str(tmp_path), "--address=127.0.0.1", str(port),
        pki.server_key, pki.server_cert,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    endpoint = Endpoint("127.0.0.1", port, tls=True, server_name="localhost")
    with_cert = client_context(ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key)
    without = client_context(ca_file=pki.ca_cert)
    proxies = []
    client = H2Client(backend.NAME)
    try:
        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await wait_until(listening, what="nghttpd listens")
        for ctx in (with_cert, without):
            pools = UpstreamPools(backend, H2Settings(), ssl_context_factory=lambda ep, c=ctx: c)
            proxies.append(await start_proxy(backend, StaticRouter(endpoint), pools=pools))
        resp = await client.request("GET", f"http://127.0.0.1:{proxies[0].port}/hello.txt")
        assert resp.status == 200 and resp.body == b"hello over tls\n"
        assert resp.header("server").startswith("nghttpd")
        refused = await client.request("GET", f"http://127.0.0.1:{proxies[1].port}/hello.txt")
        assert refused.status >= 500 and refused.json()["cause"] in (
            "TARGET_NF_NOT_REACHABLE", "UNSPECIFIED_NF_FAILURE")
    finally:
        client.close()
        for proxy in proxies:
            await proxy.stop()
        proc.terminate()
        await proc.wait()


def test_tls_config_errors_name_the_path(tmp_path, pki):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(TLSConfigError, match="nope.pem"):
        server_context(missing, pki.server_key)
    with pytest.raises(TLSConfigError, match="ca_file"):
        server_context(pki.server_cert, pki.server_key, require_client_cert=True)
    with pytest.raises(TLSConfigError, match="1.2 or 1.3"):
        client_context(min_version="1.0")
    with pytest.raises(TLSConfigError, match="cannot load"):
        server_context(pki.server_cert, pki.client_key)
    ctx = client_context(min_version="1.3")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


async def test_nghttp_and_h2load_over_tls(tls_proxy):
    import re

    for tool in ("nghttp", "h2load"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package nghttp2-client)")
    rc, out, err = await run("nghttp", f"https://localhost:{tls_proxy.port}/hello")
    assert rc == 0 and out == b"ok origin", err
    rc, out, err = await run("h2load", "-n", "500", "-c", "5", "-m", "10",
                             f"https://localhost:{tls_proxy.port}/hello", timeout=60)
    assert rc == 0, err
    text = out.decode()
    assert re.search(r"500 succeeded, 0 failed, 0 errored", text), text
    assert "Application protocol: h2" in text


async def test_upstream_without_h2_alpn_is_unavailable_with_reason(backend, pki):
    from dataplane.upstream_pool import UpstreamUnavailable

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.set_alpn_protocols(["http/1.1"])

    async def http11_only(reader, writer):
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(http11_only, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    pools = UpstreamPools(backend, H2Settings(),
                          ssl_context_factory=lambda ep: client_context(ca_file=pki.ca_cert))
    try:
        with pytest.raises(UpstreamUnavailable, match="did not negotiate h2"):
            await pools.acquire(Endpoint("127.0.0.1", port, tls=True, server_name="localhost"))
    finally:
        pools.close()
        server.close()
