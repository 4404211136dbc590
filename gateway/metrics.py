"""Prometheus metrics: cheap per-request accounting on the data plane, exported at scrape time.

The proxy calls ``RequestStats.on_request_done`` once per request.  That call only bumps
plain integers in dicts (no locks, no label lookups through prometheus_client); the
``prometheus_client`` collector turns them into metric families when ``/metrics`` is scraped.
``load_request_stats()`` gives the compiled twin (``gateway._stats_fast``: the counting in C,
the same export code) when it is built, this module's class otherwise.
Other parts of the gateway (registry, N2) register their own collectors on the same registry.

``MetricsServer`` serves ``GET /metrics`` (and ``/healthz``, ``/readyz``) over HTTP/1.1 on the
event loop, so scraping never needs a thread.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import re
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets in seconds: SBI answers are expected in milliseconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# Label values stay bounded whatever peers send: a request method outside these counts as
# OTHER_METHOD (OpenTelemetry's convention for http.request.method), and an HTTP/2 error code
# beyond the ones RFC 9113 defines (0x0-0xd) as INTERNAL_ERROR, which RFC 9113 section 7
# allows for unknown codes.
METHOD_LABELS = frozenset(
    ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"))
OTHER_METHOD = "_OTHER"
MAX_ERROR_CODE = 0xD
UNKNOWN_ERROR_CODE = 0x2  # INTERNAL_ERROR

_NB = len(BUCKETS) + 1  # bucket cells (the last one: above every bound)
_SUM = _NB  # a cell's last entry: the sum of the durations


class _Histogram:
    """One cluster's latency histogram (built at scrape time from the request cells)."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * _NB
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1


class RequestStatsExport:
    """The views and the Prometheus export of per-request stats, computed from ``cells`` and
    ``resets`` at scrape time.  Shared by the pure ``RequestStats`` and the compiled one
    (``gateway._stats_fast``): whichever counted, the same cells give the same output."""

    __slots__ = ()
    cells: dict[tuple[str, str, int], list]
    resets: dict[tuple[str, int], int]

    @property
    def requests(self) -> dict[tuple[str, str, str], int]:
        """Requests by (cluster, method, status as text)."""
        out: dict[tuple[str, str, str], int] = {}
        for (cluster, method, status), cell in self.cells.items():
            key = (cluster, method, str(status))
            out[key] = out.get(key, 0) + sum(cell[:_NB])
        return out

    @property
    def latency(self) -> dict[str, _Histogram]:
        """Latency histogram per cluster."""
        out: dict[str, _Histogram] = {}
        for (cluster, _method, _status), cell in self.cells.items():
            hist = out.get(cluster)
            if hist is None:
                hist = out[cluster] = _Histogram()
            for i in range(_NB):
                hist.counts[i] += cell[i]
            hist.n += sum(cell[:_NB])
            hist.total += cell[_SUM]
        return out

    @property
    def total(self) -> int:
        return sum(sum(cell[:_NB]) for cell in self.cells.values())

    def collect(self) -> Iterable:
        c = CounterMetricFamily(
            "nfmesh_requests", "Requests proxied or answered, by cluster, method and status",
            labels=["cluster", "method", "status"],
        )
        for (cluster, method, status), n in sorted(self.requests.items()):
            c.add_metric([cluster, method, status], n)
        yield c
        r = CounterMetricFamily(
            "nfmesh_stream_errors", "Requests that ended with an HTTP/2 error code",
            labels=["cluster", "error_code"],
        )
        for (cluster, code), n in sorted(self.resets.items()):
            r.add_metric([cluster, str(code)], n)
        yield r
        h = HistogramMetricFamily(
            "nfmesh_request_duration_seconds", "Time from request headers to the end of the response",
            labels=["cluster"],
        )
        for cluster, hist in sorted(self.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            h.add_metric([cluster], buckets, hist.total)
        yield h


class RequestStats(RequestStatsExport):
    """Implements ``dataplane.proxy.ProxyStats`` and exports what it counted (the pure-Python
    reference; ``load_request_stats`` picks the compiled twin when it is built).

    Per request: one dict lookup by ``(cluster, method, status)`` and two increments in that
    key's cell (its latency bucket and duration sum); request counts and per-cluster histograms
    are summed from the cells when scraped.  Methods and error codes are folded into bounded
    label values (``METHOD_LABELS``, ``MAX_ERROR_CODE``).  A duration that is not a real
    number raises (``TypeError``, ``OverflowError``) before anything is counted."""

    __slots__ = ("cells", "resets")

    def __init__(self) -> None:
        # (cluster, method, status) -> [bucket counts..., duration sum]
        self.cells: dict[tuple[str, str, int], list] = {}
        self.resets: dict[tuple[str, int], int] = {}

    def on_request_done(
        self, cluster: str, method: str, status: int, duration_s: float, error_code: int
    ) -> None:
        i = bisect.bisect_left(BUCKETS, duration_s)  # TypeError for a non-number: nothing counted
        cell = self.cells.get((cluster, method, status))
        if cell is None:
            cell = self._new_key(cluster, method, status, duration_s)
        cell[_SUM] += duration_s
        cell[i] += 1
        if error_code:
            code = int(error_code)
            if not 0 < code <= MAX_ERROR_CODE:
                code = UNKNOWN_ERROR_CODE
            rkey = (cluster, code)
            self.resets[rkey] = self.resets.get(rkey, 0) + 1

    def _new_key(self, cluster: str, method: str, status: int, duration_s: float) -> list:
        """The cell of a key not seen as such: the method folded into its label value, the
        cell created unless that key exists (an int duration beyond a float raises first)."""
        float(duration_s)
        if method not in METHOD_LABELS:
            method = OTHER_METHOD
        key = (cluster, method, status)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0] * _NB + [0.0]
        return cell


STATS = ("cython", "pure")


def load_request_stats(name: str = "auto") -> type:
    """Return the ``RequestStats`` class: ``cython`` (``gateway._stats_fast``, the per-request
    accounting compiled, same API and output), ``pure`` (this module's), or ``auto``: the
    compiled one when built, unless the environment variable ``NFMESH_STATS`` names one."""
    if name == "auto":
        name = os.environ.get("NFMESH_STATS") or "auto"
    if name in ("auto", "cython"):
        try:
            from gateway._stats_fast import RequestStats as fast
        except ImportError:
            if name == "cython":
                raise
        else:
            return fast
    if name in ("auto", "pure"):
        return RequestStats
    raise ValueError(f"unknown request stats implementation {name!r}; choose one of auto, "
                     f"{', '.join(STATS)}")


class GaugeCallback:
    """A collector for gauges whose values are read at scrape time."""

    def __init__(self, name: str, doc: str, read: Callable[[], dict[tuple[str, ...], float]],
                 labels: list[str] | None = None) -> None:
        self.name, self.doc, self.read, self.labels = name, doc, read, labels or []

    def collect(self) -> Iterable:
        g = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for label_values, value in self.read().items():
            g.add_metric(list(label_values), value)
        yield g


def new_registry(*collectors: object) -> CollectorRegistry:
    """A registry holding the given collectors (objects with ``collect()``)."""
    reg = CollectorRegistry(auto_describe=False)
    for col in collectors:
        reg.register(col)  # type: ignore[arg-type]
    return reg


class MetricsServer:
    """``GET /metrics`` in the Prometheus text format, ``/healthz`` and ``/readyz``.

    ``exposition`` produces the /metrics body (default: the registry's text format); the
    supervisor of a multi-worker gateway passes the aggregator's instead.  ``before_scrape``
    runs before each body is made (the gateway reports the HTTP/2 engine's waiting
    completions there, so a scrape counts every request answered before it).
    """

    def __init__(self, registry: CollectorRegistry | None, ready: Callable[[], bool] = lambda: True,
                 exposition: Callable[[], Awaitable[bytes]] | None = None,
                 before_scrape: Callable[[], object] | None = None) -> None:
        self.registry = registry
        self.ready = ready
        self.exposition = exposition
        self.before_scrape = before_scrape
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def start_unix(self, path: str) -> None:
        """Serve on a Unix socket (a worker, scraped by its supervisor)."""
        self._server = await asyncio.start_unix_server(self._serve, path)

    async def _body(self) -> bytes:
        if self.before_scrape is not None:
            self.before_scrape()
        if self.exposition is not None:
            return await self.exposition()
        assert self.registry is not None
        return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed; bounded by the StreamReader limit
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path.startswith("/metrics"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, await self._body()
            elif path == "/healthz":
                status, ctype, body = "200 OK", "text/plain", b"ok\n"
            elif path == "/readyz":
                ok = self.ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", b"ready\n" if ok else b"not ready\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


_METRIC_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*")


def label_samples(text: bytes, label: bytes) -> list[bytes]:
    """The lines of a Prometheus text exposition with ``label`` (``worker="0"``) added to
    every sample; comment lines are kept as they are, blank lines dropped.

    The label goes first, right after the metric name, so the rest of a sample line (its own
    labels, whatever their values hold: ``}``, ``"``, ``\\`` escapes) is copied without being
    read.  Lines split at ``\\n`` only: the format escapes newlines in label values but not a
    ``\\r``.  (prometheus_client's parser, re-emitted, did the same for a 4-worker scrape at
    25-35 times the cost.)"""
    out = []
    for line in text.split(b"\n"):
        if not line:
            continue
        if line[:1] == b"#":
            out.append(line)
            continue
        m = _METRIC_NAME.match(line)
        if m is None:
            continue
        end = m.end()
        after = line[end:end + 1]
        if after == b" ":  # no labels
            out.append(line[:end] + b"{" + label + b"}" + line[end:])
        elif after == b"{":
            if line[end + 1:end + 2] == b"}":  # an empty label set
                out.append(line[:end + 1] + label + line[end + 1:])
            else:
                out.append(line[:end + 1] + label + b"," + line[end + 1:])
    return out


async def _scrape_unix(path: str, timeout: float = 2.0) -> bytes | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return body if head.startswith(b"HTTP/1.1 200") else None


class WorkerMetricsAggregator:
    """The supervisor's /metrics: every worker's samples with a ``worker`` label, plus the
    control plane's own collectors; one scrape target per gateway (per pod)."""

    def __init__(self, worker_sockets: list[str], local: CollectorRegistry | None = None) -> None:
        self.worker_sockets = worker_sockets
        self.local = local
        self.last_answered = 0

    async def exposition(self) -> bytes:
        bodies = await asyncio.gather(*(_scrape_unix(p) for p in self.worker_sockets))
        self.last_answered = sum(b is not None for b in bodies)
        sources = [(b'worker="%d"' % i, b) for i, b in enumerate(bodies)]
        if self.local is not None:  # the control plane's own series (NRF API, registry)
            sources.append((b'worker="control"', generate_latest(self.local)))
        families: dict[bytes, list[bytes]] = {}
        headers: set[bytes] = set()  # HELP and TYPE lines already out: once per family
        for label, body in sources:
            if body is None:
                continue
            family = b""
            for line in label_samples(body, label):
                if line.startswith(b"# HELP ") or line.startswith(b"# TYPE "):
                    family = line.split(b" ", 3)[2]
                    lines = families.setdefault(family, [])
                    if line not in headers:
                        headers.add(line)
                        lines.append(line)
                    continue
                families.setdefault(family, []).append(line)
        up = [b"# HELP nfmesh_worker_up Whether the worker answered this scrape",
              b"# TYPE nfmesh_worker_up gauge"]
        up += [b'nfmesh_worker_up{worker="%d"} %d' % (i, b is not None) for i, b in enumerate(bodies)]
        families[b"nfmesh_worker_up"] = up
        return b"\n".join(b"\n".join(lines) for lines in families.values()) + b"\n"
