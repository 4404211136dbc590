"""Mutual TLS through the gateway with identities issued by the mesh CA (gateway/ca.py).

Real peers on both sides: curl (libcurl + OpenSSL) over HTTP/2 with an NF certificate, and
``openssl s_client``/Python's ``ssl`` for the handshake itself.  The proxy's TLS listener
(``dataplane.listener.serve`` with ``dataplane.tls.server_context(..., require_client_cert=True)``)
sits in front of an in-process origin; a router reads the caller's identity
(``gateway.identity.peer_identity``) and passes it on in request headers.  Clients without a
certificate or with one from another CA are refused at the handshake, before any request.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from dataplane.engine import H2Settings
from dataplane.routing import Endpoint
from dataplane.tls import client_context, server_context
from dataplane.upstream_pool import UpstreamPools
from gateway.ca import MeshCA, gateway_instance_id, write_pair
from gateway.identity import NfIdentity, nf_identity, peer_identity
from tests.conftest import StaticRouter, start_origin, start_proxy

pytestmark = pytest.mark.interop

AMF_ID = "3f6b1f0e-8a47-4d4b-9c1e-5a2b7d9e0c11"
GATEWAY = "scp-test"


class Files:
    """Paths of the PEM files a test mesh needs."""

    def __init__(self, root) -> None:
        mesh = MeshCA.create(str(root / "mesh"), name="test mesh CA", days=2)
        self.ca = mesh.cert_path
        self.gw_cert, self.gw_key = write_pair(str(root / "gateway"), *mesh.issue_gateway(
            GATEWAY, dns=["localhost"], ips=["127.0.0.1", "::1"]))
        self.amf_cert, self.amf_key = write_pair(str(root / "amf"), *mesh.issue(
            "AMF", AMF_ID, dns=["amf1.example"]))
        foreign = MeshCA.create(str(root / "foreign"), name="another mesh CA")
        self.foreign_cert, self.foreign_key = write_pair(str(root / "intruder"), *foreign.issue(
            "AMF", AMF_ID, dns=["amf1.example"]))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    return Files(tmp_path_factory.mktemp("mtls"))


class IdentityRouter(StaticRouter):
    """Forwards to the origin like StaticRouter, recording the caller's NF identity and
    passing it on as ``x-nf-instance-id`` / ``x-nf-type`` request headers."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.seen: list[NfIdentity | None] = []

    def route(self, headers, peer):
        ident = peer_identity(peer)
        self.seen.append(ident)
        if ident is not None:
            headers = list(headers) + [(b"x-nf-instance-id", ident.instance_id.encode()),
                                       (b"x-nf-type", (ident.nf_type or "").encode())]
        return super().route(headers, peer)


def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed")
    return path


async def run(*argv: str, stdin: bytes = b"", timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode, out, err


@pytest.fixture
async def mtls_gateway(backend, files):
    """The proxy's mTLS listener (client certificate required) in front of an h2c origin."""
    origin = await start_origin(backend)
    router = IdentityRouter(origin.endpoint)
    ctx = server_context(files.gw_cert, files.gw_key, ca_file=files.ca, require_client_cert=True)
    proxy = await start_proxy(backend, router, ssl_context=ctx)
    proxy.extra["router"] = router
    proxy.extra["origin"] = origin
    yield proxy
    await proxy.stop()
    await origin.stop()


def curl_args(files: Files, port: int, path: str = "/headers") -> list[str]:
    return [curl(), "-sS", "--http2", "--cacert", files.ca, "-w", "\n%{http_code} %{http_version}",
            f"https://localhost:{port}{path}"]


async def test_curl_with_an_issued_certificate_reaches_the_origin_as_that_nf(mtls_gateway, files):
    rc, out, err = await run(*curl_args(files, mtls_gateway.port), "--cert", files.amf_cert,
                             "--key", files.amf_key)
    assert rc == 0, err
    body, _, status = out.rpartition(b"\n")
    assert status == b"200 2"  # HTTP/2 over TLS
    seen_by_origin = dict(json.loads(body))
    assert seen_by_origin["x-nf-instance-id"] == AMF_ID
    assert seen_by_origin["x-nf-type"] == "AMF"
    assert mtls_gateway.extra["router"].seen == [
        NfIdentity(AMF_ID, "AMF", "amf1.example", ("amf1.example",), ("AMF",))]


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
async def test_clients_the_mesh_did_not_certify_are_refused_at_the_handshake(
        mtls_gateway, files, who):
    extra = [] if who == "no certificate" else ["--cert", files.foreign_cert, "--key",
                                                files.foreign_key]
    rc, out, err = await run(*curl_args(files, mtls_gateway.port), *extra)
    assert rc != 0
    assert b"200" not in out
    # the refusal is an abrupt close, not a TLS alert: asyncio/uvloop drop the alert OpenSSL
    # queued (CPython gh-98078), so curl reports a transport error rather than "unknown ca"
    # nothing reached the router or the origin; the gateway still serves a good client
    assert mtls_gateway.extra["router"].seen == []
    assert mtls_gateway.extra["origin"].handler.requests == []
    rc, out, err = await run(*curl_args(files, mtls_gateway.port, "/hello"), "--cert",
                             files.amf_cert, "--key", files.amf_key)
    assert rc == 0 and out.endswith(b"200 2"), err


async def test_ssl_module_sees_alpn_h2_and_the_gateways_own_identity(mtls_gateway, files):
    ctx = client_context(ca_file=files.ca, cert_file=files.amf_cert, key_file=files.amf_key)
    reader, writer = await asyncio.open_connection("127.0.0.1", mtls_gateway.port, ssl=ctx,
                                                   server_hostname="localhost")
    try:
        sslobj = writer.get_extra_info("ssl_object")
        assert sslobj.selected_alpn_protocol() == "h2"
        gw = nf_identity(sslobj.getpeercert())  # mutual: the client learns who the gateway is
        assert gw is not None and gw.nf_type == "SCP"
        assert gw.instance_id == gateway_instance_id(GATEWAY)
    finally:
        writer.close()


async def test_openssl_s_client_negotiates_h2_and_verifies_the_gateway(mtls_gateway, files):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    rc, out, err = await run(openssl, "s_client", "-connect", f"127.0.0.1:{mtls_gateway.port}",
                             "-servername", "localhost", "-verify_hostname", "localhost",
                             "-alpn", "h2", "-CAfile", files.ca, "-cert", files.amf_cert,
                             "-key", files.amf_key, "-verify_return_error")
    text = out.decode(errors="replace")
    assert rc == 0, err
    assert "ALPN protocol: h2" in text
    assert "Verify return code: 0 (ok)" in text


async def test_optional_client_certificate_gives_no_identity_without_one(backend, files):
    origin = await start_origin(backend)
    router = IdentityRouter(origin.endpoint)
    ctx = server_context(files.gw_cert, files.gw_key, ca_file=files.ca, require_client_cert=False)
    proxy = await start_proxy(backend, router, ssl_context=ctx)
    try:
        rc, out, err = await run(*curl_args(files, proxy.port, "/hello"))
        assert rc == 0 and out.endswith(b"200 2"), err
        rc, out, err = await run(*curl_args(files, proxy.port, "/hello"), "--cert",
                                 files.amf_cert, "--key", files.amf_key)
        assert rc == 0 and out.endswith(b"200 2"), err
        assert [i.nf_type if i else None for i in router.seen] == [None, "AMF"]
    finally:
        await proxy.stop()
        await origin.stop()


async def test_gateway_certificate_serves_as_client_certificate_to_an_mtls_producer(
        backend, files):
    """The gateway's own certificate (EKU clientAuth too) opens mTLS to a producer, which
    sees the gateway as an SCP."""
    origin = await start_origin(backend, "producer", ssl_context=server_context(
        files.amf_cert, files.amf_key, ca_file=files.ca, require_client_cert=True))
    upstream = client_context(ca_file=files.ca, cert_file=files.gw_cert, key_file=files.gw_key)
    pools = UpstreamPools(backend, H2Settings(), ssl_context_factory=lambda ep: upstream)
    endpoint = Endpoint("127.0.0.1", origin.port, tls=True, server_name="amf1.example")
    proxy = await start_proxy(backend, StaticRouter(endpoint), pools=pools,
                              ssl_context=server_context(files.gw_cert, files.gw_key,
                                                         ca_file=files.ca,
                                                         require_client_cert=True))
    try:
        rc, out, err = await run(*curl_args(files, proxy.port, "/x"), "--cert", files.amf_cert,
                                 "--key", files.amf_key)
        assert rc == 0, err
        assert out == b"ok producer\n200 2"
        ident = peer_identity(origin.handler.connections[0].peer_info)
        assert ident is not None and ident.nf_type == "SCP"
        assert ident.instance_id == gateway_instance_id(GATEWAY)
    finally:
        await proxy.stop()
        await origin.stop()


async def test_authorisation_by_nf_type_over_mtls(backend, files):
    """NfTypeAuthzRouter in front of routing: the AMF's certificate lets it call nudm-sdm and
    gets it a 403 ProblemDetails for a service only SMFs may call; nothing denied is forwarded."""
    from gateway.identity import peer_nf_types
    from nf_adapters.authz import NfTypeAuthzRouter, NfTypePolicy

    origin = await start_origin(backend)
    policy = NfTypePolicy.from_mapping({"default": "deny", "services": {
        "nudm-sdm": ["AMF", "SMF"], "npcf-smpolicycontrol": ["SMF"]}})
    router = NfTypeAuthzRouter(StaticRouter(origin.endpoint), policy, peer_nf_types)
    ctx = server_context(files.gw_cert, files.gw_key, ca_file=files.ca, require_client_cert=True)
    proxy = await start_proxy(backend, router, ssl_context=ctx)
    amf = ["--cert", files.amf_cert, "--key", files.amf_key]
    try:
        rc, out, err = await run(*curl_args(files, proxy.port, "/nudm-sdm/v2/imsi-1/am-data"), *amf)
        assert rc == 0 and out == b"ok origin\n200 2", err
        rc, out, err = await run(*curl_args(files, proxy.port, "/npcf-smpolicycontrol/v1/x"),
                                 *amf)
        body, _, status = out.rpartition(b"\n")
        assert status == b"403 2"
        problem = json.loads(body)
        assert problem["cause"] == "NF_TYPE_NOT_ALLOWED" and problem["status"] == 403
        assert "AMF" in problem["detail"] and "npcf-smpolicycontrol" in problem["detail"]
        assert len(origin.handler.requests) == 1
    finally:
        await proxy.stop()
        await origin.stop()


async def test_a_revoked_nf_is_refused_when_the_listener_checks_the_crl(backend, tmp_path):
    """The CA's CRL loaded beside the CA bundle with VERIFY_CRL_CHECK_LEAF: the revoked AMF is
    refused at the handshake, an SMF of the same CA still gets through."""
    import ssl

    mesh = MeshCA.create(str(tmp_path / "mesh"))
    gw_cert, gw_key = write_pair(str(tmp_path / "gw"), *mesh.issue_gateway(
        GATEWAY, dns=["localhost"]))
    amf_pem = mesh.issue("AMF", AMF_ID)
    amf = write_pair(str(tmp_path / "amf"), *amf_pem)
    smf = write_pair(str(tmp_path / "smf"), *mesh.issue(
        "SMF", "0c5f3b7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"))
    from cryptography import x509

    mesh.revoke(x509.load_pem_x509_certificate(amf_pem[0]), "keyCompromise")
    ctx = server_context(gw_cert, gw_key, ca_file=mesh.cert_path, require_client_cert=True)
    ctx.load_verify_locations(cafile=mesh.crl_path)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    origin = await start_origin(backend)
    router = IdentityRouter(origin.endpoint)
    proxy = await start_proxy(backend, router, ssl_context=ctx)
    base = [curl(), "-sS", "--http2", "--cacert", mesh.cert_path, "-w", "\n%{http_code}",
            f"https://localhost:{proxy.port}/hello"]
    try:
        rc, out, err = await run(*base, "--cert", amf[0], "--key", amf[1])
        assert rc != 0 and router.seen == []
        rc, out, err = await run(*base, "--cert", smf[0], "--key", smf[1])
        assert rc == 0 and out == b"ok origin\n200", err
        assert [i.nf_type for i in router.seen] == ["SMF"]
    finally:
        await proxy.stop()
        await origin.stop()
