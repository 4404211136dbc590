"""``nfmesh perf abuse``: HTTP/2 abuse against nfmesh (both engines), HAProxy and nghttpx in
one run, each case with a well-behaved client alongside (issue 13, item 6).

Targets (``--targets``, ``perf.abuse_targets``): by default ``nfmesh-nghttp2``, ``nfmesh-h2``
(``nfmesh run``, one worker), ``haproxy`` and ``nghttpx``, each an h2c proxy on 127.0.0.1 before
the same origin (``nghttpd --no-tls``); also ``engine-nghttp2`` and ``engine-h2``, the engine
answering locally in a responder process (its own defence, no proxying).  A target whose
binary is missing is reported as skipped with the reason.

Per target a baseline (the legit client alone), then each case for ``--duration`` seconds: an
attacker sends its frames over raw TCP, reconnecting when cut (``perf.abuse_attacks``), while
the legit client (the project's nghttp2 ``ClientConnection``, closed loop,
``--legit-concurrency`` requests in flight, GET of the origin's document) runs beside it.
Reported per case and target: the legit client's success ratio, p50/p99 (ms) and p99 against
the baseline; the RSS peak growth of the target's process tree over its level before the case;
what the attacker got (connections, cut, GOAWAY codes, RST_STREAMs, responses, bytes sent,
streams opened, bytes and DATA bytes received; for ``big_header`` what the big request and the
next one on its connection got); for ``idle_connections``, KiB per idle connection; and which of the issue's targets the row
misses (``perf.abuse_report``).

Bounded: every case ends after ``--duration`` seconds (the legit client's last requests wait
at most 2 s more), the attacker opens at most 20,000 connections a case; traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from dataplane.engine import H2Settings, available_backends, load_backend
from perf.abuse_attacks import CASES, attack, new_tally, open_idle
from perf.abuse_report import format_table, verdicts
from perf.abuse_targets import ALL_TARGETS, PROXY_TARGETS, Running, Targets, tree_rss, unavailable
from perf.peers.backend import RESPONSE_PATH
from perf.peers.launcher import LaunchError

REQUEST_TIMEOUT_S = 2.0
SETTLE_S = 0.5
RECOVERY_LIMIT_S = 10.0
LEGIT_HEADERS = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"legit"),
                 (b":path", RESPONSE_PATH.encode()), (b"user-agent", b"AMF-legit")]


async def legit_client(engine, port: int, stop: asyncio.Event, concurrency: int) -> dict:
    """Closed-loop GETs over one shared connection (reopened when lost) until ``stop``."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    failed = 0
    why: dict[str, int] = {}
    conn = None

    def fail(reason: str) -> None:
        nonlocal failed
        failed += 1
        why[reason] = why.get(reason, 0) + 1

    async def connect():
        _, c = await asyncio.wait_for(loop.create_connection(
            lambda: engine.ClientConnection(H2Settings()), "127.0.0.1", port), REQUEST_TIMEOUT_S)
        await asyncio.wait_for(c.ready, REQUEST_TIMEOUT_S)
        return c

    async def one(c) -> None:
        fut = loop.create_future()
        t0 = time.perf_counter()
        c.request(LEGIT_HEADERS, None, lambda *a: fut.done() or fut.set_result(a))
        try:
            status, _, _, _, error = await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
        except TimeoutError:
            fail("timeout")
            return
        if error is None and status == 200:
            lat.append(time.perf_counter() - t0)
        else:
            fail(f"status {status}" if error is None else f"reset {error}")

    async def worker() -> None:
        nonlocal conn
        while not stop.is_set():
            try:
                if conn is None or not conn.available:
                    conn = await connect()
                await one(conn)
            except (OSError, ConnectionError, TimeoutError) as exc:
                fail(f"connection {type(exc).__name__}")
                conn = None
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if conn is not None:
        conn.close()
    lat.sort()
    total = len(lat) + failed

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else None

    return {"requests": total, "ok": len(lat),
            "success": round(len(lat) / total, 4) if total else 0.0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "failures": why}


async def recovery_s(engine, port: int, limit_s: float) -> float | None:
    """Seconds until one legit request is answered 200 again (one at a time, each on the
    same connection, reopened when lost); None when none is within ``limit_s``."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    conn = None
    try:
        while time.monotonic() - t0 < limit_s:
            try:
                if conn is None or not conn.available:
                    _, conn = await asyncio.wait_for(loop.create_connection(
                        lambda: engine.ClientConnection(H2Settings()), "127.0.0.1", port), 1.0)
                    await asyncio.wait_for(conn.ready, 1.0)
                fut = loop.create_future()
                conn.request(LEGIT_HEADERS, None,
                             lambda *a, f=fut: f.done() or f.set_result(a))
                status, _, _, _, error = await asyncio.wait_for(fut, 1.0)
                if error is None and status == 200:
                    return round(time.monotonic() - t0, 2)
            except (OSError, ConnectionError, TimeoutError):
                conn = None
            await asyncio.sleep(0.05)
        return None
    finally:
        if conn is not None:
            conn.close()


async def run_case(target: Running, case: str, duration: float, concurrency: int, idle: int,
                   baseline_p99: float | None) -> dict:
    """One case (or ``baseline``) against a started target; the case's JSON object."""
    engine = load_backend("auto")
    stop = asyncio.Event()
    got = new_tally()
    pids = target.pids()
    before = tree_rss(pids)
    peak = before
    held = []
    tasks = [asyncio.ensure_future(legit_client(engine, target.port, stop, concurrency))]
    if case == "idle_connections":
        held = await open_idle(target.port, idle, got)
    elif case != "baseline":
        tasks.append(asyncio.ensure_future(attack(target.port, case, stop, got)))
    end = time.monotonic() + duration
    while time.monotonic() < end:
        await asyncio.sleep(0.05)
        peak = max(peak, tree_rss(pids))
    stop.set()
    legit = await tasks[0]
    for t in tasks[1:]:
        await t
    peak = max(peak, tree_rss(pids))
    for w in held:
        w.close()
    out = {"case": case, "legit": legit, "rss_peak_growth_kib": round((peak - before) / 1024, 1),
           "attacker": got}
    if case == "idle_connections" and held:
        out["kib_per_idle_connection"] = round((peak - before) / len(held) / 1024, 2)
    if baseline_p99 and legit["p99_ms"]:
        legit["p99_vs_baseline"] = round(legit["p99_ms"] / baseline_p99, 2)
    if case != "baseline":
        out["missed"] = verdicts(out)
    if not target.alive():
        out["error"] = f"the target exited: {target.process.log_tail(3)}"
    return out


async def run_target(targets: Targets, name: str, cases: list[str], duration: float,
                     concurrency: int, idle: int) -> dict:
    """Start target ``name``, run the baseline and every case against it, stop it."""
    out: dict = {"target": name}
    why = unavailable(name)
    if why:
        out["skipped"] = why
        return out
    try:
        running = await asyncio.to_thread(targets.start, name)
    except (LaunchError, OSError) as exc:
        out["error"] = f"did not start: {exc}"
        return out
    try:
        out.update(running.info)
        base = await run_case(running, "baseline", duration, concurrency, idle, None)
        engine = targets.engine_of(running)  # after a while: the worker logs it once serving
        if engine:
            out["engine"] = engine
        out["cases"] = [base]
        if base["legit"]["ok"] == 0:
            out["error"] = (f"the legit client got no answer at baseline: "
                            f"{base['legit']['failures']}; {running.process.log_tail(2)}")
            return out
        engine = load_backend("auto")
        for case in cases:
            await asyncio.sleep(SETTLE_S)  # the previous case's connections close
            row = await run_case(running, case, duration, concurrency, idle,
                                 base["legit"]["p99_ms"])
            out["cases"].append(row)
            # the next case starts from a target that answers again, or from a fresh one
            back = await recovery_s(engine, running.port, RECOVERY_LIMIT_S) \
                if running.alive() else None
            row["recovery_s"] = back
            if back is None:
                row.setdefault("missed", []).append(
                    f"not answering {RECOVERY_LIMIT_S:g} s after the case: restarted")
                await asyncio.to_thread(running.process.stop)
                try:
                    running = await asyncio.to_thread(targets.start, name)
                except (LaunchError, OSError) as exc:
                    out["error"] = f"did not restart after {case}: {exc}"
                    return out
    finally:
        await asyncio.to_thread(running.process.stop)
    return out


def _raise_fd_limit(need: int) -> None:
    """Idle connections need descriptors here and in the targets (which inherit this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        top = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nfmesh perf abuse", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="1 s per case, 200 idle connections")
    p.add_argument("--duration", type=float, default=None, help="seconds per case (default 3)")
    p.add_argument("--cases", default=",".join(CASES),
                   help="comma-separated, of: " + ", ".join(CASES))
    p.add_argument("--targets", default=",".join(PROXY_TARGETS),
                   help="comma-separated, of: " + ", ".join(ALL_TARGETS))
    p.add_argument("--legit-concurrency", type=int, default=4)
    p.add_argument("--idle", type=int, default=None, help="idle connections (default 2000)")
    p.add_argument("--keep-logs", metavar="DIR",
                   help="write the targets' configs and logs under DIR (new), and keep them")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    duration = args.duration or (1.0 if args.quick else 3.0)
    if not 0 < duration <= 60:
        p.error("--duration must be in (0, 60] seconds")
    idle = args.idle if args.idle is not None else (200 if args.quick else 2000)
    if not 0 <= idle <= 20_000:
        p.error("--idle must be in [0, 20000]")
    if not 1 <= args.legit_concurrency <= 256:
        p.error("--legit-concurrency must be in [1, 256]")
    cases = [c.strip() for c in args.cases.split(",") if c.strip() and c.strip() != "baseline"]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}")
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in names if t not in ALL_TARGETS]
    if unknown or not names:
        p.error(f"unknown target(s): {', '.join(unknown) or '(none)'}; of: "
                + ", ".join(ALL_TARGETS))
    if not available_backends():
        p.error("no HTTP/2 engine imports")
    _raise_fd_limit(2 * idle + 512)
    out: dict = {"duration_s": duration, "targets": []}
    lifetime = (len(cases) + 1) * (duration + REQUEST_TIMEOUT_S + 1) + 60
    with tempfile.TemporaryDirectory(prefix="nfmesh-abuse-") as tmp:
        workdir = Path(tmp)
        if args.keep_logs:
            workdir = Path(args.keep_logs)
            workdir.mkdir(parents=True)
        targets = Targets(workdir, lifetime)
        try:
            for name in names:
                out["targets"].append(asyncio.run(run_target(
                    targets, name, cases, duration, args.legit_concurrency, idle)))
        finally:
            targets.close()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(format_table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
