"""Certificate rotation and revocation on a running gateway (issue 14, items 3-4), real TLS
with certificates the mesh CA issued, both HTTP/2 backends:

* client certificates that are expired, not yet valid, from another CA, revoked or missing
  are refused at the handshake; one without the mesh's urn:uuid SAN has no NF identity;
* the listener's certificate rotated several times while h2load runs through the gateway:
  0 failed requests, and a new handshake gets the newest certificate;
* ``nfmesh ca revoke`` (``MeshCA.revoke``) reaches the running gateway: the revoked client's
  open connection gets GOAWAY within the listener's ``reload_interval_s`` and it cannot
  connect again.
"""

from __future__ import annotations

import asyncio
import datetime
import re
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
from tests.conftest import start_origin

pytestmark = pytest.mark.skipif(not shutil.which("curl"), reason="curl missing (Debian curl)")


def _leaf(ca: MeshCA, prefix: str, *, start: datetime.timedelta = datetime.timedelta(minutes=-5),
          end: datetime.timedelta = datetime.timedelta(days=1), uri: str | None = None) -> tuple[str, str]:
    """A client certificate signed by ``ca`` with the given validity window (relative to now)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName("client.example")]
    if uri:
        sans.append(x509.UniformResourceIdentifier(uri))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, prefix[-32:])]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + start).not_valid_after(now + end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return write_pair(prefix, cert.public_bytes(serialization.Encoding.PEM),
                      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))


async def _curl(port: int, ca: str, pair: tuple[str, str] | None, target: str) -> int:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2", "--max-time", "5",
            "--cacert", ca, "-H", f"3gpp-Sbi-Target-apiRoot: {target}", "-H", "User-Agent: AMF-t"]
    if pair:
        args += ["--cert", pair[0], "--key", pair[1]]
    proc = await asyncio.create_subprocess_exec(*args, f"https://127.0.0.1:{port}/nudm-sdm/v2/x",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return int(out or b"0")


class Mesh:
    def __init__(self, tmp_path, backend) -> None:
        self.tmp, self.backend = tmp_path, backend
        self.ca = MeshCA.create(str(tmp_path / "ca"))
        self.gw_pair = write_pair(str(tmp_path / "gw"), *self.ca.issue_gateway("scp-1", ips=["127.0.0.1"]))

    async def start(self, require: bool = True, interval: float = 0.05) -> None:
        self.origin = await start_origin(self.backend, name="udm")
        self.target = f"http://127.0.0.1:{self.origin.port}"
        cfg = parse_config({
            "gateway": {"name": "scp-1", "backend": self.backend.NAME, "workers": 1},
            "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "tls",
                           "tls": {"cert": self.gw_pair[0], "key": self.gw_pair[1],
                                   "client_ca": self.ca.cert_path, "require_client_cert": require,
                                   "crl_file": self.ca.crl_path, "reload_interval_s": interval}}],
        })
        self.gw = Gateway(cfg)
        await self.gw.start()
        self.port = self.gw.ports["sbi"]

    async def stop(self) -> None:
        await self.gw.stop(drain=False)
        self.origin.server.close()


@pytest.fixture
async def mesh(tmp_path, backend):
    m = Mesh(tmp_path, backend)
    yield m
    if hasattr(m, "gw"):
        await m.stop()


async def test_client_certificates_that_must_not_get_in(mesh) -> None:
    await mesh.start()
    ca, t = mesh.ca, mesh.tmp
    good = write_pair(str(t / "amf"), *ca.issue("AMF", str(uuid.uuid4())))
    expired = _leaf(ca, str(t / "expired"), start=datetime.timedelta(days=-3), end=datetime.timedelta(days=-1))
    future = _leaf(ca, str(t / "future"), start=datetime.timedelta(days=1), end=datetime.timedelta(days=3))
    other = MeshCA.create(str(t / "other"))
    wrong_ca = write_pair(str(t / "wrongca"), *other.issue("AMF", str(uuid.uuid4())))
    revoked = write_pair(str(t / "revoked"), *ca.issue("AMF", str(uuid.uuid4())))
    with open(revoked[0], "rb") as fh:
        assert ca.revoke(x509.load_pem_x509_certificate(fh.read()))
    mesh.gw.tls_watcher.check(force=True)  # what the watcher does within reload_interval_s
    assert await _curl(mesh.port, ca.cert_path, good, mesh.target) == 200
    for pair in (expired, future, wrong_ca, revoked, None):
        assert await _curl(mesh.port, ca.cert_path, pair, mesh.target) == 0, pair
    # a certificate of the mesh CA without a urn:uuid SAN gets in, but names no NF instance
    from gateway.identity import nf_identity

    no_san = _leaf(ca, str(t / "nosan"))
    assert await _curl(mesh.port, ca.cert_path, no_san, mesh.target) == 200
    with open(no_san[0], "rb") as fh:
        from gateway.identity import peercert_dict

        assert nf_identity(peercert_dict(x509.load_pem_x509_certificate(fh.read()))) is None


def _served_serial(port: int, ca_file: str) -> int:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as s:
        return x509.load_der_x509_certificate(s.getpeercert(True)).serial_number


@pytest.mark.skipif(not shutil.which("h2load"), reason="h2load missing (Debian nghttp2-client)")
async def test_rotation_under_load_fails_no_request(mesh) -> None:
    await mesh.start(require=False)  # h2load has no client certificate
    proc = await asyncio.create_subprocess_exec(
        "h2load", "-D", "3", "-c", "4", "-m", "4", "--rps", "300", "-H", f"3gpp-Sbi-Target-apiRoot: {mesh.target}",
        "-H", "User-Agent: AMF-load", f"https://127.0.0.1:{mesh.port}/nudm-sdm/v2/x",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    serials = []
    for _ in range(6):  # bounded: six rotations while h2load runs
        await asyncio.sleep(0.3)  # spreading the rotations over the 3 s of load is the test
        cert, key = mesh.ca.issue_gateway("scp-1", ips=["127.0.0.1"])
        write_pair(str(mesh.tmp / "gw"), cert, key, force=True)
        serials.append(x509.load_pem_x509_certificate(cert).serial_number)
        mesh.gw.tls_watcher.check()
        assert await asyncio.to_thread(_served_serial, mesh.port, mesh.ca.cert_path) == serials[-1]
    out, _ = await proc.communicate()
    text = out.decode()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", text)
    assert m, text
    total, _, done, ok, failed, errored = map(int, m.groups())
    assert done > 0 and ok == done and failed == 0 and errored == 0, text
    assert "status codes: " in text and re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx", text), text
    lt = mesh.gw.tls_watcher.listeners[0]
    assert lt.reloads >= 6 and lt.cut == 0


async def test_revoked_client_is_cut_while_connected(mesh) -> None:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    await mesh.start(interval=0.05)
    nf_id = str(uuid.uuid4())
    pair = write_pair(str(mesh.tmp / "amf"), *mesh.ca.issue("AMF", nf_id))
    ctx = ssl.create_default_context(cafile=mesh.ca.cert_path)
    ctx.check_hostname = False
    ctx.load_cert_chain(*pair)
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.port, ssl=ctx)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "gw"),
                          (":path", "/nudm-sdm/v2/x"), ("3gpp-sbi-target-apiroot", mesh.target),
                          ("user-agent", "AMF-t")], end_stream=True)
    writer.write(conn.data_to_send())

    async def events_until(kind, limit_s: float = 10.0):
        got = []
        async with asyncio.timeout(limit_s):  # a bound, not a timing assertion
            while not any(isinstance(e, kind) for e in got):
                data = await reader.read(65536)
                if not data:
                    return got, True
                try:
                    got.extend(conn.receive_data(data))
                except h2.exceptions.ProtocolError:
                    # frames after a GOAWAY in the same read (a PING): h2 has closed already
                    if conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                        raise
                    got.append(h2.events.ConnectionTerminated())
                writer.write(conn.data_to_send())
        return got, False

    events, _ = await events_until(h2.events.StreamEnded)
    status = [dict(e.headers)[b":status"] for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert status == [b"200"]
    with open(pair[0], "rb") as fh:
        assert mesh.ca.revoke(x509.load_pem_x509_certificate(fh.read()), reason="keyCompromise")
    events, eof = await events_until(h2.events.ConnectionTerminated)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), (events, eof)
    writer.close()
    assert await _curl(mesh.port, mesh.ca.cert_path, pair, mesh.target) == 0  # and stays out
    assert mesh.gw.tls_watcher.listeners[0].cut == 1
    from gateway.security_metrics import SecurityCollector

    samples = {s.name: s.value for fam in SecurityCollector(mesh.gw).collect() for s in fam.samples}
    assert samples["nfmesh_tls_revoked_connections_cut_total"] == 1
    assert samples["nfmesh_tls_reloads_total"] >= 1


async def _curl_h2c(port: int, target: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--http2-prior-knowledge", "--max-time", "5", "-w", "\n%{http_code}",
        "-H", f"3gpp-Sbi-Target-apiRoot: {target}", "-H", "User-Agent: AMF-t",
        f"http://127.0.0.1:{port}/nudm-sdm/v2/x", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    body, _, code = out.rpartition(b"\n")
    return int(code or 0), body


async def test_revoked_producer_is_retired_and_not_reconnected(tmp_path, backend) -> None:
    from dataplane.tls import server_context
    from gateway.tls_reload import reload_now

    ca = MeshCA.create(str(tmp_path / "ca"))
    gw_pair = write_pair(str(tmp_path / "gw"), *ca.issue_gateway("scp-1", ips=["127.0.0.1"]))
    udm = write_pair(str(tmp_path / "udm"), *ca.issue("UDM", str(uuid.uuid4()), ips=["127.0.0.1"]))
    origin = await start_origin(backend, name="udm", ssl_context=server_context(*udm))
    gw = Gateway(parse_config({
        "gateway": {"name": "scp-1", "backend": backend.NAME, "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0}],
        "upstream_tls": {"ca_file": ca.cert_path, "cert": gw_pair[0], "key": gw_pair[1],
                         "crl_file": ca.crl_path},
    }))
    await gw.start()
    try:
        port, target = gw.ports["sbi"], f"https://127.0.0.1:{origin.port}"
        assert await _curl_h2c(port, target) == (200, b"ok udm")
        assert sum(len(p.conns) for p in gw.pools._pools.values()) == 1
        with open(udm[0], "rb") as fh:
            assert ca.revoke(x509.load_pem_x509_certificate(fh.read()))
        reload_now(gw)  # what SIGHUP / the watcher does
        assert sum(len(p.conns) for p in gw.pools._pools.values()) == 0
        seen = len(origin.handler.requests)
        status, _ = await _curl_h2c(port, target)
        assert status >= 500  # the new handshake fails the CRL check
        assert len(origin.handler.requests) == seen
    finally:
        await gw.stop(drain=False)
        origin.server.close()
