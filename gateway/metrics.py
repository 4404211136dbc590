"""Prometheus metrics: cheap per-request accounting on the data plane, exported at scrape time.

The proxy calls ``RequestStats.on_request_done`` (``gateway.stats_core``) once per request.
That call only bumps counters in a cell (no locks, no label lookups through
prometheus_client); the ``prometheus_client`` collector turns them into metric families when
``/metrics`` is scraped.  ``load_request_stats()`` gives the compiled twin
(``gateway._stats_fast``: stats_core.py compiled) when it is built, the pure class otherwise.
Other parts of the gateway (registry, N2) register their own collectors on the same registry.

``MetricsServer`` serves ``GET /metrics`` (and ``/healthz``, ``/readyz``) over HTTP/1.1 on the
event loop, so scraping never needs a thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.stats_core import (  # noqa: F401 (BUCKETS and the label bounds: re-exported)
    BUCKETS,
    MAX_ERROR_CODE,
    METHOD_LABELS,
    OTHER_METHOD,
    UNKNOWN_ERROR_CODE,
    RequestStats,
)

STATS = ("cython", "pure")


def load_request_stats(name: str = "auto") -> type:
    """Return the ``RequestStats`` class: ``cython`` (``gateway._stats_fast``: gateway/stats_core.py
    compiled with stats_core.pxd, see setup.py's TWINS), ``pure`` (``gateway.stats_core``'s),
    or ``auto``: the compiled one when built, unless ``NFMESH_STATS`` names one (A/B runs)."""
    from dataplane.twins import load_twin

    return load_twin(name, ("gateway._stats_fast", "RequestStats"), RequestStats,  # type: ignore
                     "NFMESH_STATS", "request stats")


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
