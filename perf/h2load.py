"""Drive nghttp2's ``h2load`` and read its results: the load half of ``nfmesh perf compare``.

h2load is the independent load generator every peer is measured with.  Its summary gives
requests/s and success counts; its ``--log-file`` (one line per request: start µs since the
epoch, status, µs until the end of the response) gives the latency distribution, from which
the harness computes percentiles and the CDF plots.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class H2loadError(Exception):
    """h2load failed or printed something the parser does not understand."""


@dataclass(slots=True)
class H2loadSummary:
    """The numbers of h2load's closing summary."""

    duration_s: float
    rps: float
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int


def parse_summary(text: str) -> H2loadSummary:
    """Parse h2load's stdout; ``H2loadError`` names what is missing."""
    fin = _FINISHED.search(text)
    req = _REQUESTS.search(text)
    st = _STATUS.search(text)
    missing = [n for n, m in (("finished", fin), ("requests", req), ("status codes", st)) if not m]
    if missing:
        tail = text.strip().splitlines()[-3:]
        raise H2loadError(f"h2load output lacks {', '.join(missing)} line(s); last lines: {tail}")
    assert fin and req and st
    return H2loadSummary(
        float(fin.group(1)) * _UNIT_S[fin.group(2)],
        float(fin.group(3)),
        *(int(g) for g in req.groups()),
        *(int(g) for g in st.groups()),
    )


@dataclass(slots=True)
class H2loadLog:
    """Per-request records of ``--log-file``."""

    latencies_us: list[int] = field(default_factory=list)  # successful (2xx) requests only
    statuses: dict[int, int] = field(default_factory=dict)
    first_start_us: int = 0
    last_end_us: int = 0


def parse_log(text: str) -> H2loadLog:
    """Parse an h2load ``--log-file``.  Status -1 marks a request that got no response."""
    log = H2loadLog()
    first = None
    last = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise H2loadError(f"log line {lineno}: expected 3 tab-separated columns: {line!r}")
        try:
            start, status, dur = int(parts[0]), int(parts[1]), int(parts[2])
        except ValueError as exc:
            raise H2loadError(f"log line {lineno}: not integers: {line!r}") from exc
        log.statuses[status] = log.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            log.latencies_us.append(dur)
        first = start if first is None else min(first, start)
        last = max(last, start + dur)
    log.first_start_us = first or 0
    log.last_end_us = last
    return log


@dataclass(slots=True)
class H2loadRun:
    """One h2load invocation's results."""

    argv: list[str]
    summary: H2loadSummary
    log: H2loadLog


def build_argv(
    url: str,
    *,
    clients: int = 10,
    streams: int = 10,
    duration_s: float | None = None,
    requests: int | None = None,
    rps_per_client: int | None = None,
    data_file: Path | None = None,
    headers: list[str] | tuple[str, ...] = (),
    log_file: Path | None = None,
    threads: int = 1,
    h2load: str = "h2load",
) -> list[str]:
    """The h2load command line.  Exactly one of ``duration_s`` / ``requests`` bounds it."""
    if (duration_s is None) == (requests is None):
        raise ValueError("give exactly one of duration_s or requests")
    argv = [h2load, "-c", str(clients), "-m", str(streams), "-t", str(threads)]
    if duration_s is not None:
        argv += ["-D", f"{max(1, round(duration_s * 1000))}ms"]
    else:
        argv += ["-n", str(requests)]
    if rps_per_client:
        argv += [f"--rps={rps_per_client}"]
    if data_file is not None:
        argv += ["-d", str(data_file)]
    for h in headers:
        argv += ["-H", h]
    if log_file is not None:
        argv += [f"--log-file={log_file}"]
    argv.append(url)
    return argv


def run_h2load(
    argv: list[str], log_file: Path | None, timeout_s: float, pin: str | None = None
) -> H2loadRun:
    """Run h2load (optionally under ``taskset -c pin``) and parse summary and log.  h2load
    appends to an existing log file, so an old one is removed first."""
    if log_file is not None and log_file.exists():
        log_file.unlink()
    cmd = (["taskset", "-c", pin] if pin is not None else []) + argv
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise H2loadError(f"h2load did not finish within {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        raise H2loadError(f"h2load exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    summary = parse_summary(proc.stdout)
    log = H2loadLog()
    if log_file is not None and log_file.exists():
        log = parse_log(log_file.read_text())
    return H2loadRun(argv=argv, summary=summary, log=log)
