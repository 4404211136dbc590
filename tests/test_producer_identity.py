"""Producer identity over TLS (issue 14, item 5 of the issue / item 3 of the brief).

Model D picks an NF instance; the upstream TLS session must present that instance's identity
(its ``urn:uuid:`` SAN, or a DNS SAN equal to its profile FQDN), else the attempt is a connect
failure and the next producer is tried.  Real TLS with certificates the mesh CA issued, both
HTTP/2 backends, the gateway as ``nfmesh run`` builds it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid

import pytest

from dataplane.tls import server_context
from gateway.app import Gateway
from gateway.ca import MeshCA, write_pair
from gateway.config import parse_config
from nf_adapters.producer_identity import check_certificate
from tests.conftest import start_origin
from tests.registry.conftest import make_profile
from tests.waiting import wait_until

A, B, C, X = (str(uuid.UUID(int=i)) for i in (0xA1, 0xB2, 0xC3, 0xD4))


def test_certificate_rules() -> None:
    uri = lambda i: {"subjectAltName": (("URI", f"urn:uuid:{i}"), ("DNS", "udm.example"))}  # noqa: E731
    assert check_certificate(A, None, uri(A)) is None
    assert check_certificate(A.upper(), None, uri(A)) is None
    assert "NF instance" in check_certificate(A, "udm.example", uri(X))  # FQDN does not rescue
    dns_only = {"subjectAltName": (("DNS", "*.udm.example"),)}
    assert check_certificate(A, "udm-1.udm.example", dns_only) is None
    assert check_certificate(A, "a.b.udm.example", dns_only) is not None
    assert check_certificate(A, None, dns_only) is not None
    assert check_certificate(A, "udm.example", None) == "no verified certificate"


async def _get(port: int) -> tuple[int, dict, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-i", "--http2-prior-knowledge", "--max-time", "5",
        "-H", "3gpp-Sbi-Discovery-target-nf-type: UDM",
        "-H", "3gpp-Sbi-Discovery-service-names: nudm-sdm", "-H", "User-Agent: AMF-test",
        f"http://127.0.0.1:{port}/nudm-sdm/v2/imsi-1/am-data", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), hdrs, body


@pytest.mark.skipif(not shutil.which("curl"), reason="curl missing (Debian curl)")
async def test_a_producer_with_another_instances_certificate_is_not_used(tmp_path, backend) -> None:
    ca = MeshCA.create(str(tmp_path / "ca"))
    gw = write_pair(str(tmp_path / "gw"), *ca.issue_gateway("scp-1", ips=["127.0.0.1"]))
    certs = {i: write_pair(str(tmp_path / i[-2:]), *ca.issue("UDM", i, ips=["127.0.0.1"]))
             for i in (B, C, X)}
    # A's address serves X's (valid, mesh-issued) certificate: an impersonation attempt
    origins = {name: await start_origin(backend, name=name, ssl_context=server_context(*certs[cert]))
               for name, cert in (("udm-a", X), ("udm-b", B), ("udm-c", C))}
    cfg = parse_config({
        "gateway": {"name": "scp-1", "backend": backend.NAME, "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0}],
        "registry": {"enabled": True},
        "upstream_tls": {"ca_file": ca.cert_path, "cert": gw[0], "key": gw[1]},
    })
    gateway = Gateway(cfg)
    await gateway.start()
    try:
        reg = gateway.registry

        async def register(nf_id: str, origin: str, priority: int) -> None:
            p = make_profile("UDM", nf_id, ip="127.0.0.1", port=origins[origin].port, priority=priority)
            for svc in p["nfServiceList"].values():
                svc["scheme"] = "https"
            await reg.registry.register(nf_id, p)

        async def published(n: int) -> None:
            await wait_until(lambda: len(reg.publisher.snapshot.by_type.get("UDM", ())) == n,
                             what=f"the snapshot holds {n} UDMs")

        await register(A, "udm-a", 1)  # preferred, but its certificate is X's
        await register(B, "udm-b", 2)
        await published(2)
        port = gateway.ports["sbi"]
        for _ in range(4):
            status, hdrs, body = await _get(port)
            assert status == 200, body
            assert body == b"ok udm-b"
            assert hdrs["3gpp-sbi-producer-id"].startswith(f"nfinst={B}")
        assert origins["udm-a"].handler.requests == []  # never got a request

        await register(C, "udm-c", 0)  # a producer with its own certificate is used at once
        await published(3)
        status, hdrs, body = await _get(port)
        assert (status, body) == (200, b"ok udm-c")
        assert hdrs["3gpp-sbi-producer-id"].startswith(f"nfinst={C}")
    finally:
        await gateway.stop(drain=False)
        for o in origins.values():
            o.server.close()
