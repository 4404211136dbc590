"""Short-lived certificates renewed without operator action (issue 14, item 3): an NF renews
its certificate through the gateway's CSR API, authenticated by its current one; the gateway
renews its own listener certificate after 2/3 of its lifetime.  Real TLS, both backends."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import ssl
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.app import Gateway
from gateway.ca import MeshCA, write_pair
from gateway.config import parse_config
from gateway.identity import certificate_identity

pytestmark = pytest.mark.skipif(not shutil.which("curl"), reason="curl missing (Debian curl)")


def _config(ca: MeshCA, pair, backend, require: bool, **mesh_ca) -> object:
    return parse_config({
        "gateway": {"name": "scp-1", "backend": backend.NAME, "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "tls",
                       "tls": {"cert": pair[0], "key": pair[1], "client_ca": ca.cert_path,
                               "require_client_cert": require, "crl_file": ca.crl_path,
                               "reload_interval_s": 0.05}}],
        "mesh_ca": {"dir": ca.directory, **mesh_ca},
    })


async def _post_csr(port: int, ca: str, pair, csr: bytes) -> tuple[int, bytes]:
    args = ["curl", "-s", "--http2", "--max-time", "5", "--cacert", ca, "-w", "\n%{http_code}",
            "-H", "content-type: application/pkcs10", "--data-binary", "@-"]
    if pair:
        args += ["--cert", pair[0], "--key", pair[1]]
    proc = await asyncio.create_subprocess_exec(
        *args, f"https://127.0.0.1:{port}/nfmesh-ca/v1/certificate",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(csr)
    body, _, code = out.rpartition(b"\n")
    return int(code or 0), body


async def test_nf_renews_through_the_csr_api(tmp_path, backend) -> None:
    ca = MeshCA.create(str(tmp_path / "ca"))
    gw_pair = write_pair(str(tmp_path / "gw"), *ca.issue_gateway("scp-1", ips=["127.0.0.1"]))
    nf_id = str(uuid.uuid4())
    amf = write_pair(str(tmp_path / "amf"), *ca.issue("AMF", nf_id, dns=["amf1.example"]))
    gw = Gateway(_config(ca, gw_pair, backend, require=False, csr_api=True))
    await gw.start()
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asks-for-anything")]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                   f"urn:uuid:{uuid.uuid4()}")]), critical=False)
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        status, body = await _post_csr(gw.ports["sbi"], ca.cert_path, amf, csr)
        assert status == 201, body
        cert = x509.load_pem_x509_certificate(body)
        cert.verify_directly_issued_by(ca.cert)
        ident = certificate_identity(cert)
        assert (ident.instance_id, ident.nf_type, ident.dns_names) == (nf_id, "AMF", ("amf1.example",))
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)
        # no client certificate: nobody to renew
        status, _ = await _post_csr(gw.ports["sbi"], ca.cert_path, None, csr)
        assert status == 401
        # a request whose signature does not verify is refused
        status, _ = await _post_csr(gw.ports["sbi"], ca.cert_path, amf, csr.replace(b"A", b"B", 1))
        assert status == 400
    finally:
        await gw.stop(drain=False)


def _aging_gateway_cert(ca: MeshCA, prefix: str) -> tuple[str, str]:
    """An SCP certificate 3/4 through its 2-hour life."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nfmesh"),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "SCP"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, "scp-1")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=90))
            .not_valid_after(now + datetime.timedelta(minutes=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier("urn:uuid:0b7d3c8e-2f4a-5e61-9a0c-6d1f8e2b4c74"),
                x509.DNSName("scp-1"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca.key, hashes.SHA256()))
    return write_pair(prefix, cert.public_bytes(serialization.Encoding.PEM),
                      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))


def _served(port: int, ca_file: str) -> x509.Certificate:
    import socket

    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
        return x509.load_der_x509_certificate(s.getpeercert(True))


async def test_gateway_renews_its_own_certificate(tmp_path, backend) -> None:
    ca = MeshCA.create(str(tmp_path / "ca"))
    pair = _aging_gateway_cert(ca, str(tmp_path / "gw"))
    with open(pair[0], "rb") as fh:
        old = x509.load_pem_x509_certificate(fh.read())
    gw = Gateway(_config(ca, pair, backend, require=False, renew_own=True))
    await gw.start()
    try:
        port = gw.ports["sbi"]
        gw.tls_watcher.check()  # what the watcher does every reload_interval_s (maybe already did)
        new = await asyncio.to_thread(_served, port, ca.cert_path)
        assert new.serial_number != old.serial_number
        assert new.not_valid_after_utc > old.not_valid_after_utc + datetime.timedelta(hours=12)
        a, b = certificate_identity(old), certificate_identity(new)
        assert (b.instance_id, b.nf_type, b.dns_names) == (a.instance_id, a.nf_type, a.dns_names)
        assert gw.tls_watcher.own.renewed == 1
        gw.tls_watcher.check()  # not due any more: left alone
        assert gw.tls_watcher.own.renewed == 1
    finally:
        await gw.stop(drain=False)
