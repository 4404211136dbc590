# cython: annotation_typing=False, cdivision=True
"""Per-request accounting: ``RequestStats`` counts each proxied request and exports what it
counted to Prometheus at scrape time.

One source, two twins: this file is the pure-Python ``RequestStats`` and, compiled a second
time with ``stats_core.pxd`` beside it (Cython's pure-Python mode, setup.py's TWINS), the
extension type ``gateway._stats_fast.RequestStats``.  ``gateway.metrics.load_request_stats``
picks one.  Compiled, a cell's bucket counts are a C array, the bucket is found by a C binary
search, and a cell is found through a small cache keyed by the identity of cluster and method
and the status value (the proxy passes the route's cluster name and interned method names),
so a known key costs no tuple and no dict lookup; the code for those sits behind
``cython.compiled``.  Anything else (a new key, an equal but not identical string, a status
that is not a plain int) goes through the dict by ``(cluster, method, status)`` in both.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

try:
    import cython
except ImportError:  # no Cython here: this file runs as plain Python
    from dataplane import _no_cython as cython

# Latency buckets in seconds: SBI answers are expected in milliseconds.  (The compiled twin
# sizes its C arrays from stats_core.pxd: a change here is mirrored there.)
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
_NBOUNDS = len(BUCKETS)
_SLOT_BITS = 8  # the compiled twin's cell cache: 2 ** _SLOT_BITS slots

if not cython.compiled:
    _BOUNDS = BUCKETS  # compiled: a C array of doubles (stats_core.pxd) filled from BUCKETS
else:
    if cython.sizeof(_BOUNDS) != _NBOUNDS * cython.sizeof(cython.double):
        raise ImportError("gateway._stats_fast was built for another number of latency "
                          "buckets than gateway.stats_core.BUCKETS has: rebuild it")
    for _i in range(_NBOUNDS):
        _BOUNDS[_i] = BUCKETS[_i]


def _bucket(x: float) -> int:
    """``bisect.bisect_left(BUCKETS, x)``: a duration equal to a bound is in that bound's
    bucket (Prometheus ``le``); NaN compares false: the first."""
    if not cython.compiled:
        return bisect.bisect_left(BUCKETS, x)
    lo = 0
    hi = _NBOUNDS
    while lo < hi:
        mid = (lo + hi) >> 1
        if _BOUNDS[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _cacheable(status: object) -> bool:
    """A status the compiled twin's cell cache keys by value: a plain int, any HTTP status."""
    return type(status) is int and 0 <= status <= 0xFFFF


def _slot(cluster: object, method: object, status: int) -> int:
    """The compiled twin's cache slot of a key: Fibonacci hashing of the identities of cluster
    and method and the status (multiply by 2**64 / golden ratio, keep the top bits)."""
    h = cython.cast(cython.ulonglong, cython.cast(cython.p_void, cluster))
    m = cython.cast(cython.ulonglong, cython.cast(cython.p_void, method))
    h = (h ^ (m * _K_METHOD) ^ (status * _K_STATUS)) * _K_GOLDEN
    return h >> (64 - _SLOT_BITS)


_K_METHOD = 0xC2B2AE3D27D4EB4F
_K_STATUS = 0x165667B19E3779F9
_K_GOLDEN = 0x9E3779B97F4A7C15


class _Histogram:
    """One cluster's latency histogram (built at scrape time from the request cells)."""

    def __init__(self) -> None:
        self.counts = [0] * _NB
        self.total = 0.0
        self.n = 0


class _Cell:
    """One (cluster, method, status) key's bucket counts and duration sum, and the key as
    first seen (a cache slot of the compiled twin matches by identity and status value)."""

    __slots__ = ("counts", "total", "cluster", "method", "status")

    def __init__(self, cluster: object, method: object, status: object) -> None:
        if not cython.compiled:  # compiled: a C array, zeroed with the object
            self.counts = [0] * _NB
        self.total = 0.0
        self.cluster = cluster
        self.method = method
        self.status = status if _cacheable(status) else -1  # -1: never matched in the cache

    def as_list(self) -> list:
        out = [self.counts[i] for i in range(_NB)]
        out.append(self.total)
        return out


class RequestStats:
    """Implements ``dataplane.proxy.ProxyStats`` and exports what it counted.

    Per request: the key's cell (by ``(cluster, method, status)``) gets one more in its latency
    bucket and the duration in its sum; request counts and per-cluster histograms are summed
    from the cells when scraped.  Methods and error codes are folded into bounded label values
    (``METHOD_LABELS``, ``MAX_ERROR_CODE``).  A duration that is not a real number raises
    (``TypeError``, ``OverflowError``) before anything is counted."""

    def __init__(self) -> None:
        self._cells = {}  # (cluster, method, status) -> _Cell, in first-seen order
        self.resets = {}  # (cluster, error code) -> count
        self._slots = [None] * (1 << _SLOT_BITS)  # the compiled twin's cell cache

    def on_request_done(self, cluster: str, method: str, status: int, duration_s: float,
                        error_code: int) -> None:
        cell = None
        slot = -1
        if cython.compiled:  # duration_s is a C double, converted at the call
            i = _bucket(duration_s)
            if _cacheable(status):  # the cache: by identity of cluster and method
                st = status
                slot = _slot(cluster, method, st)
                cell = self._slots[slot]
                if cell is not None and not (cell.cluster is cluster and cell.method is method
                                             and cell.status == st):
                    cell = None
        else:
            i = bisect.bisect_left(BUCKETS, duration_s)  # TypeError for a non-number
            if type(duration_s) is not float:
                duration_s = float(duration_s)  # OverflowError for an int beyond a float
        if cell is None:
            cell = self._cells.get((cluster, method, status))
            if cell is None:
                cell = self._new_key(cluster, method, status)
            if slot >= 0 and cell.cluster is cluster and cell.method is method:
                self._slots[slot] = cell
        cell.counts[i] += 1
        cell.total += duration_s
        if error_code:
            code = int(error_code)
            if not 0 < code <= MAX_ERROR_CODE:
                code = UNKNOWN_ERROR_CODE
            rkey = (cluster, code)
            self.resets[rkey] = self.resets.get(rkey, 0) + 1

    def _new_key(self, cluster: str, method: str, status: int) -> _Cell:
        """The cell of a key not seen as such: the method folded into its label value, the
        cell created unless that key exists."""
        if method not in METHOD_LABELS:
            method = OTHER_METHOD
        key = (cluster, method, status)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell(cluster, method, status)
        return cell

    # ---- views, computed from the cells when asked (a scrape) ----------------------------------

    @property
    def cells(self) -> dict:
        """``(cluster, method, status) -> [bucket counts..., duration sum]`` (a snapshot, in
        first-seen order)."""
        return {key: cell.as_list() for key, cell in self._cells.items()}

    @property
    def requests(self) -> dict:
        """Requests by (cluster, method, status as text)."""
        out: dict = {}
        for (cluster, method, status), cell in self.cells.items():
            key = (cluster, method, str(status))
            out[key] = out.get(key, 0) + sum(cell[:_NB])
        return out

    @property
    def latency(self) -> dict:
        """Latency histogram per cluster."""
        out: dict = {}
        for (cluster, _method, _status), cell in self.cells.items():
            hist = out.get(cluster)
            if hist is None:
                hist = out[cluster] = _Histogram()
            for i in range(_NB):
                hist.counts[i] += cell[i]
            hist.n += sum(cell[:_NB])
            hist.total += cell[_NB]
        return out

    @property
    def total(self) -> int:
        """Requests counted."""
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
