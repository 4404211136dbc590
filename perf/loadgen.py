"""The project's SBI load generator (``nfmesh perf load``): uvloop + the nfmesh HTTP/2 client.

Two ways to drive a target:

* open loop (``--rate N``): request *i* is due at ``start + i / N``; latency is measured from
  that intended time, not from when the request could actually be sent, so a stalled target
  shows up as latency instead of silently slowing the load (no coordinated omission).  When
  every connection is at its stream limit a due request waits in a bounded backlog; its wait
  counts in its latency.
* closed loop (``--connections C --streams M``): C×M requests in flight, each answer sends
  the next one; latency from the send.

Requests come from a scenario (``perf/scenarios/*.yaml``, see ``perf.scenario``): a weighted
mix of SBI operations with realistic paths and JSON bodies, pre-rendered before the run so
the generator spends no time templating.  Besides the latency from the intended time, the
summary has ``service_latency`` from the actual send: their difference is the generator's own
send lag (uvloop timers fire with about 1 ms granularity) plus any backlog wait.  Latencies go to HdrHistograms (1 µs .. 60 s, 3
significant digits), overall and per operation.  Every run is bounded by ``--duration`` and
``--requests``; after the last send the generator waits at most ``--drain`` seconds for the
answers still outstanding and counts the rest as timeouts.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import json
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from dataplane.engine import H2Settings, Headers, load_backend
from perf.scenario import PreparedRequest, Scenario, ScenarioError, load_scenario

HIST_MIN_US = 1
HIST_MAX_US = 60_000_000
HIST_DIGITS = 3
MAX_BACKLOG = 100_000

# uvloop's loop.time() is cached at millisecond granularity: too coarse for latencies
clock = time.perf_counter


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_MIN_US, HIST_MAX_US, HIST_DIGITS)


def histogram_summary(h: HdrHistogram) -> dict[str, float | int]:
    """Count and latency percentiles (ms) of one histogram."""
    n = h.get_total_count()
    if n == 0:
        return {"count": 0}
    ms = 1000.0
    return {
        "count": n,
        "mean_ms": round(h.get_mean_value() / ms, 4),
        "p50_ms": h.get_value_at_percentile(50) / ms,
        "p90_ms": h.get_value_at_percentile(90) / ms,
        "p99_ms": h.get_value_at_percentile(99) / ms,
        "p999_ms": h.get_value_at_percentile(99.9) / ms,
        "max_ms": h.get_max_value() / ms,
    }


@dataclass(frozen=True, slots=True)
class Target:
    """Where the load goes."""

    host: str
    port: int
    tls: bool = False
    server_name: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://HOST:PORT or https://HOST:PORT, got {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.hostname)

    @property
    def authority(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}".encode()


FLUSH_SAMPLES = 1_000_000


@dataclass(slots=True)
class LoadStats:
    """What one run measured.

    Latencies are appended to flat integer arrays while the run goes (tens of nanoseconds a
    request) and poured into the HdrHistograms only every ``FLUSH_SAMPLES`` samples and at the
    end, so recording costs the measured run almost nothing."""

    per_operation: dict[str, HdrHistogram] = field(default_factory=dict)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    sent: int = 0
    completed: int = 0
    unexpected: int = 0  # answered with a status the operation does not expect
    timeouts: int = 0  # no answer within the drain time after the last send
    not_sent: int = 0  # backlog overflow: the target could not take them at all
    max_backlog: int = 0
    elapsed_s: float = 0.0
    _pending: dict[str, array.array] = field(default_factory=dict)
    _pending_service: array.array = field(default_factory=lambda: array.array("q"))
    _service: HdrHistogram = field(default_factory=new_histogram)

    def record(self, req: PreparedRequest, latency_us: int, status: int,
               error: BaseException | None, service_us: int | None = None) -> None:
        self.completed += 1
        if error is not None:
            self.errors[type(error).__name__] += 1
            return
        self.statuses[status] += 1
        if status not in req.expect:
            self.unexpected += 1
        buf = self._pending.get(req.operation)
        if buf is None:
            buf = self._pending[req.operation] = array.array("q")
        buf.append(latency_us)
        if service_us is not None:
            self._pending_service.append(service_us)
            if len(self._pending_service) >= FLUSH_SAMPLES:
                self.flush()

    def flush(self) -> None:
        """Pour the pending samples into the histograms."""
        for op, buf in self._pending.items():
            h = self.per_operation.get(op)
            if h is None:
                h = self.per_operation[op] = new_histogram()
            for us in buf:
                h.record_value(min(max(us, HIST_MIN_US), HIST_MAX_US))
            del buf[:]
        for us in self._pending_service:
            self._service.record_value(min(max(us, HIST_MIN_US), HIST_MAX_US))
        del self._pending_service[:]

    @property
    def histogram(self) -> HdrHistogram:
        """All operations' latencies from the intended send time."""
        self.flush()
        total = new_histogram()
        for h in self.per_operation.values():
            total.add(h)
        return total

    @property
    def service(self) -> HdrHistogram:
        """Latencies from the actual send."""
        self.flush()
        return self._service

    def summary(self, mode: str, hdr: bool = False, **extra: object) -> dict:
        """The run as a JSON-able dict; with ``hdr`` also the latency histogram, encoded
        (HdrHistogram's compressed base64 form) so that runs can be merged exactly."""
        answered = sum(self.statuses.values())
        overall = self.histogram
        out = {
            "mode": mode,
            **extra,
            "elapsed_s": round(self.elapsed_s, 3),
            "sent": self.sent,
            "completed": self.completed,
            "answered": answered,
            "rps": round(answered / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
            "unexpected_status": self.unexpected,
            "errors": dict(self.errors),
            "timeouts": self.timeouts,
            "not_sent": self.not_sent,
            "max_backlog": self.max_backlog,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency": histogram_summary(overall),
            "service_latency": histogram_summary(self.service),
            "operations": {k: histogram_summary(h) for k, h in sorted(self.per_operation.items())},
        }
        if hdr:
            out["hdr"] = overall.encode().decode() if answered else ""
        return out


class LoadGenerator:
    """Connections to one target and the two load loops over them."""

    def __init__(self, target: Target, requests: list[PreparedRequest], *,
                 backend: str = "auto", ssl_context: ssl.SSLContext | None = None) -> None:
        if not requests:
            raise ValueError("no requests to send")
        self.target = target
        self.requests = requests
        self.engine = load_backend(backend)
        self.ssl_context = ssl_context
        self.conns: list = []
        self._next_req = 0
        self._next_conn = 0

    async def connect(self, count: int, timeout_s: float = 5.0) -> None:
        """Open ``count`` connections and wait for each peer's SETTINGS."""
        loop = asyncio.get_running_loop()
        settings = H2Settings()
        for _ in range(count):
            ctx = self.ssl_context
            if self.target.tls and ctx is None:
                ctx = client_ssl_context(insecure=True)
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: self.engine.ClientConnection(settings), self.target.host,
                self.target.port, ssl=ctx,
                server_hostname=self.target.server_name if ctx else None,
            ), timeout_s)
            await asyncio.wait_for(conn.ready, timeout_s)
            self.conns.append(conn)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.conns.clear()

    def _take_request(self) -> PreparedRequest:
        req = self.requests[self._next_req]
        self._next_req = (self._next_req + 1) % len(self.requests)
        return req

    def _free_conn(self):
        """A connection with a free stream (round robin), or None."""
        n = len(self.conns)
        for i in range(n):
            c = self.conns[(self._next_conn + i) % n]
            if c.available:
                self._next_conn = (self._next_conn + i + 1) % n
                return c
        return None

    def _send(self, conn, req: PreparedRequest, t0: float, stats: LoadStats, on_done) -> None:
        """Send ``req`` on ``conn``; latency counts from ``t0`` (``clock()``, seconds), the
        service latency from now."""
        loop_time = clock

        t_sent = clock()

        def callback(status: int, headers: Headers, body: bytes, trailers: Headers,
                     error: BaseException | None) -> None:
            t = loop_time()
            stats.record(req, int((t - t0) * 1e6), status, error, int((t - t_sent) * 1e6))
            on_done()

        stats.sent += 1
        try:
            conn.request(req.headers, req.body, callback)
        except Exception as exc:  # the connection refused the stream: a failed request
            stats.record(req, 0, 0, exc)
            asyncio.get_running_loop().call_soon(on_done)

    async def open_loop(self, rate: float, duration_s: float, max_requests: int | None = None,
                        drain_s: float = 5.0) -> LoadStats:
        """Send at ``rate`` req/s for ``duration_s`` (or ``max_requests``), latency from the
        intended send time."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        loop = asyncio.get_running_loop()
        stats = LoadStats()
        total = int(rate * duration_s)
        if max_requests is not None:
            total = min(total, max_requests)
        backlog: collections.deque[tuple[PreparedRequest, float]] = collections.deque()
        outstanding = 0
        all_done = loop.create_future()
        sending_over = False

        def on_done() -> None:
            nonlocal outstanding
            outstanding -= 1
            while backlog:
                conn = self._free_conn()
                if conn is None:
                    break
                req, t = backlog.popleft()
                outstanding += 1
                self._send(conn, req, t, stats, on_done)
            if sending_over and outstanding == 0 and not backlog and not all_done.done():
                all_done.set_result(None)

        start = clock() + 0.01
        i = 0
        while i < total:
            now = clock()
            due = min(total, int((now - start) * rate) + 1)
            while i < due:
                intended = start + i / rate
                i += 1
                req = self._take_request()
                conn = self._free_conn() if not backlog else None
                if conn is not None:
                    outstanding += 1
                    self._send(conn, req, intended, stats, on_done)
                elif len(backlog) < MAX_BACKLOG:
                    backlog.append((req, intended))
                    stats.max_backlog = max(stats.max_backlog, len(backlog))
                else:
                    stats.not_sent += 1
            if all(c.closed for c in self.conns):
                stats.errors["ConnectionLost"] += total - i
                break
            next_due = start + i / rate
            await asyncio.sleep(max(0.0, next_due - clock()))
        sending_over = True
        if outstanding == 0 and not backlog:
            all_done.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(all_done), drain_s)
        except TimeoutError:
            stats.timeouts = outstanding + len(backlog)
        stats.elapsed_s = clock() - start
        return stats

    async def closed_loop(self, streams_per_conn: int, duration_s: float,
                          max_requests: int | None = None, drain_s: float = 5.0) -> LoadStats:
        """Keep ``streams_per_conn`` requests in flight on every connection."""
        loop = asyncio.get_running_loop()
        stats = LoadStats()
        deadline = clock() + duration_s
        budget = max_requests if max_requests is not None else 1 << 62
        outstanding = 0
        all_done = loop.create_future()

        def launch(conn) -> None:
            nonlocal outstanding, budget
            if budget <= 0 or clock() >= deadline or conn.closed:
                if outstanding == 0 and not all_done.done():
                    all_done.set_result(None)
                return
            budget -= 1
            outstanding += 1
            self._send(conn, self._take_request(), clock(), stats,
                       lambda: finished(conn))

        def finished(conn) -> None:
            nonlocal outstanding
            outstanding -= 1
            launch(conn)

        start = clock()
        for conn in self.conns:
            for _ in range(streams_per_conn):
                launch(conn)
        try:
            await asyncio.wait_for(asyncio.shield(all_done), duration_s + drain_s)
        except TimeoutError:
            stats.timeouts = outstanding
        stats.elapsed_s = clock() - start
        return stats


def client_ssl_context(insecure: bool = False, cafile: str | None = None) -> ssl.SSLContext:
    """A TLS client context offering ALPN h2 (certificate checks off with ``insecure``)."""
    ctx = ssl.create_default_context(cafile=cafile)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


SCENARIO_DIR = Path(__file__).with_name("scenarios")


def resolve_scenario(name_or_path: str) -> Path:
    """A scenario file path, or the name of a built-in one in ``perf/scenarios``."""
    p = Path(name_or_path)
    if p.exists():
        return p
    builtin = SCENARIO_DIR / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    names = sorted(f.stem for f in SCENARIO_DIR.glob("*.yaml"))
    raise ScenarioError(f"no scenario file {name_or_path!r}; built-in: {', '.join(names)}")


async def run_load(args: argparse.Namespace) -> dict:
    """Run one load as the command line describes; return the summary object."""
    target = Target.from_url(args.url)
    variables = dict(v.split("=", 1) for v in args.var)
    scenario: Scenario = load_scenario(resolve_scenario(args.scenario))
    extra = [tuple(h.split(":", 1)) for h in args.header]
    requests = scenario.prepare(
        scheme=b"https" if target.tls else b"http", authority=target.authority,
        variables=variables, extra_headers=[(k.strip().lower().encode(), v.strip().encode())
                                            for k, v in extra],
    )
    ctx = None
    if target.tls:
        ctx = client_ssl_context(insecure=args.insecure, cafile=args.cacert)
    gen = LoadGenerator(target, requests, backend=args.backend, ssl_context=ctx)
    try:
        await gen.connect(args.connections)
        if args.rate:
            stats = await gen.open_loop(args.rate, args.duration, args.requests, args.drain)
            return stats.summary("open", hdr=args.hdr, target_rate=args.rate, connections=args.connections,
                                 scenario=scenario.name, backend=gen.engine.NAME)
        stats = await gen.closed_loop(args.streams, args.duration, args.requests, args.drain)
        return stats.summary("closed", hdr=args.hdr, connections=args.connections, streams=args.streams,
                             scenario=scenario.name, backend=gen.engine.NAME)
    finally:
        gen.close()


def _bounded(lo: float, hi: float, kind: type = float):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be within {lo:g}..{hi:g}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nfmesh perf load",
        description="SBI load generator: open loop at a fixed rate (latency from the intended "
        "send time) or closed loop (connections x streams), scenario mixes, HdrHistogram.",
    )
    p.add_argument("--url", required=True, help="http://HOST:PORT or https://HOST:PORT")
    p.add_argument("--scenario", default="sbi-mix",
                   help="scenario file or built-in name (default sbi-mix)")
    p.add_argument("--rate", type=_bounded(1, 1_000_000), help="open loop at this many req/s")
    p.add_argument("--connections", type=_bounded(1, 1000, int), default=10)
    p.add_argument("--streams", type=_bounded(1, 1000, int), default=10,
                   help="closed loop: requests in flight per connection (default 10)")
    p.add_argument("--duration", type=_bounded(0.1, 3600), default=10.0,
                   help="seconds of load (default 10)")
    p.add_argument("--requests", type=_bounded(1, 100_000_000, int),
                   help="stop after this many requests")
    p.add_argument("--drain", type=_bounded(0, 60), default=5.0,
                   help="seconds to wait for outstanding answers at the end (default 5)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra header on every request")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="scenario variable, e.g. target_apiroot=http://127.0.0.1:9000")
    p.add_argument("--backend", choices=["auto", "nghttp2", "h2"], default="auto")
    p.add_argument("--insecure", action="store_true", help="TLS: do not check the certificate")
    p.add_argument("--cacert", help="TLS: CA file to check the target's certificate")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--hdr", action="store_true",
                   help="with --json: add the encoded latency HdrHistogram ('hdr')")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``nfmesh perf load``."""
    args = build_parser().parse_args(argv)
    for h in args.header:
        if ":" not in h.lstrip(":"):
            print(f"nfmesh perf load: header {h!r} is not 'NAME: VALUE'", file=sys.stderr)
            return 2
    if any("=" not in v for v in args.var):
        print("nfmesh perf load: --var takes NAME=VALUE", file=sys.stderr)
        return 2
    try:
        import uvloop

        result = uvloop.run(run_load(args))
    except (ScenarioError, ValueError) as exc:
        print(f"nfmesh perf load: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as exc:
        print(f"nfmesh perf load: cannot reach {args.url}: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency"]
        print(f"{result['mode']} loop, scenario {result['scenario']}: {result['answered']} answered "
              f"in {result['elapsed_s']:.2f} s ({result['rps']:.0f} req/s), "
              f"errors {sum(result['errors'].values())}, timeouts {result['timeouts']}, "
              f"unexpected status {result['unexpected_status']}")
        if lat.get("count"):
            print(f"latency ms: p50 {lat['p50_ms']:.3f}  p90 {lat['p90_ms']:.3f}  "
                  f"p99 {lat['p99_ms']:.3f}  p99.9 {lat['p999_ms']:.3f}  max {lat['max_ms']:.3f}")
        for op, s in result["operations"].items():
            if s.get("count"):
                print(f"  {op}: {s['count']} p50 {s['p50_ms']:.3f} p99 {s['p99_ms']:.3f}")
    failed = result["errors"] or result["timeouts"] or not result["answered"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
