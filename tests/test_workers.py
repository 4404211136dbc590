"""Multi-worker gateway: `nfmesh run --workers 2` as a real process tree.

The supervisor runs the control plane (one registry, NRF API for the workers, snapshot channel);
two workers share the SBI port with SO_REUSEPORT.  Registrations made through either worker
land in the one registry and every worker routes model D from the pushed snapshot; a worker
sent SIGTERM alone drains its in-flight requests and is started again; SIGTERM to the
supervisor stops the whole tree.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from dataplane.client import H2Client
from tests.conftest import free_port, start_origin
from tests.waiting import wait_until


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def _fresh_get(url: str, headers: list[tuple[str, str]], timeout: float = 10.0):
    """One request on a new connection (so SO_REUSEPORT may pick either worker)."""
    client = H2Client("h2")
    try:
        return await client.request("GET", url, headers=headers, timeout=timeout)
    finally:
        await client.close()


async def _wait_ready(port: int, metrics_ports: list[int], proc: subprocess.Popen) -> None:
    pending = set(metrics_ports)

    async def all_ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited during start-up: {proc.stderr.read()[-2000:]}")
        for mp in list(pending):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", mp)
                w.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in await asyncio.wait_for(r.readline(), 5):
                    pending.discard(mp)
                w.close()
            except (OSError, TimeoutError):
                pass
        return not pending

    await wait_until(all_ready, interval=0.2,
                     what=lambda: f"workers with metrics ports {pending} never became ready")


def _metric_by_worker(port: int, cluster: str) -> dict[str, float]:
    """nfmesh_requests_total of ``cluster`` per worker label, from the one scrape target."""
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("nfmesh_requests_total{") and f'cluster="{cluster}"' in line:
            worker = line.split('worker="', 1)[1].split('"', 1)[0]
            out[worker] = out.get(worker, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


@pytest.fixture
async def gateway_tree(tmp_path):
    origin = await start_origin("h2", name="udm-1")
    port, mport = free_port(), free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(json.dumps({
        "gateway": {"name": "scp-workers", "drain_timeout_s": 5},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": port, "protocol": "h2c"}],
        "registry": {"enabled": True, "store": "memory"},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": mport},
        "logging": {"level": "warning", "access_log": False},
    }))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfmesh_cli", "run", "-c", str(cfg), "--workers", "2"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        await _wait_ready(port, [mport], proc)
        yield proc, port, mport, origin
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await origin.stop()


def _profile(nf_id: str, port: int) -> dict:
    return {
        "nfInstanceId": nf_id, "nfType": "UDM", "nfStatus": "REGISTERED", "heartBeatTimer": 60,
        "ipv4Addresses": ["127.0.0.1"],
        "nfServices": [{
            "serviceInstanceId": "sdm-1", "serviceName": "nudm-sdm",
            "versions": [{"apiVersionInUri": "v2", "apiFullVersion": "2.0.0"}],
            "scheme": "http", "nfServiceStatus": "REGISTERED",
            "ipEndPoints": [{"ipv4Address": "127.0.0.1", "port": port}],
        }],
    }


async def test_workers_share_one_registry_and_route_model_d(gateway_tree) -> None:
    proc, port, mport, origin = gateway_tree
    assert len(_children(proc.pid)) == 2
    nf_id = str(uuid.uuid4())
    client = H2Client("h2")
    r = await client.request(
        "PUT", f"http://127.0.0.1:{port}/nnrf-nfm/v1/nf-instances/{nf_id}",
        headers=[("content-type", "application/json")],
        body=json.dumps(_profile(nf_id, origin.port)).encode())
    await client.close()
    assert r.status == 201, r.body
    # every worker (fresh connections land on either) discovers and routes to the producer
    url = f"http://127.0.0.1:{port}/nudm-sdm/v2/imsi-001010000000001/am-data"
    disc = [("3gpp-sbi-discovery-target-nf-type", "UDM"), ("user-agent", "AMF-test")]
    results = []
    for _ in range(24):
        results.append(await _fresh_get(url, disc))
    assert [x.status for x in results] == [200] * 24, [x.body for x in results if x.status != 200]
    assert all(x.body == b"ok udm-1" for x in results)
    served = _metric_by_worker(mport, f"UDM/{nf_id}")
    # both workers routed from the snapshot; one scrape target shows each worker's share
    assert set(served) == {"0", "1"} and sum(served.values()) == 24, served
    nrf = _metric_by_worker(mport, "nrf")
    assert nrf.pop("control") == 1  # the control plane served the registration once...
    assert sum(nrf.values()) == 1  # ...forwarded by the one worker that received it
    # NRF discovery through any worker sees the same registry
    d = await _fresh_get(
        f"http://127.0.0.1:{port}/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF",
        [("user-agent", "AMF-test")])
    assert d.status == 200
    assert [i["nfInstanceId"] for i in d.json()["nfInstances"]] == [nf_id]
    assert len(origin.handler.requests) == 24


async def test_worker_sigterm_drains_in_flight_and_is_restarted(gateway_tree) -> None:
    proc, port, mport, origin = gateway_tree
    workers = _children(proc.pid)
    assert len(workers) == 2
    target = [("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}"), ("user-agent", "AMF-t")]
    url = f"http://127.0.0.1:{port}/slow?ms=1500"
    inflight = [asyncio.create_task(_fresh_get(url, target)) for _ in range(12)]
    await wait_until(lambda: len(origin.handler.requests) >= 12)
    assert len(origin.handler.requests) == 12  # all accepted and forwarded before the SIGTERM
    os.kill(workers[0], signal.SIGTERM)
    done = await asyncio.gather(*inflight)
    assert [r.status for r in done] == [200] * 12, [r.body for r in done]
    # the supervisor starts a new worker in its place
    def replaced() -> bool:
        now = _children(proc.pid)
        return len(now) == 2 and workers[0] not in now

    await wait_until(replaced, interval=0.2, what="a new worker in place of the stopped one")
    now = _children(proc.pid)
    assert len(now) == 2 and workers[0] not in now and workers[1] in now
    await _wait_ready(port, [mport], proc)
    after = [await _fresh_get(f"http://127.0.0.1:{port}/x", target) for _ in range(6)]
    assert [r.status for r in after] == [200] * 6


async def test_supervisor_sigterm_stops_the_tree(gateway_tree) -> None:
    proc, port, mport, origin = gateway_tree
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_label_samples_adds_the_worker_label() -> None:
    from gateway.metrics import label_samples

    text = (b"# HELP a_total x\n# TYPE a_total counter\na_total 3.0\n"
            b'b_total{cluster="x",status="200"} 2.0\nc{} 1\n')
    assert label_samples(text, b'worker="1"') == [
        b"# HELP a_total x", b"# TYPE a_total counter", b'a_total{worker="1"} 3.0',
        b'b_total{worker="1",cluster="x",status="200"} 2.0', b'c{worker="1"} 1']
