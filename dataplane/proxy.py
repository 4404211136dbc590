"""The HTTP/2 proxy: one ``ServerHandler`` that routes each request and splices it upstream.

Written only against the engine interface (``dataplane.engine``), so it runs unchanged on the
nghttp2 and the h2 backend.  Per request it asks ``router_slot.current.route`` once, then:

* ``Forward``: take an upstream connection from the pool (at once when one is ready, else
  await the connect while the engine holds the request body) and ``conn.splice`` the stream;
  a failure before the request reached the producer (connect refused, REFUSED_STREAM, GOAWAY
  above our stream) moves on to the next of ``alternates`` (each tried once, within the
  deadline); a failure after it reached the producer is retried only when ``retryable`` and the
  engine still holds the whole body.  Out of options: 504 (unreachable), 502 (upstream reset or
  protocol error), 504 (no response headers within ``Forward.timeout``).
* ``LocalResponse``: answer it.
* ``LocalService``: read the whole body, await ``handle``, answer.

Once per finished request ``stats.on_request_done(cluster, method, status, duration_s,
error_code)`` and ``access_log(method=, path=, status=, cluster=, upstream=, duration_s=,
error_code=, peer=)`` (keyword arguments) are called; status 0 means no response was sent.

When the access log object has a ``record`` method (``gateway.app.AccessLog``), it is called
instead, positionally and with the raw values: ``record(method, path, status, cluster,
endpoint_or_None, duration_s, error_code, peer_info)``; it formats lines in batches.

Response deadlines: a ``Forward.timeout`` of ``COARSE_TIMEOUT_S`` or more is watched by one
sweep per proxy every ``SWEEP_PERIOD_S`` (so at most that late; no timer is created and
cancelled per request); shorter ones get their own loop timer.

Admission (``dataplane.admission``, when the proxy has an ``admission`` controller): each
``Forward`` is admitted before it is sent: sent at once, queued (sent later, or answered with
the controller's refusal), or refused at once (503/504/429 ProblemDetails, never forwarded).
The exchange gives its slot back (``release``) when it ends, or earlier when the client cannot
take the response as the producer sends it (``on_response_stalled``, with the engine setting
``H2Settings.report_response_stall``), so a client that does not read holds no producer
capacity; reselections and retries draw from the controller's retry budget.  A request whose
``Forward.restamp`` is set has its deadline headers re-stamped by ``restamp(headers,
seconds_left)`` when it is sent.  A
response tap (``response_tap(exchange, status, fields)``, with the engine setting
``H2Settings.tap_response_headers``) sees the producer's overload/load headers first.

One bad request costs only its stream: router or service exceptions become a 500 problem.

One source, two twins: this file runs as plain Python (``dataplane.proxy``) and is also
compiled with ``proxy.pxd`` beside it as ``dataplane._proxy_fast`` (setup.py's TWINS), where
the exchange and ``_ProxyCore`` are extension types with C fields, the exchange's steps are C
calls, the clock is read without a Python call, and ``Forward`` and pool fields are read in
place (``dataplane._slots``).  What only the compiled twin does sits behind
``cython.compiled``, or in the stand-ins it replaces; ``load_proxy`` picks the twin.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from collections.abc import Callable
from typing import Protocol

try:
    import cython
except ImportError:  # Cython is not installed: this module runs as plain Python
    from dataplane import _no_cython as cython

from dataplane.admission import AdmissionController
from dataplane.engine import ErrorCode, Headers
from dataplane.routing import (
    Endpoint,
    Forward,
    LocalResponse,
    LocalService,
    Request,
    RouterSlot,
)
from dataplane.twins import TWINS, available_twins, load_twin
from dataplane.upstream_pool import UpstreamPools, UpstreamUnavailable, _EndpointPool

log = logging.getLogger("nfmesh.proxy")

_PROBLEM_JSON = b"application/problem+json"
COARSE_TIMEOUT_S = 2.0  # deadlines at least this far out are checked by the periodic sweep
SWEEP_PERIOD_S = 0.05  # how often the sweep runs while deadlines are pending
# the usual methods as str without decoding them per request
_METHODS = {m.encode(): m for m in (
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE")}

if not cython.compiled:
    # Uncompiled stand-ins for what proxy.pxd gives the compiled twin as C helpers: the same
    # clock; no direct slot reads (slot_offsets answers None, so slot_get is never reached);
    # the method memo is used only where ``cython.compiled``.
    from time import monotonic as _now

    def slot_offsets(cls: type, names: tuple) -> None:
        return None

    slot_get = memo_get = memo_new = memo_put = None

NAME = "cython" if cython.compiled else "pure"

# Compiled: where the per-request fields of Forward and of an upstream pool sit in those slots
# classes (dataplane._slots), read in place after a ``type(obj) is Cls`` check; a class no
# longer built that way switches the direct reads off (the attribute lookups remain).
_FWD_SLOTS = _POOL_SLOTS = False
F_ENDPOINT = F_HEADERS = F_EXTRA = F_TIMEOUT = F_CLUSTER = F_ON_DONE = 0
P_WAITERS = P_RESERVED = P_CONNS = P_HOT = 0
_offsets = slot_offsets(Forward, ("endpoint", "headers", "extra_response_headers", "timeout",
                                  "cluster", "on_done"))
if _offsets is not None:
    F_ENDPOINT, F_HEADERS, F_EXTRA, F_TIMEOUT, F_CLUSTER, F_ON_DONE = _offsets
    _FWD_SLOTS = True
_offsets = slot_offsets(_EndpointPool, ("waiters", "reserved", "conns", "hot"))
if _offsets is not None:
    P_WAITERS, P_RESERVED, P_CONNS, P_HOT = _offsets
    _POOL_SLOTS = True
DIRECT_SLOTS = (_FWD_SLOTS, _POOL_SLOTS)  # tests read it


class ProxyStats(Protocol):
    """Told once per finished request (the gateway wires Prometheus to it)."""

    def on_request_done(
        self, cluster: str, method: str, status: int, duration_s: float, error_code: int
    ) -> None: ...


def default_problem(status: int, cause: str, detail: str) -> LocalResponse:
    """An RFC 7807 ``application/problem+json`` answer: {status, title, cause, detail}."""
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = json.dumps(
        {"status": status, "title": title, "cause": cause, "detail": detail},
        separators=(",", ":"),
    ).encode()
    return LocalResponse(status, [(b"content-type", _PROBLEM_JSON)], body)


def _endpoint_text(endpoint: Endpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"


def ready_connection(pools, endpoint):
    """``pools.get_ready(endpoint)``; compiled, its common case is read in place: the endpoint
    asked last, no queue, and its first connection, the one handed out last, has room.
    Everything else is the pure method's (same answer and bookkeeping; a test compares them)."""
    if _POOL_SLOTS and endpoint is pools._last_endpoint:
        pool = pools._last_pool
        if type(pool) is _EndpointPool:
            if slot_get(pool, P_WAITERS) or slot_get(pool, P_RESERVED):
                return None
            conns = slot_get(pool, P_CONNS)
            if conns:
                conn = conns[0]
                if conn is slot_get(pool, P_HOT) and conn.available:
                    return conn
    return pools.get_ready(endpoint)


def _new_exchange(proxy, conn, sid, fwd, method, path, t0):
    """Start an exchange for ``fwd`` (compiled: no Python ``__init__`` call per request)."""
    ex = _Exchange.__new__(_Exchange)
    ex._begin(proxy, conn, sid, fwd, method, path, t0)
    return ex


def _record(proxy, cluster, method, path, status, duration, error_code, endpoint, conn):
    """One finished request: ``stats.on_request_done`` and the access log (its ``record``
    form, else keyword arguments); a failing hook is logged, never raised into the engine."""
    if type(error_code) is not int:
        error_code = int(error_code)  # plain int, never an enum member (metric labels)
    stats = proxy.stats
    if stats is not None:
        try:
            stats.on_request_done(cluster, method, status, duration, error_code)
        except Exception:
            log.exception("stats hook failed")
    record = proxy._log_record
    if record is not None:
        try:
            record(method, path, status, cluster, endpoint, duration, error_code,
                   conn.peer_info)
        except Exception:
            log.exception("access log hook failed")
    elif proxy.access_log is not None:
        proxy._record_kw(cluster, method, path, status, duration, error_code, endpoint, conn)


class _Exchange:
    """One forwarded request: the splice observer, its candidates, deadline and outcome."""

    __slots__ = (
        "proxy", "conn", "sid", "fwd", "method", "path", "t0", "deadline", "timer", "task",
        "done", "last_error", "endpoint", "headers", "retried_same", "next_alt", "extra",
        "priority", "due", "consumer", "cluster", "scopes", "gate", "sent_at", "retrying",
    )

    def _begin(self, proxy, conn, sid, fwd, method, path, t0):
        """Fill the exchange and start it: watch its deadline, admit it, send it."""
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
        if _FWD_SLOTS and type(fwd) is Forward:
            self.endpoint = slot_get(fwd, F_ENDPOINT)
            self.headers = slot_get(fwd, F_HEADERS)
            self.extra = slot_get(fwd, F_EXTRA)
            timeout = slot_get(fwd, F_TIMEOUT)
        else:
            self.endpoint = fwd.endpoint
            self.headers = fwd.headers
            self.extra = fwd.extra_response_headers
            timeout = fwd.timeout
        self.retried_same = False
        self.next_alt = 0  # index of the next of fwd.alternates to try
        self.gate = None  # admission: the endpoint gate holding (or queueing) this request
        self.sent_at = -1.0
        self.retrying = False
        self.due = 0.0
        if timeout is not None:
            self.due = t0 + timeout
            if timeout >= proxy._coarse_timeout:
                self.deadline = t0 + timeout
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
                    proxy._connecting[(id(conn), sid)] = self
                return
        self.admitted()

    def _skip_ejected(self, adm):
        """The chosen endpoint is ejected (outlier detection): take the first alternate that
        is not, when there is one."""
        fwd = self.fwd
        for i, (endpoint, headers) in enumerate(fwd.alternates):
            if not adm.ejected(endpoint):
                self.endpoint, self.headers = endpoint, headers
                if i < len(fwd.alternate_response_headers):
                    self.extra = fwd.alternate_response_headers[i]
                self.next_alt = i + 1
                return

    def refused(self, status: int, cause: str, detail: str) -> None:
        """Admission refused it after it waited (the controller calls this)."""
        self.proxy._connecting.pop((id(self.conn), self.sid), None)
        self._answer(status, cause, detail)

    def admitted(self) -> None:
        """Send it now (at once, or when admission takes it from its queue)."""
        if self.done:
            return
        proxy = self.proxy
        if self.sent_at >= 0 and proxy._connecting:  # it waited in the queue
            proxy._connecting.pop((id(self.conn), self.sid), None)
        if self.due and proxy.restamp is not None and self.fwd.restamp:
            self.headers = proxy.restamp(self.headers, self.due - _now())
        upstream = ready_connection(proxy.pools, self.endpoint)
        if upstream is None:
            self._attempt(self.endpoint, self.headers)
        else:
            self._splice(upstream, self.headers)

    def _attempt(self, endpoint, headers):
        proxy = self.proxy
        if endpoint is not self.endpoint:
            if self.due and proxy.restamp is not None and self.fwd.restamp:
                headers = proxy.restamp(headers, self.due - _now())
            if self.gate is not None:
                proxy.admission.move(self, endpoint)
        self.endpoint = endpoint
        self.headers = headers
        upstream = proxy.pools.get_ready(endpoint)
        if upstream is not None:
            self._splice(upstream, headers)
            return
        self.task = asyncio.get_running_loop().create_task(self._connect(endpoint, headers))
        proxy._connecting[(id(self.conn), self.sid)] = self

    async def _connect(self, endpoint: Endpoint, headers: Headers) -> None:
        try:
            upstream = await self.proxy.pools.acquire(endpoint)
        except UpstreamUnavailable as exc:
            self.task = None
            self.proxy._connecting.pop((id(self.conn), self.sid), None)
            if self.done:
                return
            self.last_error = f"{_endpoint_text(endpoint)}: {exc.reason}"
            self._next_or_fail(False, ErrorCode.CONNECT_ERROR)
            return
        except asyncio.CancelledError:
            return
        self.task = None
        self.proxy._connecting.pop((id(self.conn), self.sid), None)
        if not self.done:
            self._splice(upstream, headers)

    def _splice(self, upstream, headers):
        try:
            self.conn.splice(self.sid, upstream, headers, self, self.extra, True)
        except Exception as exc:  # an engine refusing the splice must not cost the connection
            log.exception("splice failed on stream %d", self.sid)
            self._answer(502, "UPSTREAM_ERROR", f"splice failed: {exc}", ErrorCode.INTERNAL_ERROR)

    def _next_or_fail(self, reached, error_code):
        replayable = self.conn.can_replay(self.sid)
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
            if not reached and not self.retried_same and error_code != ErrorCode.CONNECT_ERROR:
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

    def _answer(self, status, cause, detail, error_code=0):
        if self.done:
            return
        try:
            resp = self.proxy.error_responder(status, cause, detail)
            self.conn.respond(self.sid, resp.status, resp.headers, resp.body)
        except Exception:
            log.exception("error responder failed")
            self.conn.reset(self.sid, ErrorCode.INTERNAL_ERROR)
        if status == 429:  # admission: the consumer's own excess, the engine's refused budget
            self.conn.count_refused()
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
        # engine then calls on_complete with 504); once they came the deadline is met and
        # respond() refuses (RuntimeError).
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

    def _finish(self, status, error_code):
        """The exchange ended (once): stop watching its deadline, give admission back, record
        it, and tell the decision's ``on_done`` hook."""
        if self.done:
            return
        self.done = True
        proxy = self.proxy
        if self.deadline:
            proxy._deadlines.pop(self, None)
        elif self.timer is not None:
            self.timer.cancel()
            self.timer = None
        duration = _now() - self.t0
        if proxy.admission is not None:
            self._release(status, error_code)
        fwd = self.fwd
        if _FWD_SLOTS and type(fwd) is Forward:
            cluster = slot_get(fwd, F_CLUSTER)
            on_done = slot_get(fwd, F_ON_DONE)
        else:
            cluster = fwd.cluster
            on_done = fwd.on_done
        _record(proxy, cluster, self.method, self.path, status, duration, error_code,
                self.endpoint, self.conn)
        if on_done is not None:
            try:
                on_done(status, int(error_code), self.endpoint, self.next_alt)
            except Exception:
                log.exception("on_done hook failed")

    def _release(self, status, error_code):
        """Admission: the retry-budget share and the admission slot go back; a failure of the
        producer (5xx, or no status and an error other than the client's CANCEL) is counted."""
        adm = self.proxy.admission
        if self.retrying:
            self.retrying = False
            adm.retry_done()
        if self.gate is not None:
            adm.release(self, status, status >= 500 or (
                status == 0 and error_code != 0 and error_code != ErrorCode.CANCEL))

    def on_response_headers(self, stream_id, status, fields):
        """The engine's response tap (overload/load control headers from the producer)."""
        tap = self.proxy.response_tap
        return fields if tap is None else tap(self, status, fields)

    def on_response_stalled(self, stream_id, status) -> None:
        """The client cannot take the response as fast as the producer sends it: the
        admission slot goes back now (the producer has answered; a client that does not read
        must not hold the producer's capacity), with the time so far as the sample."""
        if self.gate is not None:
            self.proxy.admission.release(self, status, status >= 500)

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
        self._finish(status, error_code)


class _ProxyCore:
    """The proxy state the per-request path touches (compiled: C fields, which
    ``Proxy.__init__`` fills) and that path: ``on_request``."""

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        t0: cython.double = _now()
        i: cython.Py_ssize_t
        n: cython.Py_ssize_t
        self.requests += 1
        if conn not in self.connections:
            self.connections.add(conn)
        if self.idle_timeout:
            activity = self._activity
            activity[conn] = activity.get(conn, 0) + 1
        # :method and :path as text ("" when missing).  Pseudo-headers come first and a request
        # has at most five (RFC 9113 §8.3.1, RFC 8441), which the engines enforce: look at the
        # first five, the last wins
        method = path = None
        n = min(len(headers), 5)
        for i in range(n):
            name, value = headers[i]
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
        if method is None:
            method = ""
        else:
            # compiled: the decoder's cached field is the same object request after request
            # (one per client connection), remembered with its text
            m = memo_get(self._method_memo, method) if cython.compiled else None
            if m is None:
                m = _METHODS.get(method)
                if m is None:
                    m = method.decode("latin-1")
                if cython.compiled:
                    if self._method_memo is None:  # first request: the memo's (empty) slots
                        self._method_memo = memo_new()
                    memo_put(self._method_memo, method, m)
            method = m
        if path is None:
            path = ""
        elif cython.compiled and type(path) is bytes:
            path = cython.cast(bytes, path).decode("latin-1")
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
        if type(decision) is Forward or isinstance(decision, Forward):
            _new_exchange(self, conn, stream_id, decision, method, path, t0)  # starts it
        elif isinstance(decision, LocalResponse):
            self._local(conn, stream_id, decision, method, path, t0)
        elif isinstance(decision, LocalService):
            self._service(conn, stream_id, headers, decision, method, path, t0)
        else:
            self._local(conn, stream_id, self.error_responder(
                500, "SYSTEM_FAILURE", f"router returned {type(decision).__name__}"),
                method, path, t0)


class Proxy(_ProxyCore):
    """The ServerHandler of the SBI listener (see the module docstring)."""

    def __init__(
        self,
        router_slot: RouterSlot,
        pools: UpstreamPools,
        error_responder: Callable[[int, str, str], LocalResponse] = default_problem,
        stats: ProxyStats | None = None,
        access_log: Callable[..., None] | None = None,
        idle_timeout: float | None = None,
        admission: AdmissionController | None = None,
        restamp: Callable[[Headers, float], Headers] | None = None,
        response_tap: Callable[..., Headers | None] | None = None,
    ) -> None:
        self.router_slot = router_slot
        self.admission = admission
        self.restamp = restamp
        self.response_tap = response_tap
        # downstream connections with no request for this long (and none open) are drained;
        # this also bounds what a peer that connects and then sends nothing can hold
        self.idle_timeout = idle_timeout
        self._activity = {}
        self.pools = pools
        self.error_responder = error_responder
        self.stats = stats
        self.access_log = access_log
        self.connections = set()
        self._connecting = {}  # (id(conn), stream id) -> _Exchange waiting to be sent
        self._services: set[asyncio.Task] = set()
        self.requests = 0
        # exchanges whose (long) deadline the sweep watches, and the sweep's timer; the
        # module's threshold is read once (tests shorten it before building a proxy)
        self._deadlines = {}
        self._sweep_timer = None
        self._coarse_timeout = COARSE_TIMEOUT_S
        self._log_record = getattr(access_log, "record", None)
        self._router = self._route = None  # on_request's bound route of the current router

    # ---- ServerHandler -----------------------------------------------------------------------
    def on_connection_made(self, conn) -> None:
        """Called by the listener for each accepted connection (so ``drain`` reaches idle ones)."""
        self.connections.add(conn)
        if self.idle_timeout:
            self._activity[conn] = 0
            asyncio.get_running_loop().call_later(self.idle_timeout, self._check_idle, conn, 0)

    def _check_idle(self, conn, seen: int) -> None:
        if conn not in self.connections:
            return
        count = self._activity.get(conn, 0)
        loop = asyncio.get_running_loop()
        if count != seen or conn.open_streams:
            loop.call_later(self.idle_timeout, self._check_idle, conn, count)
            return
        log.info("draining idle connection from %s", conn.peer_info.get("peername"))
        conn.drain()
        # a peer that ignores the GOAWAY is closed anyway
        loop.call_later(max(5.0, self.idle_timeout), self._close_if_left, conn)

    def _close_if_left(self, conn) -> None:
        if conn in self.connections and not conn.open_streams:
            conn.close()

    def on_stream_reset(self, conn, stream_id: int, error_code: int) -> None:
        ex = self._connecting.pop((id(conn), stream_id), None)
        if ex is not None:
            ex.cancel(error_code)

    def on_connection_lost(self, conn) -> None:
        self.connections.discard(conn)
        self._activity.pop(conn, None)
        key = id(conn)
        for k in [k for k in self._connecting if k[0] == key]:
            # one cancel gives its admission slot back, and the queue it pumps may answer (and
            # drop from ``_connecting``) another of this connection's exchanges meanwhile
            ex = self._connecting.pop(k, None)
            if ex is not None:
                ex.cancel(ErrorCode.CANCEL)

    # ---- local answers and services ------------------------------------------------------------
    def _local(self, conn, sid: int, resp: LocalResponse, method: str, path: str,
               t0: float, cluster: str = "") -> None:
        conn.respond(sid, resp.status, resp.headers, resp.body)
        _record(self, cluster, method, path, resp.status, _now() - t0, 0, None, conn)

    def _service(self, conn, sid: int, headers: Headers, svc: LocalService, method: str,
                 path: str, t0: float) -> None:
        def on_body(body: bytes | None, trailers: Headers) -> None:
            if body is None:  # over the limit (engine answered 413) or reset
                _record(self, svc.name, method, path, 413, _now() - t0, 0, None, conn)
                return
            req = Request(method, path, headers, body, conn.peer_info)
            task = asyncio.get_running_loop().create_task(self._run_service(conn, sid, svc, req, t0))
            self._services.add(task)
            task.add_done_callback(self._services.discard)

        conn.read_body(sid, svc.max_body, on_body)

    async def _run_service(self, conn, sid: int, svc: LocalService, req: Request,
                           t0: float) -> None:
        try:
            resp = await svc.handle(req)
        except Exception as exc:
            log.exception("local service %s failed on %s %s", svc.name, req.method, req.path)
            resp = self.error_responder(500, "SYSTEM_FAILURE",
                                        f"{svc.name} failed: {type(exc).__name__}")
        self._local(conn, sid, resp, req.method, req.path, t0, svc.name)

    # ---- bookkeeping -------------------------------------------------------------------------
    def _record_kw(self, cluster: str, method: str, path: str, status: int, duration: float,
                   error_code: int, endpoint: Endpoint | None, conn) -> None:
        """The access log call for a plain callable (keyword arguments)."""
        try:
            self.access_log(  # type: ignore[misc]
                method=method, path=path, status=status, cluster=cluster,
                upstream=_endpoint_text(endpoint) if endpoint else "",
                duration_s=duration, error_code=error_code,
                peer=conn.peer_info.get("peername"),
            )
        except Exception:
            log.exception("access log hook failed")

    # ---- deadlines ---------------------------------------------------------------------------
    # an exchange with a long deadline puts itself in ``_deadlines`` and arms the sweep when
    # it is not armed; the sweep re-arms itself while any is left
    def _arm_sweep(self) -> None:
        self._sweep_timer = asyncio.get_running_loop().call_later(SWEEP_PERIOD_S, self._sweep)

    def _sweep(self) -> None:
        self._sweep_timer = None
        pending = self._deadlines
        if not pending:
            return
        now = _now()
        expired = [ex for ex in pending if ex.deadline <= now]
        for ex in expired:
            pending.pop(ex, None)
            try:
                ex._on_timeout()
            except Exception:
                log.exception("response timeout handling failed on stream %d", ex.sid)
        if pending:
            self._arm_sweep()

    # ---- shutdown ------------------------------------------------------------------------------
    def drain(self) -> None:
        """Graceful shutdown: GOAWAY on every downstream connection; in-flight requests finish."""
        for conn in list(self.connections):
            conn.drain()

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until every downstream connection closed; close the rest after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        left = list(self.connections)
        for conn in left:
            conn.close()
        return not left


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return hex(code)


# ---- implementation choice -----------------------------------------------------------------------
PROXIES = TWINS


def load_proxy(name: str = "auto") -> type[Proxy]:
    """Return the ``Proxy`` class: ``cython`` (``dataplane._proxy_fast``: this very file
    compiled with ``proxy.pxd``, see setup.py's TWINS), ``pure`` (``dataplane.proxy``'s), or
    ``auto``: the compiled one when built, unless the environment variable ``NFMESH_PROXY``
    names one (A/B measurements)."""
    from dataplane import proxy as pure  # this module, also when called from the compiled one

    return load_twin(name, ("dataplane._proxy_fast", "Proxy"), pure.Proxy, "NFMESH_PROXY",
                     "proxy")  # type: ignore[return-value]


def available_proxies() -> list[str]:
    """Names of the proxy implementations that import here."""
    return available_twins(load_proxy)
