"""The chart's Grafana dashboard and PrometheusRule alerts, proven with real Prometheus tooling
from Debian's `prometheus` package (scripts/setup.sh installs it):

* `promtool check rules` and `promtool test rules` (tests/prometheus/nfmesh-rules.test.yaml);
* a real Prometheus server scrapes `nfmesh run --workers 2` (registry, a TLS listener, a good
  and a dead cluster) under a bounded load, and every PromQL expression of the dashboard and of
  the alerts (without its threshold) must return data, so no typo'd metric or label survives.
  The N2 expressions need kernel SCTP (absent on most hosts): without it they must still parse
  and name metrics the N2 service exports; promtool's unit tests cover their logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from dataplane.client import H2Client
from tests.conftest import free_port, start_origin
from tests.test_config import write_pem_pair
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "helm/nfmesh/alerts/nfmesh-rules.yaml"
RULE_TESTS = ROOT / "tests/prometheus/nfmesh-rules.test.yaml"
DASHBOARD = ROOT / "helm/nfmesh/dashboards/nfmesh.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
RATE_WINDOW = "15s"  # $__rate_interval in the test: 15 scrapes at 1 s
THRESHOLD = re.compile(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.e+]+\s*$")
METRIC = re.compile(r"\b(nfmesh_[a-z0-9_]+)\b")


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"].strip()) for g in doc["groups"] for r in g["rules"]]


def _value_part(expr: str) -> str:
    """An alert's expression without its trailing comparison: the value it watches."""
    left = THRESHOLD.sub("", expr)
    assert left != expr, f"no threshold to strip in {expr!r}"
    return left


def _kernel_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)).close()
        return True
    except OSError:
        return False


def _is_n2(expr: str) -> bool:
    return "nfmesh_ngap_" in expr or "nfmesh_sctp_" in expr


# --------------------------------------------------------------------------------------------
# promtool

@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus; "
                    "scripts/setup.sh test installs it as root)")
def test_promtool_check_rules() -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_exprs())} rules found" in r.stdout


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_test_rules() -> None:
    r = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # every alert has at least one unit test that expects it to fire
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert {name for name, _ in alert_exprs()} <= tested


def test_every_alert_has_a_threshold_and_the_required_topics() -> None:
    names = {name for name, _ in alert_exprs()}
    for topic in ("ProducerOverloaded", "EndpointsEjected", "HighErrorRatio",
                  "CertificateExpiringSoon", "NfHeartbeatsMissed", "SctpPathDown",
                  "AmfAssociationDown", "WorkerRestarts"):
        assert f"Nfmesh{topic}" in names
    for _, expr in alert_exprs():
        _value_part(expr)


# --------------------------------------------------------------------------------------------
# a real Prometheus scraping a real gateway

def _query(prom: int, expr: str, at: float | None = None) -> dict:
    qs = {"query": expr}
    if at is not None:
        qs["time"] = f"{at:.3f}"
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode(qs)
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


async def _load(port: int, seconds: float, rate: float) -> dict[int, int]:
    """Open-loop mix at ``rate`` req/s for ``seconds``: the good cluster, the dead one (5xx,
    ejection), a consumer past its rate (shed), and an NF registration."""
    statuses: dict[int, int] = {}
    client = H2Client("h2")
    base = f"http://127.0.0.1:{port}"
    profile = {"nfInstanceId": "5a7bc8a4-0000-4000-8000-0000000000ff", "nfType": "UDM",
               "nfStatus": "REGISTERED", "ipv4Addresses": ["127.0.0.3"], "heartBeatTimer": 1}
    r = await client.request("PUT", f"{base}/nnrf-nfm/v1/nf-instances/{profile['nfInstanceId']}",
                             headers=[("user-agent", "UDM-1"), ("content-type", "application/json")],
                             body=json.dumps(profile).encode(), timeout=5)
    statuses[r.status] = statuses.get(r.status, 0) + 1
    top = [("user-agent", "AMF-1"), ("3gpp-sbi-message-priority", "0")]  # exempt from the bucket
    kinds = [("/nausf-auth/v1/ue-authentications", top), ("/nausf-auth/v1/ue-authentications", top),
             ("/nudm-sdm/v2/imsi-001010000000001/am-data", top),
             ("/nausf-auth/v1/ue-authentications", [("user-agent", "AMF-greedy")])]
    tasks: set[asyncio.Task] = set()

    async def one(path: str, extra: list) -> None:
        try:
            resp = await client.request("POST", base + path, body=b"{}", timeout=5, headers=extra)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
        except Exception:  # noqa: BLE001 - counted, the metrics tell the rest
            statuses[0] = statuses.get(0, 0) + 1

    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) - start < seconds:
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
        path, extra = kinds[i % len(kinds)]
        t = asyncio.create_task(one(path, extra))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    await client.close()
    return statuses


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package "
                    "prometheus; scripts/setup.sh test installs it as root)")
async def test_dashboard_and_alert_expressions_return_data(tmp_path: Path) -> None:
    origin = await start_origin("h2", name="ausf-1")
    certs = tmp_path / "certs"
    certs.mkdir()
    crt, key = write_pem_pair(certs, "scp-test")
    port, tls_port, metrics_port, admin_port, prom_port = (free_port() for _ in range(5))
    cfg = {
        "gateway": {"name": "scp-prom", "drain_timeout_s": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": port},
                      {"name": "sbi-tls", "host": "127.0.0.1", "port": tls_port, "protocol": "tls",
                       "tls": {"cert": crt, "key": key}}],
        "clusters": [{"name": "ausf", "endpoints": [{"host": "127.0.0.1", "port": origin.port}]},
                     {"name": "udm", "endpoints": [{"host": "127.0.0.1", "port": 1}],
                      "connect_timeout_s": 0.2}],
        "routes": [{"name": "ausf", "match": {"path_prefix": "/nausf-auth/"}, "cluster": "ausf"},
                   {"name": "udm", "match": {"path_prefix": "/nudm-sdm/"}, "cluster": "udm"}],
        "registry": {"enabled": True, "heartbeat_timer_s": 1, "heartbeat_grace_s": 0,
                     "sweep_interval_s": 0.2},
        "metrics": {"enabled": True, "port": metrics_port},
        "admin": {"port": admin_port},
        # a per-consumer bucket of 2/s: most of AMF-greedy's 10/s at the normal priority are
        # shed (reason consumer_rate); AMF-1 sends in the top band, which the bucket exempts
        "overload": {"consumer": {"rate_per_s": 2, "burst": 2}},
    }
    (tmp_path / "gw.yaml").write_text(json.dumps(cfg))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "nfmesh",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    gw_log = open(tmp_path / "gw.log", "w+")
    gw = subprocess.Popen([sys.executable, "-m", "nfmesh_cli", "run", "-c", str(tmp_path / "gw.yaml"),
                           "--workers", "2"], cwd=ROOT, stdout=gw_log, stderr=gw_log)
    prom_log = open(tmp_path / "prom.log", "w+")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                            cwd=tmp_path, stdout=prom_log, stderr=prom_log)
    try:
        def both_ready() -> bool:
            assert gw.poll() is None, (tmp_path / "gw.log").read_text()
            assert prom.poll() is None, (tmp_path / "prom.log").read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).read()
                urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=5).read()
                return True
            except OSError:  # not listening, or not ready yet
                return False

        await wait_until(both_ready, interval=0.3, what="the gateway and prometheus say ready")
        statuses = await _load(port, seconds=10, rate=40)
        assert statuses.get(200, 0) > 50 and statuses.get(201) == 1, statuses
        names = set(METRIC.findall(
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()))
        exprs = [(f"dashboard: {t}", e.replace("$__rate_interval", RATE_WINDOW))
                 for t, e in dashboard_exprs()]
        exprs += [(f"alert: {n}", _value_part(e)) for n, e in alert_exprs()]
        n2_source = (ROOT / "gateway/n2.py").read_text()
        sctp = _kernel_sctp()
        # the last scrapes and the NF's missed heartbeat: wait until every expression that
        # can have data here has it (on the hang guard, the check below names the empty ones)
        wanted = [e for _, e in exprs if sctp or not _is_n2(e)]
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: all(_query(prom_port, e).get("data", {}).get("result") for e in wanted),
                             60, interval=0.5)
        empty, checked = [], 0
        at = time.time()
        for what, expr in exprs:
            ans = _query(prom_port, expr, at)
            assert ans["status"] == "success", (what, expr, ans)
            if _is_n2(expr) and not sctp:
                for m in METRIC.findall(expr):  # no kernel SCTP here: names checked in the source
                    base = re.sub(r"_(total|bucket|sum|count)$", "", m)
                    assert f'"{base}"' in n2_source, (what, m)
                continue
            for m in METRIC.findall(expr):
                assert m in names, f"{what}: {m} is not exported by the gateway"
            checked += 1
            if not ans["data"]["result"]:
                empty.append((what, expr))
        assert not empty, f"expressions without data: {empty}"
        assert checked >= 25
    finally:
        for p in (prom, gw):
            p.terminate()
        for p in (prom, gw):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        gw_log.close()
        prom_log.close()
        await origin.stop()


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "nfmesh-overview"
    assert dash["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"
    assert os.path.getsize(DASHBOARD) < 1 << 20  # a ConfigMap holds at most 1 MiB
