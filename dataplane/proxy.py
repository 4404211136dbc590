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
The exchange tells the controller when it ends (``release``), and reselections and retries
draw from the controller's retry budget.  A request whose ``Forward.restamp`` is set has its
deadline headers re-stamped by ``restamp(headers, seconds_left)`` when it is sent.  A
response tap (``response_tap(exchange, status, fields)``, with the engine setting
``H2Settings.tap_response_headers``) sees the producer's overload/load headers first.

One bad request costs only its stream: router or service exceptions become a 500 problem.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

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
from dataplane.upstream_pool import UpstreamPools, UpstreamUnavailable

log = logging.getLogger("nfmesh.proxy")

_PROBLEM_JSON = b"application/problem+json"
COARSE_TIMEOUT_S = 2.0  # deadlines at least this far out are checked by the periodic sweep
SWEEP_PERIOD_S = 0.05  # how often the sweep runs while deadlines are pending
_monotonic = time.monotonic
# the usual methods as str without decoding them per request
_METHODS = {m.encode(): m for m in (
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE")}


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


# ---- admission, shared by both exchange classes (this module's and dataplane._proxy_fast's) ------

def skip_ejected(ex, adm) -> None:
    """``ex``'s chosen endpoint is ejected (outlier detection): take the first alternate that
    is not, when there is one."""
    fwd = ex.fwd
    for i, (endpoint, headers) in enumerate(fwd.alternates):
        if not adm.ejected(endpoint):
            ex.endpoint, ex.headers = endpoint, headers
            if i < len(fwd.alternate_response_headers):
                ex.extra = fwd.alternate_response_headers[i]
            ex.next_alt = i + 1
            return


def tell_done(ex, status: int, error_code: int) -> None:
    """Call the decision's ``on_done`` (a failing hook is logged, never raised into the
    engine)."""
    try:
        ex.fwd.on_done(status, int(error_code), ex.endpoint, ex.next_alt)
    except Exception:
        log.exception("on_done hook failed")


def release_admission(ex, status: int, error_code: int) -> None:
    """``ex`` ended: its retry-budget share and its admission slot go back; a failure of the
    producer (5xx, or no status and an error other than the client's CANCEL) is counted."""
    adm = ex.proxy.admission
    if ex.retrying:
        ex.retrying = False
        adm.retry_done()
    if ex.gate is not None:
        adm.release(ex, status, status >= 500 or (
            status == 0 and error_code != 0 and error_code != ErrorCode.CANCEL))


class _Exchange:
    """One forwarded request: the splice observer, its candidates, deadline and outcome."""

    __slots__ = (
        "proxy", "conn", "sid", "fwd", "method", "path", "t0", "deadline", "timer", "task",
        "done", "last_error", "endpoint", "headers", "retried_same", "next_alt", "extra",
        "priority", "due", "consumer", "cluster", "scopes", "gate", "sent_at", "retrying",
    )

    def __init__(self, proxy: Proxy, conn, sid: int, fwd: Forward, method: str, path: str,
                 t0: float) -> None:
        self.proxy = proxy
        self.conn = conn
        self.sid = sid
        self.fwd = fwd
        self.method = method
        self.path = path
        self.t0 = t0
        self.deadline = 0.0  # > 0 while watched by the proxy's sweep
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.done = False
        self.last_error = ""
        self.endpoint = fwd.endpoint
        self.headers = fwd.headers
        self.extra: Headers = fwd.extra_response_headers
        self.retried_same = False
        self.next_alt = 0  # index of the next of fwd.alternates to try
        self.gate = None  # admission: the endpoint gate holding (or queueing) this request
        self.sent_at = -1.0
        self.retrying = False
        # start at once (one call less per request than a separate start())
        timeout = fwd.timeout
        self.due = 0.0
        if timeout is not None:
            self.due = t0 + timeout
            if timeout >= COARSE_TIMEOUT_S:
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

    def _skip_ejected(self, adm) -> None:
        skip_ejected(self, adm)

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
        fwd = self.fwd
        if fwd.restamp and proxy.restamp is not None and self.due:
            self.headers = proxy.restamp(self.headers, self.due - _monotonic())
        upstream = proxy.pools.get_ready(self.endpoint)
        if upstream is None:
            self._attempt(self.endpoint, self.headers)
            return
        try:  # _splice, inlined
            self.conn.splice(self.sid, upstream, self.headers, self, self.extra, True)
        except Exception as exc:  # an engine refusing the splice must not cost the connection
            log.exception("splice failed on stream %d", self.sid)
            self._answer(502, "UPSTREAM_ERROR", f"splice failed: {exc}", ErrorCode.INTERNAL_ERROR)

    def _attempt(self, endpoint: Endpoint, headers: Headers) -> None:
        if endpoint is not self.endpoint:
            proxy = self.proxy
            if self.fwd.restamp and proxy.restamp is not None and self.due:
                headers = proxy.restamp(headers, self.due - _monotonic())
            if self.gate is not None:
                proxy.admission.move(self, endpoint)
        self.endpoint = endpoint
        self.headers = headers
        pools = self.proxy.pools
        upstream = pools.get_ready(endpoint)
        if upstream is not None:
            self._splice(upstream, headers)
            return
        self.task = asyncio.get_running_loop().create_task(self._connect(endpoint, headers))
        self.proxy._connecting[(id(self.conn), self.sid)] = self

    async def _connect(self, endpoint: Endpoint, headers: Headers) -> None:
        try:
            upstream = await self.proxy.pools.acquire(endpoint)
        except UpstreamUnavailable as exc:
            self.task = None
            self.proxy._connecting.pop((id(self.conn), self.sid), None)
            if self.done:
                return
            self.last_error = f"{_endpoint_text(endpoint)}: {exc.reason}"
            self._next_or_fail(reached=False, error_code=ErrorCode.CONNECT_ERROR)
            return
        except asyncio.CancelledError:
            return
        self.task = None
        self.proxy._connecting.pop((id(self.conn), self.sid), None)
        if not self.done:
            self._splice(upstream, headers)

    def _splice(self, upstream, headers: Headers) -> None:
        try:
            self.conn.splice(self.sid, upstream, headers, self, self.extra, True)
        except Exception as exc:  # an engine refusing the splice must not cost the connection
            log.exception("splice failed on stream %d", self.sid)
            self._answer(502, "UPSTREAM_ERROR", f"splice failed: {exc}", ErrorCode.INTERNAL_ERROR)

    def _next_or_fail(self, reached: bool, error_code: int) -> None:
        conn = self.conn
        replayable = conn.can_replay(self.sid)
        adm = self.proxy.admission
        if (not reached or self.fwd.retryable) and replayable and (
                adm is None or self.retrying or adm.retry_allowed()):
            if adm is not None:
                self.retrying = True
            fwd = self.fwd
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

    def _answer(self, status: int, cause: str, detail: str, error_code: int = 0) -> None:
        if self.done:
            return
        try:
            resp = self.proxy.error_responder(status, cause, detail)
            self.conn.respond(self.sid, resp.status, resp.headers, resp.body)
        except Exception:
            log.exception("error responder failed")
            self.conn.reset(self.sid, ErrorCode.INTERNAL_ERROR)
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

    def cancel(self, error_code: int) -> None:
        """The downstream stream or connection went away while we were connecting."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._finish(0, error_code)

    def _finish(self, status: int, error_code: int) -> None:
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
            tell_done(self, status, error_code)

    def _release(self, status: int, error_code: int) -> None:
        release_admission(self, status, error_code)

    def on_response_headers(self, stream_id: int, status: int, fields: Headers) -> Headers | None:
        """The engine's response tap (overload/load control headers from the producer)."""
        tap = self.proxy.response_tap
        return fields if tap is None else tap(self, status, fields)

    # ---- SpliceObserver ----------------------------------------------------------------------
    def on_upstream_failed(self, stream_id: int, error_code: int, reached: bool) -> None:
        if self.done:
            return
        self.last_error = (
            f"{_endpoint_text(self.endpoint)}: stream ended before response headers "
            f"({_code_name(error_code)})"
        )
        self._next_or_fail(reached, error_code)

    def on_complete(self, stream_id: int, status: int, error_code: int) -> None:
        # _finish, inlined: this runs once per forwarded request
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
        # Proxy._record, inlined
        cluster = self.fwd.cluster
        if proxy.stats is not None:
            try:
                proxy.stats.on_request_done(cluster, self.method, status, duration, error_code)
            except Exception:
                log.exception("stats hook failed")
        if proxy._log_record is not None:
            try:
                proxy._log_record(self.method, self.path, status, cluster, self.endpoint,
                                  duration, error_code, self.conn.peer_info)
            except Exception:
                log.exception("access log hook failed")
        elif proxy.access_log is not None:
            proxy._record_kw(cluster, self.method, self.path, status, duration, error_code,
                             self.endpoint, self.conn)
        if self.fwd.on_done is not None:
            tell_done(self, status, error_code)


class Proxy:
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
        self._activity: dict = {}
        self.pools = pools
        self.error_responder = error_responder
        self.stats = stats
        self.access_log = access_log
        self.connections: set = set()
        self._connecting: dict[tuple[int, int], _Exchange] = {}
        self._services: set[asyncio.Task] = set()
        self.requests = 0
        # exchanges whose (long) deadline the sweep watches, and the sweep's timer
        self._deadlines: dict[_Exchange, None] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._log_record = getattr(access_log, "record", None)

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

    def on_request(self, conn, stream_id: int, headers: Headers, end_stream: bool) -> None:
        t0 = _monotonic()
        self.requests += 1
        if conn not in self.connections:
            self.connections.add(conn)
        if self.idle_timeout:
            self._activity[conn] = self._activity.get(conn, 0) + 1
        # :method and :path as text ("" when missing).  Pseudo-headers come first and a request
        # has at most five (RFC 9113 §8.3.1, RFC 8441), which the engines enforce, so a dict of
        # the first five holds them (built in C: cheaper than a Python loop over the list)
        first = dict(headers[:5])
        method = first.get(b":method")
        method = "" if method is None else (_METHODS.get(method) or method.decode("latin-1"))
        path = first.get(b":path")
        path = "" if path is None else path.decode("latin-1")
        try:
            decision = self.router_slot.current.route(headers, conn.peer_info)
        except Exception as exc:
            log.exception("router failed for %s %s", method, path)
            self._local(conn, stream_id, self.error_responder(
                500, "SYSTEM_FAILURE", f"routing failed: {type(exc).__name__}"), method, path, t0)
            return
        if type(decision) is Forward or isinstance(decision, Forward):
            _Exchange(self, conn, stream_id, decision, method, path, t0)  # starts it
        elif isinstance(decision, LocalResponse):
            self._local(conn, stream_id, decision, method, path, t0)
        elif isinstance(decision, LocalService):
            self._service(conn, stream_id, headers, decision, method, path, t0)
        else:
            self._local(conn, stream_id, self.error_responder(
                500, "SYSTEM_FAILURE", f"router returned {type(decision).__name__}"),
                method, path, t0)

    def on_stream_reset(self, conn, stream_id: int, error_code: int) -> None:
        ex = self._connecting.pop((id(conn), stream_id), None)
        if ex is not None:
            ex.cancel(error_code)

    def on_connection_lost(self, conn) -> None:
        self.connections.discard(conn)
        self._activity.pop(conn, None)
        key = id(conn)
        for k in [k for k in self._connecting if k[0] == key]:
            self._connecting.pop(k).cancel(ErrorCode.CANCEL)

    # ---- local answers and services ------------------------------------------------------------
    def _local(self, conn, sid: int, resp: LocalResponse, method: str, path: str,
               t0: float, cluster: str = "") -> None:
        conn.respond(sid, resp.status, resp.headers, resp.body)
        self._record(cluster, method, path, resp.status, time.monotonic() - t0, 0, None, conn)

    def _service(self, conn, sid: int, headers: Headers, svc: LocalService, method: str,
                 path: str, t0: float) -> None:
        def on_body(body: bytes | None, trailers: Headers) -> None:
            if body is None:  # over the limit (engine answered 413) or reset
                self._record(svc.name, method, path, 413, time.monotonic() - t0, 0, None, conn)
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
    def _record(self, cluster: str, method: str, path: str, status: int, duration: float,
                error_code: int, endpoint: Endpoint | None, conn) -> None:
        error_code = int(error_code)  # plain int, never an enum member (metric labels)
        if self.stats is not None:
            try:
                self.stats.on_request_done(cluster, method, status, duration, error_code)
            except Exception:
                log.exception("stats hook failed")
        if self._log_record is not None:
            try:
                self._log_record(method, path, status, cluster, endpoint, duration, error_code,
                                 conn.peer_info)
            except Exception:
                log.exception("access log hook failed")
        elif self.access_log is not None:
            self._record_kw(cluster, method, path, status, duration, error_code, endpoint, conn)

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
        now = _monotonic()
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
    """Return the ``Proxy`` class: ``cython`` (``dataplane._proxy_fast``, the per-request path
    compiled, same API), ``pure`` (this module's), or ``auto``: the compiled one when built,
    unless the environment variable ``NFMESH_PROXY`` names one (A/B measurements)."""
    return load_twin(name, ("dataplane._proxy_fast", "Proxy"), Proxy, "NFMESH_PROXY",
                     "proxy")  # type: ignore[return-value]


def available_proxies() -> list[str]:
    """Names of the proxy implementations that import here."""
    return available_twins(load_proxy)
