"""`nfmesh ctl` and `nfmesh top` against a real `nfmesh run` (one worker, registry on):
tables and --json for every command, drain/reload, exit codes; `top` in a pseudo-terminal
(pexpect) draws its screen in place and quits on `q`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from gateway.ctl import quantile_from_buckets
from tests.conftest import free_port
from tests.waiting import wait_until_blocking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF_ID = "5a7bc8a4-0000-4000-8000-0000000000aa"


def _nfmesh(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfmesh_cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, COLUMNS="200"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctl")
    port, admin = free_port(), free_port()
    cfg = {"listeners": [{"name": "sbi", "host": "127.0.0.1", "port": port}],
           "registry": {"enabled": True}, "admin": {"port": admin},
           "gateway": {"name": "scp-ctl", "drain_timeout_s": 1},
           "clusters": [{"name": "ausf", "endpoints": [{"host": "127.0.0.1", "port": 1}]}],
           "routes": [{"name": "ausf-auth", "match": {"path_prefix": "/nausf-auth/"},
                       "cluster": "ausf"}]}
    path = tmp / "gw.yaml"
    path.write_text(json.dumps(cfg))
    log = open(tmp / "log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "nfmesh_cli", "run", "-c", str(path),
                             "--workers", "1"], cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{admin}"
    def ready() -> bool:
        assert proc.poll() is None, open(tmp / "log").read()
        try:
            urllib.request.urlopen(url + "/readyz", timeout=2).read()
            return True
        except OSError:  # not listening, or not ready yet
            return False

    wait_until_blocking(ready, interval=0.2, what=lambda: open(tmp / "log").read())
    profile = {"nfInstanceId": NF_ID, "nfType": "UDM", "nfStatus": "REGISTERED",
               "ipv4Addresses": ["127.0.0.2"],
               "nfServices": [{"serviceInstanceId": "1", "serviceName": "nudm-sdm",
                               "versions": [{"apiVersionInUri": "v2", "apiFullVersion": "2.0.0"}],
                               "scheme": "http", "nfServiceStatus": "REGISTERED",
                               "ipEndPoints": [{"ipv4Address": "127.0.0.2", "port": 8000}]}]}
    curl = ["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge", "-H", "User-Agent: AMF-1"]
    subprocess.run([*curl, "-X", "PUT", "-H", "content-type: application/json", "-d",
                    json.dumps(profile), f"http://127.0.0.1:{port}/nnrf-nfm/v1/nf-instances/{NF_ID}"],
                   check=True, timeout=10)
    # to the dead cluster: an error answer (or a reset), but the endpoint is in the counters
    subprocess.run([*curl, "-d", "{}", f"http://127.0.0.1:{port}/nausf-auth/v1/ue-authentications"],
                   timeout=10)
    yield {"url": url, "proc": proc, "path": path, "port": port}
    proc.terminate()
    proc.wait(20)
    log.close()


def test_status_json_and_table(gateway) -> None:
    r = _nfmesh("ctl", "status", "--json", "--admin", gateway["url"])
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["name"] == "scp-ctl" and st["readiness"]["ready"] is True
    assert st["listeners"] == {"sbi": gateway["port"]} and st["nf_instances"] == 1
    # the option may come before the command too
    r = _nfmesh("ctl", "--admin", gateway["url"], "status")
    assert r.returncode == 0 and "scp-ctl" in r.stdout and "ready" in r.stdout


def test_routes_clusters_nf(gateway) -> None:
    url = gateway["url"]
    r = _nfmesh("ctl", "routes", "--admin", url)
    assert r.returncode == 0 and "ausf-auth" in r.stdout and "/nausf-auth/" in r.stdout
    r = _nfmesh("ctl", "clusters", "--json", "--admin", url)
    cl = json.loads(r.stdout)
    ep = cl["clusters"][0]["endpoints"][0]
    assert ep["address"] == "127.0.0.1:1" and ep["forwarded"] >= 1
    r = _nfmesh("ctl", "clusters", "--admin", url)
    assert r.returncode == 0 and "127.0.0.1:1" in r.stdout and "health" in r.stdout
    r = _nfmesh("ctl", "nf", "list", "--admin", url)
    assert r.returncode == 0 and NF_ID in r.stdout and "UDM" in r.stdout and "nudm-sdm" in r.stdout
    r = _nfmesh("ctl", "nf", "show", NF_ID, "--admin", url)
    assert r.returncode == 0 and "127.0.0.2:8000" in r.stdout
    r = _nfmesh("ctl", "nf", "show", NF_ID, "--json", "--admin", url)
    assert json.loads(r.stdout)["profile"]["nfType"] == "UDM"
    r = _nfmesh("ctl", "nf", "show", "no-such-nf", "--admin", url)
    assert r.returncode == 1 and "404" in r.stderr


def test_unreachable_and_usage() -> None:
    r = _nfmesh("ctl", "status", "--admin", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3 and "no admin API" in r.stderr
    assert _nfmesh("ctl").returncode == 2
    assert _nfmesh("ctl", "frobnicate").returncode == 2


def test_top_renders_in_a_pseudo_terminal(gateway) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "nfmesh_cli", "top", "--admin", gateway["url"],
                                           "--interval", "0.3"], cwd=ROOT, timeout=15,
                          dimensions=(50, 160), env=dict(os.environ, TERM="xterm-256color"),
                          encoding="utf-8")
    try:
        child.expect_exact("\x1b[?1049h")  # rich's full screen: the alternate screen
        child.expect("nfmesh top")
        child.expect("per cluster")
        child.expect("ausf")
        child.expect("NF registrations: 1")
        child.expect("UDM")
        # in place: the alternate screen, and the frame is redrawn (cursor moved home again)
        child.expect(r"nfmesh top")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_reload_then_drain(gateway) -> None:
    url = gateway["url"]
    r = _nfmesh("ctl", "reload", "--admin", url)
    assert r.returncode == 0 and "reloaded" in r.stdout
    good = gateway["path"].read_text()
    gateway["path"].write_text(good.replace('"port": 1}', '"port": 70000}'))
    try:
        r = _nfmesh("ctl", "reload", "--json", "--admin", url)
        assert r.returncode == 1
        errs = json.loads(r.stdout)["errors"]
        assert any("clusters[0].endpoints[0].port" in e for e in errs)
    finally:
        gateway["path"].write_text(good)
    r = _nfmesh("ctl", "drain", "--admin", url)
    assert r.returncode == 0 and "draining" in r.stdout
    r = _nfmesh("ctl", "status", "--json", "--admin", url)
    assert r.returncode == 1 and json.loads(r.stdout)["draining"] is True


def test_quantile_from_buckets() -> None:
    b = {0.001: 0, 0.005: 50, 0.01: 100, float("inf"): 100}
    assert quantile_from_buckets(b, 0.5) == pytest.approx(0.005)
    assert quantile_from_buckets(b, 0.99) == pytest.approx(0.0099)
    assert quantile_from_buckets({float("inf"): 0}, 0.5) is None
