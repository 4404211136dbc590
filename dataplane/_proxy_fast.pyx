# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``dataplane.proxy.Proxy``: the per-request exchange in Cython.

Same API and behaviour as the pure ``Proxy`` (which stays the reference and the fallback when
this module is not built): ``Proxy`` here subclasses the pure one and replaces only the per
request path, ``on_request`` and the exchange, with a ``cdef class`` splice observer whose
``on_complete`` records the stats and the access log inline.  Everything rare (local answers,
``LocalService``, idle drain, the deadline sweep, shutdown) is the pure class's own code, and
the module constants (``COARSE_TIMEOUT_S``, ``SWEEP_PERIOD_S``) are read from
``dataplane.proxy`` so one setting governs both.

``dataplane.proxy.load_proxy()`` picks this class when it imports.
"""

import asyncio
import logging

cimport cython

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from dataplane import proxy as _pure
from dataplane._addr_hash cimport memo_get, memo_new, memo_put
from dataplane._slots cimport slot_get, slot_offsets
from dataplane.engine import ErrorCode
from dataplane.routing import Forward, LocalResponse, LocalService
from dataplane.upstream_pool import UpstreamUnavailable, _EndpointPool

log = logging.getLogger("nfmesh.proxy")

cdef dict _METHODS = _pure._METHODS
cdef object _endpoint_text = _pure._endpoint_text
cdef object _code_name = _pure._code_name
cdef object _skip_ejected = _pure.skip_ejected
cdef object _release_admission = _pure.release_admission
cdef object _tell_done = _pure.tell_done
cdef type _ForwardType = Forward
cdef type _PoolType = _EndpointPool
cdef object _INTERNAL_ERROR = ErrorCode.INTERNAL_ERROR
cdef int _CONNECT_ERROR = ErrorCode.CONNECT_ERROR
cdef int _CANCEL = ErrorCode.CANCEL

NAME = "cython"

# where the per-request fields of Forward and of an upstream pool sit in those slots classes
# (dataplane._slots); a class that is no longer built that way switches the direct reads off
cdef Py_ssize_t F_ENDPOINT, F_HEADERS, F_EXTRA, F_TIMEOUT, F_CLUSTER
cdef Py_ssize_t P_WAITERS, P_RESERVED, P_CONNS, P_HOT
cdef bint _FWD_SLOTS = False, _POOL_SLOTS = False
_offsets = slot_offsets(Forward, ("endpoint", "headers", "extra_response_headers", "timeout",
                                  "cluster"))
if _offsets is not None:
    F_ENDPOINT, F_HEADERS, F_EXTRA, F_TIMEOUT, F_CLUSTER = _offsets
    _FWD_SLOTS = True
_offsets = slot_offsets(_EndpointPool, ("waiters", "reserved", "conns", "hot"))
if _offsets is not None:
    P_WAITERS, P_RESERVED, P_CONNS, P_HOT = _offsets
    _POOL_SLOTS = True
DIRECT_SLOTS = (_FWD_SLOTS, _POOL_SLOTS)  # tests read it


cpdef object ready_connection(object pools, object endpoint):
    """``pools.get_ready(endpoint)``, with its common case in C: the endpoint asked last, no
    queue, and its first connection, the one handed out last, has room.  Everything else is
    the pure method's (same answer and the same bookkeeping; a test compares the two)."""
    if endpoint is not pools._last_endpoint:
        return pools.get_ready(endpoint)
    pool = pools._last_pool
    if _POOL_SLOTS and type(pool) is _PoolType:
        if slot_get(pool, P_WAITERS) or slot_get(pool, P_RESERVED):
            return None
        conns = slot_get(pool, P_CONNS)
        hot = slot_get(pool, P_HOT)
    else:
        if pool.waiters or pool.reserved:
            return None
        conns = pool.conns
        hot = pool.hot
    if conns:
        conn = conns[0]
        if conn is hot and conn.available:
            return conn
    return pools.get_ready(endpoint)


cdef inline double _monotonic() noexcept:
    # what time.monotonic() reads on Linux, without a Python call
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


@cython.freelist(256)
cdef class _FastExchange:
    """One forwarded request: the splice observer, its candidates, deadline and outcome."""

    cdef public _ProxyCore proxy
    cdef public object conn, fwd, method, path, timer, task, last_error, endpoint
    cdef public object headers, extra
    cdef public object sid  # the engine's int object (no new one per call)
    cdef public double t0, deadline
    cdef public bint done, retried_same
    cdef public Py_ssize_t next_alt
    # admission (dataplane.admission): read and written by the controller
    cdef public int priority
    cdef public double due, sent_at
    cdef public object consumer, cluster, scopes, gate
    cdef public bint retrying
    cdef object __weakref__

    def __init__(self, _ProxyCore proxy, conn, sid, fwd, method, path, double t0):
        self._setup(proxy, conn, sid, fwd, method, path, t0)
        self._start()

    cdef inline void _setup(self, _ProxyCore proxy, conn, sid, fwd, method, path, double t0):
        self.proxy = proxy
        self.conn = conn
        self.sid = sid
        self.fwd = fwd
        self.method = method
        self.path = path
        self.t0 = t0
        self.deadline = 0.0  # > 0 while watched by the proxy's sweep
        self.timer = None
        self.task = None
        self.done = False
        self.last_error = ""
        if _FWD_SLOTS and type(fwd) is _ForwardType:
            self.endpoint = slot_get(fwd, F_ENDPOINT)
            self.headers = slot_get(fwd, F_HEADERS)
            self.extra = slot_get(fwd, F_EXTRA)
        else:
            self.endpoint = fwd.endpoint
            self.headers = fwd.headers
            self.extra = fwd.extra_response_headers
        self.retried_same = False
        self.next_alt = 0
        self.gate = None
        self.sent_at = -1.0
        self.retrying = False

    cdef _start(self):
        fwd = self.fwd
        cdef _ProxyCore proxy = self.proxy
        timeout = slot_get(fwd, F_TIMEOUT) if _FWD_SLOTS and type(fwd) is _ForwardType \
            else fwd.timeout
        self.due = 0.0
        if timeout is not None:
            self.due = self.t0 + timeout
            if timeout >= proxy._coarse_timeout:
                self.deadline = self.t0 + timeout
                proxy._deadlines[self] = None
                if proxy._sweep_timer is None:
                    proxy._arm_sweep()
            else:
                self.timer = asyncio.get_running_loop().call_later(timeout, self._on_timeout)
        adm = proxy.admission
        if adm is not None:
            self.priority = fwd.priority
            self.consumer = fwd.consumer
            self.cluster = fwd.cluster
            self.scopes = fwd.scopes
            if adm.gates and fwd.alternates and adm.ejected(self.endpoint):
                self._skip_ejected(adm)
            verdict = adm.admit(self)
            if verdict:
                if verdict != 1:  # a refusal: (status, cause, detail)
                    self._answer(verdict[0], verdict[1], verdict[2])
                else:  # queued: admitted() or refused() comes later; a reset cancels it
                    proxy._connecting[(id(self.conn), self.sid)] = self
                return
        self.admitted()

    def _skip_ejected(self, adm) -> None:
        _skip_ejected(self, adm)

    def refused(self, status, cause, detail) -> None:
        """Admission refused it after it waited (the controller calls this)."""
        self.proxy._connecting.pop((id(self.conn), self.sid), None)
        self._answer(status, cause, detail)

    def admitted(self) -> None:
        """Send it now (at once, or when admission takes it from its queue)."""
        if self.done:
            return
        cdef _ProxyCore proxy = self.proxy
        if self.sent_at >= 0 and proxy._connecting:  # it waited in the queue
            proxy._connecting.pop((id(self.conn), self.sid), None)
        if self.due and proxy.restamp is not None and self.fwd.restamp:
            self.headers = proxy.restamp(self.headers, self.due - _monotonic())
        upstream = ready_connection(proxy.pools, self.endpoint)
        if upstream is None:
            self._attempt(self.endpoint, self.headers)
            return
        try:  # _splice, inlined
            self.conn.splice(self.sid, upstream, self.headers, self, self.extra, True)
        except Exception as exc:  # an engine refusing the splice must not cost the connection
            log.exception("splice failed on stream %d", self.sid)
            self._answer(502, "UPSTREAM_ERROR", f"splice failed: {exc}", _INTERNAL_ERROR)

    def _attempt(self, endpoint, headers) -> None:
        cdef _ProxyCore proxy
        if endpoint is not self.endpoint:
            proxy = self.proxy
            if self.due and proxy.restamp is not None and self.fwd.restamp:
                headers = proxy.restamp(headers, self.due - _monotonic())
            if self.gate is not None:
                proxy.admission.move(self, endpoint)
        self.endpoint = endpoint
        self.headers = headers
        upstream = self.proxy.pools.get_ready(endpoint)
        if upstream is not None:
            self._splice(upstream, headers)
            return
        self.task = asyncio.get_running_loop().create_task(self._connect(endpoint, headers))
        self.proxy._connecting[(id(self.conn), self.sid)] = self

    async def _connect(self, endpoint, headers) -> None:
        try:
            upstream = await self.proxy.pools.acquire(endpoint)
        except UpstreamUnavailable as exc:
            self.task = None
            self.proxy._connecting.pop((id(self.conn), self.sid), None)
            if self.done:
                return
            self.last_error = f"{_endpoint_text(endpoint)}: {exc.reason}"
            self._next_or_fail(False, _CONNECT_ERROR)
            return
        except asyncio.CancelledError:
            return
        self.task = None
        self.proxy._connecting.pop((id(self.conn), self.sid), None)
        if not self.done:
            self._splice(upstream, headers)

    def _splice(self, upstream, headers) -> None:
        try:
            self.conn.splice(self.sid, upstream, headers, self, self.extra, True)
        except Exception as exc:  # an engine refusing the splice must not cost the connection
            log.exception("splice failed on stream %d", self.sid)
            self._answer(502, "UPSTREAM_ERROR", f"splice failed: {exc}", _INTERNAL_ERROR)

    def _next_or_fail(self, bint reached, error_code) -> None:
        conn = self.conn
        replayable = conn.can_replay(self.sid)
        fwd = self.fwd
        adm = self.proxy.admission
        if (not reached or fwd.retryable) and replayable and (
                adm is None or self.retrying or adm.retry_allowed()):
            if adm is not None:
                self.retrying = True
            i = self.next_alt
            if i < len(fwd.alternates):
                self.next_alt = i + 1
                endpoint, headers = fwd.alternates[i]
                if i < len(fwd.alternate_response_headers):
                    self.extra = fwd.alternate_response_headers[i]
                self._attempt(endpoint, headers)
                return
            if not reached and not self.retried_same and error_code != _CONNECT_ERROR:
                # refused before processing (REFUSED_STREAM / GOAWAY): once more, same endpoint
                self.retried_same = True
                self._attempt(self.endpoint, self.headers)
                return
        if reached:
            self._answer(502, "UNSPECIFIED_NF_FAILURE",
                         f"{_endpoint_text(self.endpoint)} reset the request "
                         f"({_code_name(error_code)})", error_code)
        else:
            self._answer(504, "TARGET_NF_NOT_REACHABLE",
                         self.last_error or f"{_endpoint_text(self.endpoint)} refused the request",
                         error_code)

    def _answer(self, status, cause, detail, error_code=0) -> None:
        if self.done:
            return
        try:
            resp = self.proxy.error_responder(status, cause, detail)
            self.conn.respond(self.sid, resp.status, resp.headers, resp.body)
        except Exception:
            log.exception("error responder failed")
            self.conn.reset(self.sid, _INTERNAL_ERROR)
        # after on_upstream_failed / a failed connect the stream is no longer spliced, so the
        # engine reports nothing more: record the outcome here
        self._finish(status, error_code)

    def _on_timeout(self) -> None:
        self.timer = None
        self.deadline = 0.0
        if self.done:
            return
        if self.gate is not None and self.sent_at < 0:  # still waiting for admission
            self.proxy._connecting.pop((id(self.conn), self.sid), None)
            self._answer(504, "TIMED_OUT_REQUEST",
                         f"waited for {_endpoint_text(self.endpoint)} at the SCP until the "
                         "request's deadline")
            return
        if self.task is not None:
            self.task.cancel()
            self.task = None
            self.proxy._connecting.pop((id(self.conn), self.sid), None)
            self._answer(504, "TIMED_OUT_REQUEST",
                         f"no connection to {_endpoint_text(self.endpoint)} within "
                         f"{self.fwd.timeout}s")
            return
        # Spliced: respond() cancels the upstream stream if no response headers came yet (the
        # engine then calls on_complete with 504); once they came respond() refuses.
        resp = self.proxy.error_responder(
            504, "TIMED_OUT_REQUEST",
            f"no response from {_endpoint_text(self.endpoint)} within {self.fwd.timeout}s",
        )
        try:
            self.conn.respond(self.sid, resp.status, resp.headers, resp.body)
        except RuntimeError:
            pass

    def cancel(self, error_code) -> None:
        """The downstream stream or connection went away while we were connecting."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._finish(0, error_code)

    def _finish(self, status, error_code) -> None:
        if self.done:
            return
        self.done = True
        proxy = self.proxy
        if self.deadline:
            proxy._deadlines.pop(self, None)
        elif self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if proxy.admission is not None:
            self._release(status, error_code)
        proxy._record(self.fwd.cluster, self.method, self.path, status,
                      _monotonic() - self.t0, error_code, self.endpoint, self.conn)
        if self.fwd.on_done is not None:
            _tell_done(self, status, error_code)

    def _release(self, status, error_code) -> None:
        _release_admission(self, status, error_code)

    def on_response_headers(self, stream_id, status, fields):
        """The engine's response tap (overload/load control headers from the producer)."""
        tap = self.proxy.response_tap
        return fields if tap is None else tap(self, status, fields)

    # ---- SpliceObserver ----------------------------------------------------------------------
    def on_upstream_failed(self, stream_id, error_code, reached) -> None:
        if self.done:
            return
        self.last_error = (
            f"{_endpoint_text(self.endpoint)}: stream ended before response headers "
            f"({_code_name(error_code)})"
        )
        self._next_or_fail(reached, error_code)

    def on_complete(self, stream_id, status, error_code) -> None:
        cdef double duration
        cdef _ProxyCore proxy
        if self.done:
            return
        self.done = True
        proxy = self.proxy
        if self.deadline:
            proxy._deadlines.pop(self, None)
        elif self.timer is not None:
            self.timer.cancel()
            self.timer = None
        duration = _monotonic() - self.t0
        if type(error_code) is not int:
            error_code = int(error_code)  # plain int, never an enum member (metric labels)
        if proxy.admission is not None:
            self._release(status, error_code)
        fwd = self.fwd
        cluster = slot_get(fwd, F_CLUSTER) if _FWD_SLOTS and type(fwd) is _ForwardType \
            else fwd.cluster
        stats = proxy.stats
        if stats is not None:
            try:
                stats.on_request_done(cluster, self.method, status, duration, error_code)
            except Exception:
                log.exception("stats hook failed")
        record = proxy._log_record
        if record is not None:
            try:
                record(self.method, self.path, status, cluster, self.endpoint,
                       duration, error_code, self.conn.peer_info)
            except Exception:
                log.exception("access log hook failed")
        elif proxy.access_log is not None:
            proxy._record_kw(cluster, self.method, self.path, status, duration, error_code,
                             self.endpoint, self.conn)
        if fwd.on_done is not None:
            _tell_done(self, status, error_code)


cdef class _ProxyCore:
    """The proxy state the per-request path touches, as C fields (the pure ``Proxy.__init__``
    fills them), and that path: ``on_request``."""

    cdef public object router_slot, idle_timeout, _activity, pools, error_responder, stats
    cdef public object access_log, connections, _connecting, _sweep_timer
    cdef public object admission, restamp, response_tap
    cdef public dict _deadlines
    cdef list _method_memo  # :method objects seen lately (by identity) and their text
    cdef object _router, _route  # the router last read from router_slot and its bound route
    cdef public object _log_record
    cdef public long requests
    cdef public double _coarse_timeout

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        cdef double t0 = _monotonic()
        cdef Py_ssize_t i, n
        self.requests += 1
        if conn not in self.connections:
            self.connections.add(conn)
        if self.idle_timeout:
            activity = self._activity
            activity[conn] = activity.get(conn, 0) + 1
        # :method and :path as text ("" when missing); pseudo-headers come first and a request
        # has at most five (the engines enforce it): look at the first five, the last wins
        method = path = None
        n = len(headers)
        if n > 5:
            n = 5
        for i in range(n):
            name, value = headers[i]
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
        if method is None:
            method = ""
        else:
            # the decoder's cached field: the same object request after request (one per
            # client connection), remembered with its text
            m = memo_get(self._method_memo, method)
            if m is None:
                m = _METHODS.get(method)
                m = m if m is not None else method.decode("latin-1")
                if self._method_memo is None:  # first request: the memo's (empty) slots
                    self._method_memo = memo_new()
                memo_put(self._method_memo, method, m)
            method = m
        if path is None:
            path = ""
        elif type(path) is bytes:  # path.decode("latin-1") without the method call
            path = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path), NULL)
        else:
            path = path.decode("latin-1")
        try:
            router = self.router_slot.current
            if router is not self._router:  # a new route snapshot: look its method up once
                self._route = router.route
                self._router = router
            decision = self._route(headers, conn.peer_info)
        except Exception as exc:
            log.exception("router failed for %s %s", method, path)
            self._local(conn, stream_id, self.error_responder(
                500, "SYSTEM_FAILURE", f"routing failed: {type(exc).__name__}"), method, path, t0)
            return
        if type(decision) is _ForwardType or isinstance(decision, Forward):
            _new_exchange(self, conn, stream_id, decision, method, path, t0)
        elif isinstance(decision, LocalResponse):
            self._local(conn, stream_id, decision, method, path, t0)
        elif isinstance(decision, LocalService):
            self._service(conn, stream_id, headers, decision, method, path, t0)
        else:
            self._local(conn, stream_id, self.error_responder(
                500, "SYSTEM_FAILURE", f"router returned {type(decision).__name__}"),
                method, path, t0)


class Proxy(_ProxyCore, _pure.Proxy):
    """``dataplane.proxy.Proxy`` with the per-request path compiled (same API)."""

    def __init__(self, *args, **kwargs) -> None:
        _pure.Proxy.__init__(self, *args, **kwargs)
        # read once: the pure module's setting (tests shorten it before building a proxy)
        self._coarse_timeout = _pure.COARSE_TIMEOUT_S


cdef _FastExchange _new_exchange(_ProxyCore proxy, conn, sid, fwd, method, path, double t0):
    # no Python __init__ call per request: allocate, fill, start
    cdef _FastExchange ex = _FastExchange.__new__(_FastExchange)
    ex._setup(proxy, conn, sid, fwd, method, path, t0)
    ex._start()
    return ex
