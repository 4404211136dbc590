"""``nfmesh perf compare``: nfmesh beside HAProxy, nghttpx and Envoy, same load, same core.

One run: start the backend (``nghttpd --no-tls``, fixed 227-byte JSON answer) on the load
core; then, for each repeat and each target in a rotated order (so slow drifts of the shared
machine spread over all targets), start the target pinned to its own core (``taskset``),
check that it relays (every warm-up request must answer 2xx), and drive with h2load:

* memory first (``perf.memory_probe``): RSS growth per idle HTTP/2 connection and per open
  stream (streams held open by stopping the backend);
* ``closed``: ``-c 10 -m 10`` POSTs of a 142-byte JSON body for a fixed time: requests/s,
  latency, and the target's CPU µs per request (``perf.proc_stats``: CPU time of its process
  tree between the two ends of the phase, divided by the requests answered 2xx), RSS;
* ``rate_<N>``: a total rate with h2load ``--rps`` per client (10 streams): latency at load.
  h2load's rate timer fires at most every 10 ms (``max(0.01, 1/rps)`` in h2load.cc), so each
  client sends ``rps/100`` requests at once per tick: at 10k req/s the target gets a burst of
  100 requests every 10 ms (seen in the per-request logs: bursts of 100, 10.2 ms apart), and
  the p99 measures how fast the chain clears a burst: the target's work between the last
  client read and the last response, and, on a 2-core machine where h2load and the backend
  share the load core, that core's queue (the larger part there);
* ``single``: one connection, one stream: the latency floor;
* ``loadgen_<N>`` (unless ``--no-loadgen``; off in ``--quick``): the project's own generator
  (``perf.loadgen``) open loop at the same rates, latency from the intended send time, so a
  stall of the target is not hidden by the generator waiting for it (h2load's ``--rps``
  measures from the actual send).

Ratios to HAProxy are computed per phase, and the issue's goals (CPU ≤ 1.2x HAProxy on h2c,
≤ 1.5x with ``--tls``; p99 at 10k req/s no worse; p50 at one stream ≤ 1.5x) are evaluated in
``goals``.  ``--nfmesh-variant`` adds nfmesh targets with config changes (what does the access
log cost?) to the same interleaved run.

Results go to stdout as a table (or, with ``--json``, as exactly one JSON object whose
``targets`` map has every target, a skipped one as ``{"skipped": reason}``) and to a report
folder (Markdown, PNG plots, ``results.json``).  Progress goes to stderr.  Every run is bounded
in requests and time, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from perf.h2load import H2loadError, H2loadRun, build_argv, run_h2load
from perf.latency_stats import CDF_PERCENTILES, cdf_points, summarize
from perf.peers import Peer, TargetSpec, all_peers
from perf.peers.backend import (
    RESPONSE_PATH,
    nghttpd_unavailable,
    request_body,
    start_nghttpd,
)
from perf.peers.launcher import Launched, LaunchError, free_port, pinned
from perf.peers.nfmesh import child_env
from perf.peers.tls_certs import TlsFiles, make_self_signed
from perf.proc_stats import ProcessGone, TreeMeter

REFERENCE = "haproxy"


@dataclass(slots=True)
class CompareSettings:
    """Everything that shapes one comparison run (recorded in the results)."""

    targets: list[str]
    repeats: int = 3
    closed_s: float = 10.0
    rates: list[int] = field(default_factory=lambda: [1000, 10000])
    rate_s: float = 5.0
    single_requests: int = 2000
    warmup_requests: int = 2000
    clients: int = 10
    streams: int = 10
    tls: bool = False
    target_cpu: str | None = None
    load_cpu: str | None = None
    loadgen: bool = True
    memory_connections: int = 100  # 0: no memory probe
    memory_streams: int = 500
    nfmesh_set: list[str] = field(default_factory=list)  # recorded: what nfmesh ran with
    deadline_s: float | None = None  # no target is started after this (quick: stay < 60 s)
    start_timeout_s: float = 15.0
    warmup_timeout_s: float = 15.0  # a target that hangs is given up after this

    @classmethod
    def quick(cls, targets: list[str]) -> CompareSettings:
        """Fits 60 s for four targets on a 2-core machine."""
        return cls(targets=targets, repeats=1, closed_s=2.5, rates=[1000], rate_s=1.5,
                   single_requests=300, warmup_requests=500, start_timeout_s=8.0,
                   warmup_timeout_s=6.0, loadgen=False, memory_connections=40,
                   memory_streams=160, deadline_s=50.0)


def choose_cpus() -> tuple[str | None, str | None]:
    """(target core, load core): the last and first CPU we may run on; None when only one."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return str(cpus[-1]), str(cpus[0])


@dataclass(slots=True)
class Measurement:
    """One load phase against one target in one repeat."""

    requests: int
    failed: int
    rps: float
    cpu_us: float
    rss_bytes: int
    latencies_us: list[int]
    hdr: str = ""  # an encoded HdrHistogram (loadgen phases) instead of latencies_us
    service_ms: tuple[float, float] | None = None  # loadgen: p50, p99 from the actual send


@dataclass(slots=True)
class TargetResults:
    """All repeats of one target, by phase name."""

    phases: dict[str, list[Measurement]] = field(default_factory=dict)
    memory: list[dict] = field(default_factory=list)
    run_info: list[dict] = field(default_factory=list)  # per repeat, from the target's log
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None


_T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[perf compare {time.monotonic() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


class Harness:
    """Runs the phases of one comparison; owns the backend and the work folder."""

    def __init__(self, settings: CompareSettings, workdir: Path, peers: list[Peer]) -> None:
        self.s = settings
        self.workdir = workdir
        self.peers = {p.name: p for p in peers}
        self.backend_port = free_port()
        self.body_file = workdir / "request.json"
        self.body_file.write_bytes(request_body())
        self.tls: TlsFiles | None = make_self_signed(workdir / "tls") if settings.tls else None
        self.results: dict[str, TargetResults] = {name: TargetResults() for name in settings.targets}
        self.backend: Launched | None = None
        self.loadavg_at_start = round(os.getloadavg()[0], 2)

    def headers(self) -> list[str]:
        return [
            f"3gpp-sbi-target-apiroot: http://127.0.0.1:{self.backend_port}",
            "content-type: application/json",
            "user-agent: AMF-nfmesh-perf",
        ]

    def _h2load(self, url: str, tag: str, *, clients: int, streams: int,
                duration_s: float | None = None, requests: int | None = None,
                rps_per_client: int | None = None, bound_s: float | None = None) -> H2loadRun:
        log_file = self.workdir / f"h2load-{tag}.tsv"
        if log_file.exists():
            log_file.unlink()
        argv = build_argv(
            url, clients=clients, streams=streams, duration_s=duration_s, requests=requests,
            rps_per_client=rps_per_client, data_file=self.body_file, headers=self.headers(),
            log_file=log_file,
        )
        bound = bound_s or (duration_s or 0) + (requests or 0) / 500 + 20
        try:
            return run_h2load(argv, log_file, timeout_s=bound, pin=self.s.load_cpu)
        finally:
            if log_file.exists():
                log_file.unlink()

    def _measure(self, pid: int, url: str, tag: str, **load: int | float | None) -> Measurement:
        meter = TreeMeter(pid)
        meter.start()
        run = self._h2load(url, tag, **load)  # type: ignore[arg-type]
        sample = meter.stop()
        done = run.summary.succeeded
        return Measurement(
            requests=done,
            failed=run.summary.failed + run.summary.errored + run.summary.timeout,
            rps=run.summary.rps,
            cpu_us=sample.cpu_us,
            rss_bytes=sample.rss_bytes,
            latencies_us=run.log.latencies_us,
        )

    def _memory(self, name: str, pid: int, port: int) -> None:
        from perf.memory_probe import run_probe

        assert self.backend is not None
        headers = [
            (b":method", b"POST"), (b":scheme", b"https" if self.tls else b"http"),
            (b":authority", f"127.0.0.1:{port}".encode()), (b":path", RESPONSE_PATH.encode()),
            *((k.encode(), v.strip().encode()) for k, v in (h.split(":", 1) for h in self.headers())),
        ]
        try:
            r = run_probe("127.0.0.1", port, pid, self.backend.pid, headers=headers,
                          body=request_body(), tls=self.tls is not None,
                          connections=self.s.memory_connections, streams=self.s.memory_streams)
        except Exception as exc:  # the probe is an extra: its failure does not end the run
            self.results[name].errors.append(f"memory probe: {type(exc).__name__}: {exc}")
            _log(f"  {name} memory probe failed: {exc!r}")
            return
        self.results[name].memory.append({
            "bytes_per_idle_connection": round(r.bytes_per_idle_connection),
            "bytes_per_open_stream": round(r.bytes_per_open_stream),
            "streams_answered": r.streams_answered,
        })
        _log(f"  {name} memory: {r.bytes_per_idle_connection / 1024:.1f} KiB per idle "
             f"connection, {r.bytes_per_open_stream / 1024:.1f} KiB per open stream "
             f"({r.streams_answered}/{r.streams} answered after)")

    def _note(self, name: str, phase: str, m: Measurement) -> None:
        self.results[name].phases.setdefault(phase, []).append(m)
        _log(f"  {name} {phase}: {m.rps:.0f} req/s, "
             f"{m.cpu_us / max(1, m.requests):.1f} us CPU/req, failed {m.failed}")

    def _measure_loadgen(self, pid: int, url: str, rate: int) -> Measurement:
        """The project's generator, open loop at ``rate``, in its own process on the load
        core; the target's CPU measured around it."""
        argv = [
            sys.executable, "-m", "perf.loadgen", "--url", url, "--scenario", "ausf-auth",
            "--rate", str(rate), "--duration", str(self.s.rate_s), "--connections",
            str(self.s.clients), "--drain", "5", "--json", "--hdr", "--insecure",
            "--var", f"target_apiroot=http://127.0.0.1:{self.backend_port}",
        ]
        meter = TreeMeter(pid)
        meter.start()
        try:
            proc = subprocess.run(pinned(argv, self.s.load_cpu), capture_output=True, text=True,
                                  timeout=self.s.rate_s + 30, env=child_env())
        except subprocess.TimeoutExpired as exc:
            raise LaunchError(f"loadgen at {rate} req/s did not finish") from exc
        sample = meter.stop()
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            raise LaunchError(f"loadgen at {rate} req/s exited {proc.returncode}: "
                              f"{proc.stderr.strip()[-300:]}") from None
        errors = sum(out["errors"].values()) + out["timeouts"] + out["not_sent"]
        service = out.get("service_latency", {})
        return Measurement(
            requests=out["answered"] - out["unexpected_status"],
            failed=errors + out["unexpected_status"], rps=out["rps"],
            cpu_us=sample.cpu_us, rss_bytes=sample.rss_bytes, latencies_us=[], hdr=out["hdr"],
            service_ms=(service["p50_ms"], service["p99_ms"]) if service.get("count") else None,
        )

    def run_target(self, name: str, repeat: int) -> None:
        peer = self.peers[name]
        res = self.results[name]
        port = free_port()
        tdir = self.workdir / f"{name}-{repeat}"
        tdir.mkdir()
        spec = TargetSpec(listen_port=port, backend_port=self.backend_port, workdir=tdir,
                          tls=self.tls)
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://127.0.0.1:{port}{RESPONSE_PATH}"
        try:
            argv = peer.command(spec)
        except Exception as exc:  # a peer's config writer failing is that peer's problem
            res.errors.append(f"config: {exc}")
            return
        _log(f"repeat {repeat + 1}: {name}: {' '.join(argv[:4])} ...")
        target = Launched(argv, tdir / "target.log", cpu=self.s.target_cpu, env=child_env())
        try:
            target.wait_listening("127.0.0.1", port, self.s.start_timeout_s)
            warm = self._h2load(url, f"{name}-warm", clients=self.s.clients, streams=self.s.streams,
                                requests=self.s.warmup_requests, bound_s=self.s.warmup_timeout_s)
            ok = warm.summary.status_2xx
            if ok != self.s.warmup_requests:
                raise LaunchError(
                    f"warm-up: {ok}/{self.s.warmup_requests} requests answered 2xx "
                    f"(4xx {warm.summary.status_4xx}, 5xx {warm.summary.status_5xx}, "
                    f"failed {warm.summary.failed}): {target.log_tail()}"
                )
            info = getattr(peer, "run_info", None)
            if info is not None:
                res.run_info.append(info(target.log_text()))
                _log(f"  {name}: {res.run_info[-1]}")
            if self.s.memory_connections:
                self._memory(name, target.pid, port)
            phases: list[tuple[str, dict]] = [
                ("closed", {"clients": self.s.clients, "streams": self.s.streams,
                            "duration_s": self.s.closed_s}),
            ]
            for rate in self.s.rates:
                per_client = max(1, round(rate / self.s.clients))
                phases.append((f"rate_{rate}", {"clients": self.s.clients, "streams": self.s.streams,
                                                "duration_s": self.s.rate_s,
                                                "rps_per_client": per_client}))
            phases.append(("single", {"clients": 1, "streams": 1,
                                      "requests": self.s.single_requests}))
            for phase, load in phases:
                m = self._measure(target.pid, url, f"{name}-{phase}", **load)
                self._note(name, phase, m)
            if self.s.loadgen:
                for rate in self.s.rates:
                    self._note(name, f"loadgen_{rate}", self._measure_loadgen(target.pid, url, rate))
        except (LaunchError, H2loadError, ProcessGone, OSError, TimeoutError) as exc:
            tail = target.log_tail(3) if not isinstance(exc, LaunchError) else ""
            res.errors.append(f"repeat {repeat + 1}: {exc}" + (f"; target log: {tail}" if tail else ""))
            _log(f"  {name}: {exc}")
        finally:
            rc = target.stop()
            if rc not in (0, -15, 143, None) and not res.errors:
                res.errors.append(f"repeat {repeat + 1}: exited with status {rc} when stopped")

    def run(self) -> dict:
        """Run every repeat of every available target; return the results object."""
        started = datetime.datetime.now(datetime.UTC)
        runnable = []
        for name in self.s.targets:
            peer = self.peers.get(name)
            why = "unknown target" if peer is None else peer.unavailable(self.s.tls)
            if why:
                self.results[name].skipped = why
                _log(f"{name}: skipped: {why}")
            else:
                runnable.append(name)
        why_backend = nghttpd_unavailable()
        if why_backend:
            for name in runnable:
                self.results[name].skipped = f"no backend: {why_backend}"
            runnable = []
        if runnable:
            backend = self.backend = start_nghttpd(self.backend_port, self.workdir,
                                                   cpu=self.s.load_cpu)
            try:
                t0 = time.monotonic()
                for repeat in range(self.s.repeats):
                    k = repeat % len(runnable)
                    for name in runnable[k:] + runnable[:k]:
                        if self.s.deadline_s and time.monotonic() - t0 > self.s.deadline_s:
                            self.results[name].errors.append(
                                f"repeat {repeat + 1}: not run, past the "
                                f"{self.s.deadline_s:.0f} s time budget")
                            continue
                        self.run_target(name, repeat)
            finally:
                backend.stop()
        return self.results_object(started)

    def results_object(self, started: datetime.datetime) -> dict:
        targets = {name: target_summary(self.results[name]) for name in self.s.targets}
        add_ratios(targets, REFERENCE)
        machine = machine_info()
        machine["loadavg_1m_at_start"] = self.loadavg_at_start
        return {
            "targets": targets,
            "goals": goals(targets, self.s.tls),
            "settings": settings_dict(self.s),
            "machine": machine,
            "started": started.isoformat(timespec="seconds"),
            "duration_s": round(
                (datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        }


def phase_summary(ms: list[Measurement]) -> dict:
    """Pool the repeats of one phase: CPU per request over all requests, percentiles over all
    samples, the median of the per-repeat request rates.  Each repeat's own p99 is listed
    beside (``per_repeat_p99_ms``): on a shared machine one noisy repeat can carry the
    pooled tail alone, and the list shows when it did."""
    requests = sum(m.requests for m in ms)
    if any(m.hdr for m in ms):
        lat, cdf = hdr_latency([m.hdr for m in ms if m.hdr])
    else:
        samples = [x for m in ms for x in m.latencies_us]
        lat, cdf = summarize(samples), cdf_points(samples)
    return {
        "rps": round(statistics.median(m.rps for m in ms), 1),
        "requests": requests,
        "failed": sum(m.failed for m in ms),
        "cpu_us_per_req": round(sum(m.cpu_us for m in ms) / requests, 2) if requests else None,
        "rss_mb": round(max(m.rss_bytes for m in ms) / (1 << 20), 1),
        "p50_ms": _round(lat["p50_ms"]),
        "p90_ms": _round(lat["p90_ms"]),
        "p99_ms": _round(lat["p99_ms"]),
        "p999_ms": _round(lat["p999_ms"]),
        "max_ms": _round(lat["max_ms"]),
        "cdf": [(q, _round(v)) for q, v in cdf],
        "per_repeat_cpu_us_per_req": [
            round(m.cpu_us / m.requests, 2) if m.requests else None for m in ms
        ],
        "per_repeat_rps": [round(m.rps, 1) for m in ms],
        "per_repeat_p99_ms": [_round(repeat_p99_ms(m)) for m in ms],
        **service_summary(ms),
    }


def repeat_p99_ms(m: Measurement) -> float:
    """One repeat's p99 (ms), from its histogram or its samples; NaN without either."""
    if m.hdr:
        return hdr_latency([m.hdr])[0]["p99_ms"]
    if m.latencies_us:
        return summarize(m.latencies_us)["p99_ms"]
    return math.nan


def service_summary(ms: list[Measurement]) -> dict:
    """For loadgen phases: the median over repeats of p50/p99 measured from the actual send
    (beside the latency from the intended time); a large gap means requests waited to be
    sent, in the target's stream limit or in the generator itself."""
    svc = [m.service_ms for m in ms if m.service_ms is not None]
    if not svc:
        return {}
    return {"service_p50_ms": round(statistics.median(p50 for p50, _ in svc), 4),
            "service_p99_ms": round(statistics.median(p99 for _, p99 in svc), 4)}


def hdr_latency(encoded: list[str]) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Percentiles (ms) and CDF points of merged encoded HdrHistograms."""
    from perf.loadgen import new_histogram

    h = new_histogram()
    for e in encoded:
        h.decode_and_add(e)
    ms = 1000.0
    lat = {"count": h.get_total_count()}
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        lat[key] = h.get_value_at_percentile(q) / ms
    lat["max_ms"] = h.get_max_value() / ms
    cdf = [(q, h.get_value_at_percentile(q) / ms if q > 0 else h.get_min_value() / ms)
           for q in CDF_PERCENTILES]
    return lat, cdf


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def target_summary(res: TargetResults) -> dict:
    """One target's JSON object: the closed-loop numbers at top level, every phase below."""
    if res.skipped:
        return {"skipped": res.skipped}
    if "closed" not in res.phases:
        reason = "; ".join(grouped_errors(res.errors)) or "no measurement"
        return {"skipped": f"failed: {reason}"}
    phases = {name: phase_summary(ms) for name, ms in res.phases.items()}
    closed = phases["closed"]
    out = {k: closed[k] for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mb",
                                  "requests", "failed")}
    out["phases"] = phases
    if res.run_info:
        out["run_info"] = res.run_info
        if any(i != res.run_info[0] for i in res.run_info):
            out.setdefault("errors", []).append(
                f"the target ran differently between repeats: {res.run_info}")
    if res.memory:
        out["memory"] = {
            key: statistics.median(m[key] for m in res.memory)
            for key in ("bytes_per_idle_connection", "bytes_per_open_stream")
        }
    if res.errors:
        out["errors"] = grouped_errors(res.errors) + out.get("errors", [])
    return out


def grouped_errors(errors: list[str]) -> list[str]:
    """``repeat N: msg`` lines with the same message folded into ``repeats 1, 2: msg``."""
    by_msg: dict[str, list[str]] = {}
    for e in errors:
        head, sep, msg = e.partition(": ")
        if sep and head.startswith("repeat ") and head[7:].isdigit():
            by_msg.setdefault(msg, []).append(head[7:])
        else:
            by_msg.setdefault(e, [])
    out = []
    for msg, reps in by_msg.items():
        if not reps:
            out.append(msg)
        else:
            out.append(f"repeat{'s' if len(reps) > 1 else ''} {', '.join(reps)}: {msg}")
    return out


def add_ratios(targets: dict[str, dict], reference: str) -> None:
    """``ratio_<metric>_to_<reference>`` for CPU per request and latencies (lower is better)."""
    ref = targets.get(reference, {})
    for t in targets.values():
        if "skipped" in t:
            continue
        for metric, key in (("cpu_us_per_req", "ratio_cpu_to"), ("p99_ms", "ratio_p99_to"),
                            ("p50_ms", "ratio_p50_to")):
            a, b = t.get(metric), ref.get(metric)
            t[f"{key}_{reference}"] = round(a / b, 3) if a and b else None
        for phase, ph in t.get("phases", {}).items():
            ref_ph = ref.get("phases", {}).get(phase, {})
            for metric in ("cpu_us_per_req", "p99_ms", "p50_ms"):
                a, b = ph.get(metric), ref_ph.get(metric)
                ph[f"ratio_{metric}_to_{reference}"] = round(a / b, 3) if a and b else None


def goals(targets: dict[str, dict], tls: bool, subject: str = "nfmesh") -> list[dict]:
    """The issue's speed goals for ``subject`` against HAProxy, each with its measured ratio
    and whether it is met (None where a side was not measured)."""
    t = targets.get(subject, {})
    ph = t.get("phases", {})

    def ratio(phase: str, metric: str) -> float | None:
        return ph.get(phase, {}).get(f"ratio_{metric}_to_{REFERENCE}")

    cpu_limit = 1.5 if tls else 1.2
    rows = [
        (f"CPU µs per request ≤ {cpu_limit}x HAProxy ({'TLS' if tls else 'h2c'} frontend, "
         "closed loop)", ratio("closed", "cpu_us_per_req"), cpu_limit),
        ("p99 at 10k req/s no worse than HAProxy (h2load --rps: 100-request bursts every 10 ms)",
         ratio("rate_10000", "p99_ms"), 1.0),
        ("p99 at a fixed 10k req/s no worse than HAProxy (loadgen: open loop, from intended "
         "time)",
         ratio("loadgen_10000", "p99_ms"), 1.0),
        ("p50 at one stream ≤ 1.5x HAProxy", ratio("single", "p50_ms"), 1.5),
    ]
    return [{"goal": g, "ratio": r, "limit": lim, "met": None if r is None else r <= lim}
            for g, r, lim in rows]


def settings_dict(s: CompareSettings) -> dict:
    return {
        "targets": s.targets, "repeats": s.repeats, "closed_s": s.closed_s, "rates": s.rates,
        "rate_s": s.rate_s, "single_requests": s.single_requests, "clients": s.clients,
        "streams": s.streams, "tls": s.tls, "loadgen": s.loadgen,
        "memory_connections": s.memory_connections, "memory_streams": s.memory_streams,
        "nfmesh_set": list(s.nfmesh_set), "target_cpu": s.target_cpu, "load_cpu": s.load_cpu,
        "request_bytes": len(request_body()), "backend": "nghttpd --no-tls",
    }


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}  # other work on the machine


def format_table(result: dict) -> str:
    """A plain-text table of the headline numbers."""
    rows = [("target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "RSS MB", "CPU x haproxy")]
    for name, t in result["targets"].items():
        if "skipped" in t:
            rows.append((name, f"skipped: {t['skipped']}", "", "", "", "", ""))
            continue
        rows.append((name, f"{t['rps']:.0f}", _fmt(t["p50_ms"]), _fmt(t["p99_ms"]),
                     _fmt(t["cpu_us_per_req"], 1), _fmt(t["rss_mb"], 1),
                     _fmt(t.get(f"ratio_cpu_to_{REFERENCE}"), 2)))
    measured = [r for r in rows if not r[1].startswith("skipped")]
    widths = [max(len(r[i]) for r in (rows if i == 0 else measured)) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        if r[1].startswith("skipped"):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nfmesh perf compare",
        description="Measure nfmesh beside HAProxy, nghttpx and Envoy: each pinned to one core, "
        "same backend (nghttpd) and load (h2load), CPU per request from /proc.",
    )
    p.add_argument("--quick", action="store_true", help="one short repeat (under 60 s)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--out", type=Path, help="report folder (default perf-reports/<timestamp>/)")
    p.add_argument("--no-report", action="store_true", help="write no report folder")
    p.add_argument("--targets", default="nfmesh,haproxy,nghttpx,envoy",
                   help="comma-separated targets (default: all four)")
    p.add_argument("--repeats", type=int, help="interleaved repeats (default 3, quick 1)")
    p.add_argument("--duration", type=float, help="seconds of the closed-loop phase")
    p.add_argument("--rates", help="comma-separated total fixed rates in req/s (default 1000,10000)")
    p.add_argument("--rate-duration", type=float, help="seconds of each fixed-rate phase")
    p.add_argument("--tls", action="store_true", help="TLS (ALPN h2) on the targets' frontend")
    p.add_argument("--loadgen", action=argparse.BooleanOptionalAction, default=None,
                   help="also drive the fixed rates with the project's generator "
                   "(default: on, off with --quick)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the per-connection / per-stream memory probe")
    p.add_argument("--nfmesh-variant", action="append", default=[],
                   metavar="NAME:PATH=VALUE[,PATH=VALUE]",
                   help="an extra nfmesh target with config changes, measured in the same run, "
                   "e.g. 'nfmesh-nolog:logging.access_log=false' (repeatable)")
    p.add_argument("--nfmesh-cmd", help="command template for nfmesh (see perf/peers/nfmesh.py)")
    p.add_argument("--nfmesh-tls-args", help="extra nfmesh arguments for --tls runs")
    p.add_argument("--nfmesh-set", action="append", default=[], metavar="PATH=VALUE",
                   help="change a field of nfmesh's generated config, e.g. "
                   "logging.access_log=false (repeatable)")
    return p


def nfmesh_variants(args: argparse.Namespace) -> list[Peer]:
    """The ``--nfmesh-variant`` targets: nfmesh with the base ``--nfmesh-set`` changes plus
    their own."""
    from perf.peers.nfmesh import Nfmesh

    out: list[Peer] = []
    for spec in args.nfmesh_variant:
        name, sep, changes = spec.partition(":")
        if not sep or not name or not changes or name in {"nfmesh", "haproxy", "nghttpx", "envoy"}:
            raise ValueError(f"--nfmesh-variant: expected NEWNAME:PATH=VALUE[,...], got {spec!r}")
        fields = [*args.nfmesh_set, *(c for c in changes.split(",") if c)]
        out.append(Nfmesh(args.nfmesh_cmd, args.nfmesh_tls_args, fields, name=name))
    return out


def settings_from_args(args: argparse.Namespace) -> CompareSettings:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise ValueError("--targets names no target")
    s = CompareSettings.quick(targets) if args.quick else CompareSettings(targets=targets)
    if args.repeats is not None:
        if not 1 <= args.repeats <= 20:
            raise ValueError("--repeats must be within 1..20")
        s.repeats = args.repeats
    if args.duration is not None:
        if not 0.5 <= args.duration <= 300:
            raise ValueError("--duration must be within 0.5..300 s")
        s.closed_s = args.duration
    if args.rate_duration is not None:
        if not 0.5 <= args.rate_duration <= 300:
            raise ValueError("--rate-duration must be within 0.5..300 s")
        s.rate_s = args.rate_duration
    if args.rates is not None:
        try:
            s.rates = [int(r) for r in args.rates.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"--rates: expected integers, got {args.rates!r}") from None
        if any(not 10 <= r <= 1_000_000 for r in s.rates):
            raise ValueError("--rates: each rate must be within 10..1000000 req/s")
    s.tls = args.tls
    s.nfmesh_set = list(args.nfmesh_set)
    if args.no_memory:
        s.memory_connections = 0
    if args.loadgen is not None:
        s.loadgen = args.loadgen
    s.target_cpu, s.load_cpu = choose_cpus()
    return s


def main(argv: list[str]) -> int:
    """Entry point of ``nfmesh perf compare``; 0 when every runnable target was measured."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"nfmesh perf compare: {exc}", file=sys.stderr)
        return 2
    try:
        variants = nfmesh_variants(args)
        peers = all_peers(args.nfmesh_cmd, args.nfmesh_tls_args, args.nfmesh_set) + variants
    except ValueError as exc:
        print(f"nfmesh perf compare: {exc}", file=sys.stderr)
        return 2
    settings.targets += [p.name for p in variants if p.name not in settings.targets]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nfmesh-perf-") as tmp:
        result = Harness(settings, Path(tmp), peers).run()
    if not args.no_report:
        out = args.out or Path("perf-reports") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        from perf.report import write_report

        result["report"] = str(write_report(result, out))
    _log(f"done in {time.monotonic() - t0:.1f} s")
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        if "report" in result:
            print(f"report: {result['report']}")
    failed = [n for n, t in result["targets"].items()
              if str(t.get("skipped", "")).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
