# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled per-request accounting: the twin of ``gateway.metrics.RequestStats``.

``RequestStats.on_request_done`` runs once per proxied request.  Here each
``(cluster, method, status)`` cell is a C array of bucket counts plus a C double sum; the
bucket is found by a C binary search over the bounds (``bisect_left`` semantics: a duration
equal to a bound falls in that bound's bucket) and the sum adds the durations in arrival
order, so the cells, and every view and export built from them, are identical to the pure
class's.  Cells are found through a small direct-mapped cache keyed by the identity of
cluster and method (the proxy passes the route's cluster name and interned method names) and
the status as a C long, so a known key costs no tuple and no dict lookup; anything else
(a new key, an equal but not identical string, a status that is not a plain int) goes
through the dict by ``(cluster, method, status)``, exactly like the pure class (which also
folds unknown methods and error codes into bounded label values).

The views (``requests``, ``latency``, ``total``) and ``collect()`` are
``gateway.metrics.RequestStatsExport``'s, run over the ``cells`` snapshot.
"""

from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_CheckExact
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t, uintptr_t

import cython

from gateway.metrics import (
    _NB,
    BUCKETS,
    MAX_ERROR_CODE,
    METHOD_LABELS,
    OTHER_METHOD,
    UNKNOWN_ERROR_CODE,
    RequestStatsExport,
)

# the C arrays below are sized at compile time; a change of BUCKETS must be mirrored here
cdef enum:
    NBOUNDS = 13
    NCELLS = 14
    SLOT_BITS = 8
    NSLOTS = 256  # cell cache slots: 2 ** SLOT_BITS

if len(BUCKETS) != NBOUNDS or _NB != NCELLS:
    raise ImportError(f"gateway._stats_fast was built for {NBOUNDS} latency buckets, "
                      f"gateway.metrics.BUCKETS has {len(BUCKETS)}: rebuild it")

cdef double _BOUNDS[NBOUNDS]
for _i in range(NBOUNDS):
    _BOUNDS[_i] = BUCKETS[_i]



cdef inline int _bucket(double x) noexcept nogil:
    """``bisect.bisect_left(BUCKETS, x)`` (NaN: 0, like Python's comparisons)."""
    cdef int lo = 0, hi = NBOUNDS, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if _BOUNDS[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cython.final
cdef class _Cell:
    """One (cluster, method, status) key's bucket counts and duration sum."""
    cdef unsigned long long counts[NCELLS]
    cdef double total
    # its key as first seen: a cache slot matches by identity of these and the status value
    cdef object cluster, method
    cdef long status
    cdef bint int_status

    def __cinit__(self, cluster, method, status) -> None:
        cdef int i, overflow = 1
        for i in range(NCELLS):
            self.counts[i] = 0
        self.total = 0.0
        self.cluster = cluster
        self.method = method
        self.status = 0
        if PyLong_CheckExact(status):
            self.status = PyLong_AsLongAndOverflow(status, &overflow)
        self.int_status = overflow == 0

    cdef list as_list(self):
        cdef list out = [self.counts[i] for i in range(NCELLS)]
        out.append(self.total)
        return out


@cython.final
cdef class RequestStats:
    """Implements ``dataplane.proxy.ProxyStats``; same API and output as
    ``gateway.metrics.RequestStats``."""

    cdef dict _cells
    cdef public dict resets
    cdef list _slots  # NSLOTS cells or None, by _slot()

    def __cinit__(self) -> None:
        self._cells = {}
        self.resets = {}
        self._slots = [None] * NSLOTS

    def on_request_done(self, cluster, method, status, double duration_s, error_code) -> None:
        _on_request_done(self, cluster, method, status, duration_s, error_code)

    cdef _Cell _lookup(self, cluster, method, status):
        """The key's cell through the dict (created on first sight, the method folded into
        its label value like the pure class does)."""
        cell = self._cells.get((cluster, method, status))
        if cell is None:
            if method not in METHOD_LABELS:
                method = OTHER_METHOD
            key = (cluster, method, status)
            cell = self._cells.get(key)
            if cell is None:
                cell = _Cell(cluster, method, status)
                self._cells[key] = cell
        return <_Cell>cell

    @property
    def cells(self) -> dict:
        """``(cluster, method, status) -> [bucket counts..., duration sum]`` (a snapshot, in
        first-seen order, like the pure class's ``cells``)."""
        return {key: (<_Cell>cell).as_list() for key, cell in self._cells.items()}

    @property
    def requests(self) -> dict:
        """Requests by (cluster, method, status as text)."""
        return RequestStatsExport.requests.fget(self)

    @property
    def latency(self) -> dict:
        """Latency histogram per cluster."""
        return RequestStatsExport.latency.fget(self)

    @property
    def total(self) -> int:
        cdef unsigned long long n = 0
        cdef _Cell cell
        cdef int i
        for obj in self._cells.values():
            cell = <_Cell>obj
            for i in range(NCELLS):
                n += cell.counts[i]
        return n

    def collect(self):
        return RequestStatsExport.collect(self)


cdef inline Py_ssize_t _slot(object cluster, object method, long status) noexcept:
    # Fibonacci hashing: multiply by 2**64 / golden ratio, keep the top bits
    cdef uint64_t h = <uint64_t><uintptr_t><PyObject *>cluster
    h = (h ^ (<uint64_t><uintptr_t><PyObject *>method * 0xC2B2AE3D27D4EB4FULL)
         ^ (<uint64_t>status * 0x165667B19E3779F9ULL)) * 0x9E3779B97F4A7C15ULL
    return <Py_ssize_t>(h >> (64 - SLOT_BITS))


cdef int _on_request_done(object obj, object cluster, object method, object status,
                          double duration_s, object error_code) except -1:
    cdef RequestStats self = <RequestStats>obj
    cdef _Cell cell = None
    cdef int overflow = 1
    cdef long st = 0
    cdef Py_ssize_t slot = 0
    if PyLong_CheckExact(status):
        st = PyLong_AsLongAndOverflow(status, &overflow)
    if overflow == 0:
        slot = _slot(cluster, method, st)
        cached = self._slots[slot]
        if cached is not None:
            cell = <_Cell>cached
            if not (cell.cluster is cluster and cell.method is method and cell.int_status
                    and cell.status == st):
                cell = None
    if cell is None:
        cell = self._lookup(cluster, method, status)
        if overflow == 0 and cell.cluster is cluster and cell.method is method:
            self._slots[slot] = cell
    cell.counts[_bucket(duration_s)] += 1
    cell.total += duration_s
    if error_code:
        code = int(error_code)
        if not 0 < code <= MAX_ERROR_CODE:
            code = UNKNOWN_ERROR_CODE
        rkey = (cluster, code)
        self.resets[rkey] = self.resets.get(rkey, 0) + 1
    return 0
