"""Start the real ``nfmesh`` program (and a stand-in producer) for the tests that run what the
README and ``config/local.yaml`` promise: free ports, bounded waits, clean stops."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.waiting import HANG_GUARD_S, wait_until_blocking

ROOT = Path(__file__).resolve().parent.parent
NFMESH = [sys.executable, "-m", "nfmesh_cli"]
# the ports config/local.yaml and the README use, and what each one is
PORTS = {"sbi": 8080, "metrics": 9090, "admin": 9901, "producer": 9000}


def free_ports(names) -> dict[str, int]:
    """Distinct TCP ports free on 127.0.0.1 right now, one per name."""
    socks, out = [], {}
    try:
        for name in names:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            out[name] = s.getsockname()[1]
    finally:
        for s in socks:
            s.close()
    return out


def renumber(text: str, ports: dict[str, int]) -> str:
    """Replace the documented ports (8080, 9090, 9901, 9000) by the test's free ones."""
    for name, default in PORTS.items():
        if name in ports:
            text = re.sub(rf"(?<![\d.]){default}(?!\d)", str(ports[name]), text)
    return text


def config_copy(tmp: Path, ports: dict[str, int]) -> Path:
    """A copy of config/ (local.yaml renumbered; nothing else changed) under ``tmp``."""
    dst = tmp / "config"
    shutil.copytree(ROOT / "config", dst, ignore=shutil.ignore_patterns("__pycache__"))
    local = dst / "local.yaml"
    local.write_text(renumber(local.read_text(), ports))
    return dst


def wait_port(port: int, proc: subprocess.Popen, seconds: float = HANG_GUARD_S) -> None:
    """Return once something accepts on 127.0.0.1:port; fail if ``proc`` exits first."""
    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {read_output(proc)}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    wait_until_blocking(listening, seconds, what=lambda: f"something listens on {port}: {read_output(proc)}")


def read_output(proc: subprocess.Popen) -> str:
    out = getattr(proc, "log_path", None)
    return Path(out).read_text(errors="replace")[-3000:] if out and Path(out).exists() else ""


def start(argv: list[str] | str, log: Path, *, shell: bool = False,
          env: dict | None = None) -> subprocess.Popen:
    """Start a long-running program in its own process group, output to ``log``."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, shell=shell,
                                start_new_session=True, env=env,
                                executable="/bin/bash" if shell else None)
    proc.log_path = str(log)  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, seconds: float = 15.0) -> int:
    """SIGTERM (the gateway drains), then SIGKILL after ``seconds``; the exit status."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def curl(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout + 5)


def ausf_profile(instance: str, producer_port: int) -> str:
    """A minimal NFProfile (TS 29.510) of an AUSF serving nausf-auth on 127.0.0.1."""
    return json.dumps({
        "nfInstanceId": instance, "nfType": "AUSF", "nfStatus": "REGISTERED",
        "ipv4Addresses": ["127.0.0.1"],
        "nfServices": [{"serviceInstanceId": "auth-1", "serviceName": "nausf-auth",
                        "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}],
                        "scheme": "http", "nfServiceStatus": "REGISTERED",
                        "ipEndPoints": [{"ipv4Address": "127.0.0.1", "port": producer_port}]}]})
