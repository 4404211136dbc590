"""Two gateway processes (``nfmesh run``) on one etcd: register through A, discover and route
through B within 1 s."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import free_port, start_origin
from tests.registry.conftest import make_profile
from tests.registry.test_e2e_http2 import curl
from tests.waiting import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.interop]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(tmp_path, etcd_endpoint: str) -> str:
    path = tmp_path / "gw.yaml"
    path.write_text(f"""
gateway:
  workers: 1
registry:
  enabled: true
  store: etcd
  etcd:
    endpoints: ["{etcd_endpoint}"]
    prefix: /two-gateways
  heartbeat_timer_s: 30
metrics:
  enabled: false
""")
    return str(path)


async def _wait_port(port: int, proc: subprocess.Popen) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return True
        except OSError:
            return False

    await wait_until(listening, interval=0.1, what=f"the gateway listens on {port}")


async def test_register_on_a_discover_and_route_on_b(etcd, tmp_path) -> None:
    cfg = _config(tmp_path, etcd.endpoint)
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "nfmesh_cli", "run", "-c", cfg, "--listen",
                               f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for port in ports]
    origin = await start_origin("auto", "udm-b")
    try:
        for port, proc in zip(ports, procs, strict=True):
            await _wait_port(port, proc)
        a, b = ports
        p = make_profile("UDM", ip="127.0.0.1", port=origin.port)
        status, _, body = await curl(a, "PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}",
                                     json.dumps(p).encode(), {"content-type": "application/json"})
        assert status == 201, body
        async def b_discovers() -> bool:
            status, _, body = await curl(b, "GET", "/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF")
            return status == 200 and json.loads(body)["nfInstances"]

        await wait_until(b_discovers, interval=0.02, what="B sees A's registration")
        last: list[tuple] = []

        async def b_routes() -> bool:  # model D through B
            last.append(await curl(b, "GET", "/nudm-sdm/v2/imsi-1/am-data", headers={
                "3gpp-sbi-discovery-target-nf-type": "UDM", "user-agent": "AMF-test"}))
            return last[-1][0] == 200

        await wait_until(b_routes, interval=0.02,
                         what=lambda: f"B routes by model D: {last[-1][0]} {last[-1][2][:200]}")
        status, hdrs, body = last[-1]
        assert body == b"ok udm-b"
        assert hdrs["3gpp-sbi-producer-id"].startswith(f"nfinst={p['nfInstanceId']}")
    finally:
        await origin.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
