"""Config reload on SIGHUP: a good file is applied without a restart, a bad one changes nothing.

`nfmesh run -c FILE` as a real process (one worker, then two behind the supervisor); a static
route moves from one origin to another when the file changes and SIGHUP arrives; a broken file
is refused with its field path in the log and the gateway keeps routing on the running config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from dataplane.client import H2Client
from tests.conftest import free_port, start_origin
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(port: int, origin_port: int, workers_registry: bool) -> str:
    cfg = {
        "gateway": {"name": "scp-reload", "drain_timeout_s": 2},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": port, "protocol": "h2c"}],
        "clusters": [{"name": "ausf", "endpoints": [{"host": "127.0.0.1", "port": origin_port}]}],
        "routes": [{"name": "ausf", "match": {"path_prefix": "/nausf-auth/v1/"}, "cluster": "ausf"}],
        "registry": {"enabled": workers_registry},
    }
    return json.dumps(cfg)


async def _get(port: int) -> tuple[int, bytes]:
    client = H2Client("h2")  # a new connection each time: with 2 workers, either may answer
    try:
        r = await client.request("GET", f"http://127.0.0.1:{port}/nausf-auth/v1/x",
                                 headers=[("user-agent", "AMF-t")], timeout=5)
        return r.status, r.body
    finally:
        await client.close()


async def _until(port: int, body: bytes, proc: subprocess.Popen) -> None:
    last: list[object] = [None]

    async def answers() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            last[0] = await _get(port)
        except Exception as exc:  # noqa: BLE001 - not listening yet
            last[0] = exc
        return last[0] == (200, body)

    await wait_until(answers, interval=0.2, what=lambda: f"never got {body!r}; last {last[0]!r}")


@pytest.mark.parametrize(("workers", "registry"), [(1, False), (1, True), (2, True)])
async def test_sighup_applies_a_good_config_and_refuses_a_bad_one(tmp_path, workers, registry) -> None:
    a = await start_origin("h2", name="ausf-a")
    b = await start_origin("h2", name="ausf-b")
    port = free_port()
    path = tmp_path / "gw.yaml"
    path.write_text(_config(port, a.port, workers_registry=registry))
    log = open(tmp_path / "log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "nfmesh_cli", "run", "-c", str(path),
                             "--workers", str(workers)], cwd=ROOT, stdout=log, stderr=log)
    try:
        await _until(port, b"ok ausf-a", proc)
        path.write_text(_config(port, b.port, workers_registry=registry))
        proc.send_signal(signal.SIGHUP)
        await _until(port, b"ok ausf-b", proc)
        # every connection (either worker) now routes to b
        assert {await _get(port) for _ in range(8)} == {(200, b"ok ausf-b")}
        # a broken file: refused, named by path, nothing changes
        bad = json.loads(_config(port, a.port, workers_registry=registry))
        bad["clusters"][0]["endpoints"][0]["port"] = "eighty"
        path.write_text(json.dumps(bad))
        proc.send_signal(signal.SIGHUP)
        def logged() -> bool:
            log.seek(0)
            return "clusters[0].endpoints[0].port" in log.read()

        await wait_until(logged, interval=0.1, what="the refusal is logged")
        log.seek(0)
        text = log.read()
        assert "reload refused" in text and "clusters[0].endpoints[0].port" in text
        assert {await _get(port) for _ in range(8)} == {(200, b"ok ausf-b")}
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        await a.stop()
        await b.stop()
