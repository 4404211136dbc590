"""Authorisation by NF type, end to end: the gateway's TLS listener with mesh certificates.

A caller's NF type comes from the certificate the mesh CA issued it; `authz.services` says which
NF types may call which SBI service.  Real curl over HTTP/2 + mTLS, real origin.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import pytest

from gateway.app import Gateway
from gateway.ca import MeshCA, write_pair
from gateway.config import parse_config
from tests.conftest import start_origin

pytestmark = pytest.mark.skipif(not shutil.which("curl"), reason="curl missing (Debian curl)")


async def _curl(port: int, ca: str, cert: str, key: str, path: str, target: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--http2", "--cacert", ca, "--cert", cert, "--key", key,
        "-H", f"3gpp-Sbi-Target-apiRoot: {target}", "-H", "User-Agent: NF-test",
        "-w", "\n%{http_code}", f"https://127.0.0.1:{port}{path}",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    body, _, code = out.rpartition(b"\n")
    return int(code or 0), body


async def test_nf_type_from_the_mesh_certificate_decides(tmp_path, backend) -> None:
    ca = MeshCA.create(str(tmp_path / "ca"))
    gw_cert, gw_key = write_pair(str(tmp_path / "gw"), *ca.issue_gateway("scp-1", ips=["127.0.0.1"]))
    amf = write_pair(str(tmp_path / "amf"), *ca.issue("AMF", str(uuid.uuid4())))
    smf = write_pair(str(tmp_path / "smf"), *ca.issue("SMF", str(uuid.uuid4())))
    origin = await start_origin(backend, name="udm")
    cfg = parse_config({
        "gateway": {"name": "scp-1", "backend": backend.NAME, "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "tls",
                       "tls": {"cert": gw_cert, "key": gw_key, "client_ca": ca.cert_path,
                               "require_client_cert": True}}],
        "authz": {"enabled": True, "default": "deny",
                  "services": {"nudm-sdm": ["AMF"], "nudm-uecm": ["AMF", "SMF"]}},
    })
    gw = Gateway(cfg)
    await gw.start()
    try:
        port = gw.ports["sbi"]
        target = f"http://127.0.0.1:{origin.port}"
        code, body = await _curl(port, ca.cert_path, *amf, "/nudm-sdm/v2/imsi-1/am-data", target)
        assert (code, body) == (200, b"ok udm")
        code, body = await _curl(port, ca.cert_path, *smf, "/nudm-sdm/v2/imsi-1/am-data", target)
        assert code == 403
        problem = json.loads(body)
        assert problem["cause"] == "NF_TYPE_NOT_ALLOWED" and problem["status"] == 403
        code, _ = await _curl(port, ca.cert_path, *smf, "/nudm-uecm/v1/imsi-1/registrations", target)
        assert code == 200
        code, _ = await _curl(port, ca.cert_path, *amf, "/nausf-auth/v1/ue-authentications", target)
        assert code == 403  # not listed, default deny
        assert len(origin.handler.requests) == 2  # refused requests never reached the producer
    finally:
        await gw.stop(drain=False)
        await origin.stop()
