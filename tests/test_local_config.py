"""``config/local.yaml`` runs as written, and ``nfmesh run`` without a file serves the NRF API
(issue 15, item 2).

The gateway is the real program (``python -m nfmesh_cli run``); the only change made to
``config/local.yaml`` is its port numbers (free ones, so that tests can run side by side);
requests go through curl (an HTTP/2 client nobody here wrote).
"""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from tests.local_gateway import (
    NFMESH,
    PORTS,
    ROOT,
    ausf_profile,
    config_copy,
    curl,
    free_ports,
    renumber,
    start,
    stop,
    wait_port,
)
from tests.waiting import wait_until_blocking

pytestmark = pytest.mark.interop


def _register_and_discover(sbi: int, instance: str, producer_port: int) -> None:
    base = f"http://127.0.0.1:{sbi}"
    put = curl("--http2-prior-knowledge", "-i", "-X", "PUT",
               f"{base}/nnrf-nfm/v1/nf-instances/{instance}",
               "-H", "content-type: application/json", "-d", ausf_profile(instance, producer_port))
    assert put.returncode == 0 and put.stdout.startswith("HTTP/2 201"), (put.stdout, put.stderr)
    disc = curl("--http2-prior-knowledge",
                f"{base}/nnrf-disc/v1/nf-instances?target-nf-type=AUSF&requester-nf-type=AMF")
    assert disc.returncode == 0, disc.stderr
    found = json.loads(disc.stdout)["nfInstances"]
    assert [p["nfInstanceId"] for p in found] == [instance]


def test_local_yaml_is_what_it_says() -> None:
    """h2c only, the memory registry with its NRF API, metrics, model C (and D: the registry),
    no file to make first (no TLS, no CA), no etcd, no SCTP; the documented ports."""
    from gateway.config import load_config

    cfg = load_config(str(ROOT / "config" / "local.yaml"))
    assert [(lst.protocol, lst.port) for lst in cfg.listeners] == [("h2c", PORTS["sbi"])]
    assert cfg.registry.enabled and cfg.registry.store == "memory" and cfg.registry.nrf_api
    assert cfg.scp.model_c and cfg.metrics.enabled and cfg.metrics.port == PORTS["metrics"]
    assert cfg.admin.port == PORTS["admin"]
    assert not cfg.ngap.enabled and not cfg.authz.enabled and not cfg.clusters


def test_local_yaml_runs_as_written(tmp_path) -> None:
    ports = free_ports(["sbi", "metrics", "admin", "producer"])
    cfg = config_copy(tmp_path, ports)
    assert (cfg / "local.yaml").read_text() == renumber(
        (ROOT / "config" / "local.yaml").read_text(), ports)
    producer = start([sys.executable, "-m", "perf.capacity_producer", "--port",
                      str(ports["producer"])], tmp_path / "producer.log")
    gw = start([*NFMESH, "run", "-c", str(cfg / "local.yaml")], tmp_path / "gateway.log")
    try:
        wait_port(ports["producer"], producer)
        wait_port(ports["sbi"], gw)
        instance = str(uuid.uuid4())
        _register_and_discover(ports["sbi"], instance, ports["producer"])
        base = f"http://127.0.0.1:{ports['sbi']}"
        # the registry answers discovery at once; the workers' model D snapshots follow it
        # (pushed by the control plane): wait for that (a hang guard, not a speed check)
        answers = []

        def routed_by_model_d():
            answers.append(curl("--http2-prior-knowledge", "-i", "-H",
                                "3gpp-Sbi-Discovery-target-nf-type: AUSF", "-H", "User-Agent: AMF-1",
                                "-H", "content-type: application/json",
                                f"{base}/nausf-auth/v1/ue-authentications", "-d", "{}"))
            return answers[-1] if answers[-1].stdout.startswith("HTTP/2 200") else None

        model_d = wait_until_blocking(routed_by_model_d, interval=0.1, what=lambda: (
            f"the workers route by model D; last answer {answers[-1].stdout!r} {answers[-1].stderr!r}"))
        assert f"3gpp-sbi-producer-id: nfinst={instance}" in model_d.stdout.lower()
        model_c = curl("--http2-prior-knowledge", "-i", "-H",
                       f"3gpp-Sbi-Target-apiRoot: http://127.0.0.1:{ports['producer']}",
                       "-H", "User-Agent: AMF-1", f"{base}/nausf-auth/v1/ue-authentications",
                       "-d", "{}")
        assert model_c.stdout.startswith("HTTP/2 200"), (model_c.stdout, model_c.stderr)
        metrics = curl(f"http://127.0.0.1:{ports['metrics']}/metrics")
        assert "nfmesh_requests" in metrics.stdout, metrics.stdout[:500]
        health = curl("-i", f"http://127.0.0.1:{ports['admin']}/healthz")
        assert health.stdout.startswith("HTTP/1.1 200"), health.stdout[:300]
    finally:
        stop(producer)
        code = stop(gw)
    assert code == 0, (tmp_path / "gateway.log").read_text()[-2000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_without_a_file_serves_the_nrf_api(tmp_path, workers: int) -> None:
    ports = free_ports(["sbi"])
    gw = start([*NFMESH, "run", "--listen", f"127.0.0.1:{ports['sbi']}", "--workers",
                str(workers)], tmp_path / "gateway.log")
    try:
        wait_port(ports["sbi"], gw)
        _register_and_discover(ports["sbi"], str(uuid.uuid4()), 9)
    finally:
        code = stop(gw)
    assert code == 0, (tmp_path / "gateway.log").read_text()[-2000:]
