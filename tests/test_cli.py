"""The ``nfmesh`` program as a user runs it: version, config check, run, demo.

Each test runs the real command in a subprocess and checks what it prints and its exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from dataplane.engine import available_backends
from tests.conftest import free_port
from tests.waiting import HANG_GUARD_S, wait_until_blocking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NFMESH = [sys.executable, "-m", "nfmesh_cli"]


def nfmesh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*NFMESH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    """Return once something accepts on 127.0.0.1:port; fail if ``proc`` exits first."""
    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    wait_until_blocking(listening, interval=0.1, what=f"something listens on {port}")


def test_version_names_the_backend_and_hot_paths() -> None:
    r = nfmesh("version", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["http2_backend"] in ("nghttp2", "h2")
    expected = "nghttp2" if "nghttp2" in available_backends() else "h2"
    assert info["http2_backend"] == expected
    from gateway.build_info import HOT_PATHS

    assert set(info["hot_paths"]) == {label for label, _native, _twin in HOT_PATHS}
    assert set(info["hot_paths"]) >= {"http2 engine", "ngap routing keys", "sbi header rewrite",
                                      "proxy exchange", "scp model c route"}
    text = nfmesh("version").stdout
    assert f"http/2 backend: {expected}" in text


def test_config_check_reports_every_error_with_its_path(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listeners:\n"
        "  - {name: sbi, host: 127.0.0.1, port: 70000, protocol: h2c}\n"
        "  - {name: tls, host: 127.0.0.1, port: 8443, protocol: tls,\n"
        "     tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}}\n"
        "routes:\n"
        "  - {name: r1, match: {path_prefix: /nausf-auth/v1/}, cluster: ausf}\n"
        "bogus: 1\n"
    )
    r = nfmesh("config", "check", str(bad))
    assert r.returncode == 2
    err = r.stderr
    assert "listeners[0].port" in err
    assert "routes[0].cluster" in err and "ausf" in err
    assert "bogus" in err and "unknown field" in err
    files = tmp_path / "files.yaml"
    files.write_text(
        "listeners:\n"
        "  - {name: tls, host: 127.0.0.1, port: 8443, protocol: tls,\n"
        "     tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}}\n"
    )
    r = nfmesh("config", "check", str(files))
    assert r.returncode == 2
    assert "listeners[0].tls.cert" in r.stderr and "not found" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text("listeners: [{name: sbi, host: 127.0.0.1, port: 8080, protocol: h2c}]\n")
    ok = nfmesh("config", "check", str(good))
    assert ok.returncode == 0, ok.stderr


def test_run_refuses_a_bad_config_with_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: [{name: sbi, host: 127.0.0.1, port: notaport, protocol: h2c}]\n")
    r = nfmesh("run", "-c", str(bad), "--workers", "1", timeout=30)
    assert r.returncode == 2
    assert "listeners[0].port" in r.stderr
    missing = nfmesh("run", "-c", str(tmp_path / "absent.yaml"), timeout=30)
    assert missing.returncode == 2


def test_bad_usage_exits_2() -> None:
    assert nfmesh("run", "--listen", "nonsense").returncode == 2
    assert nfmesh("demo", "--duration", "-1").returncode == 2
    assert nfmesh().returncode == 2
    for cmd in ("config", "perf"):  # an action is needed: its help, and exit 2 (issue 15)
        r = nfmesh(cmd)
        assert r.returncode == 2 and f"usage: nfmesh {cmd}" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.interop
@pytest.mark.skipif(not shutil.which("h2load") or not shutil.which("nghttpd"),
                    reason="h2load/nghttpd missing (Debian nghttp2-client, nghttp2-server)")
def test_run_default_model_c_carries_h2load_to_nghttpd(tmp_path) -> None:
    """The foundation's acceptance run: h2load -n 20000 -c 10 -m 10 with Target-apiRoot,
    through `nfmesh run` (no config file) to nghttpd: 0 failed, 0 errored."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "am-data").write_text(json.dumps({"subscribedUeAmbr": {"uplink": "1 Gbps"}}))
    nport, gport = free_port(), free_port()
    origin = subprocess.Popen(["nghttpd", "--no-tls", "-a", "127.0.0.1", "-d", str(tmp_path / "www"), str(nport)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([*NFMESH, "run", "--listen", f"127.0.0.1:{gport}", "--workers", "1"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_port(nport, origin)
        _wait_port(gport, gw)
        r = subprocess.run(
            ["h2load", "-n", "20000", "-c", "10", "-m", "10", "-H",
             f"3gpp-Sbi-Target-apiRoot: http://127.0.0.1:{nport}", "-H", "user-agent: AMF-h2load",
             f"http://127.0.0.1:{gport}/am-data"],
            capture_output=True, text=True, timeout=120)
        assert "20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout
        assert "20000 2xx" in r.stdout
    finally:
        gw.send_signal(signal.SIGTERM)
        origin.terminate()
        assert gw.wait(HANG_GUARD_S) == 0
        origin.wait(HANG_GUARD_S)


def test_demo_json_summary_has_traffic_and_no_errors() -> None:
    r = nfmesh("demo", "--duration", "3", "--json", "--rate", "100", timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("requests", "errors", "p50_ms", "p99_ms", "ngap_messages", "ngap_errors"):
        assert key in summary
    assert summary["requests"] > 100
    assert summary["errors"] == 0
    assert set(summary["pairs"]) == {"AMF->AUSF", "AMF->UDM", "AMF->SMF"}
    assert summary["registry"]["registered_nfs"] == 4
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    # model D spread the UDM requests over both registered UDMs; every producer served some
    assert len(summary["producers"]) == 4 and min(summary["producers"].values()) > 0
    assert sum(summary["producers"].values()) == summary["requests"]
