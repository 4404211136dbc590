"""Start a perf target pinned to one CPU, wait until it accepts connections, stop it cleanly.

Every process the harness starts goes through ``Launched`` so that it is always stopped
(SIGTERM, then SIGKILL after a grace period) and its output is kept in a log file that the
skip reason can quote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class LaunchError(Exception):
    """The process exited or never listened; the message says why (with its log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pinned(argv: list[str], cpu: str | None) -> list[str]:
    """``argv`` under ``taskset -c cpu`` (unchanged when cpu is None or taskset is missing)."""
    if cpu is None or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", cpu, *argv]


class Launched:
    """One started process (its own process group) with its output in ``log_path``."""

    def __init__(self, argv: list[str], log_path: Path, cpu: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            pinned(argv, cpu), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )

    @property
    def pid(self) -> int:
        """The target's pid (taskset execs, so it is the same process)."""
        return self.proc.pid

    def log_text(self, limit: int = 1 << 20) -> str:
        """The start of the process's output (at most ``limit`` bytes)."""
        self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read(limit).decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def wait_listening(self, host: str, port: int, timeout_s: float) -> None:
        """Return once ``host:port`` accepts a TCP connection; ``LaunchError`` otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise LaunchError(f"exited with status {rc}: {self.log_tail()}")
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LaunchError(f"not listening on {host}:{port} after {timeout_s:.0f} s: "
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace_s: float = 3.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; returns the exit status."""
        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.proc.wait(grace_s)
            else:
                # the leader is gone; make sure no child of it lingers in the group
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
