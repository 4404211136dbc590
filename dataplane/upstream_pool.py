"""Upstream connection pools: multiplexed HTTP/2 client connections per ``routing.Endpoint``.

Per endpoint the pool keeps up to ``max_connections`` connections and hands out one that can
take a stream (honouring the peer's SETTINGS_MAX_CONCURRENT_STREAMS: when all are full another
is opened; at ``max_connections`` requests queue, first come first served, up to
``pending_timeout`` for a free stream).  Connects are single-flight, bounded by
``connect_timeout`` (TCP, TLS and the peer's first SETTINGS).  Both limits are per endpoint:
the constructor's values, unless ``set_endpoint_limits`` gave that endpoint its own (a
cluster's ``max_connections`` and ``connect_timeout_s``).  Connections are opened only when the
ones there are full, so the default (16) is headroom: a client that does not read its
responses pins the producer streams they came on (the producer's own
SETTINGS_MAX_CONCURRENT_STREAMS, often 100 a connection) until it reads or leaves, and with
4 connections four such clients were enough to leave nothing for anyone else.  After a failed connect the endpoint
is in back-off (exponential with jitter) during which ``acquire`` fails at once with a clear
``UpstreamUnavailable``; the first success clears it.  A TLS endpoint that names an
``identity`` must pass ``peer_check`` (the gateway's producer identity check) after the
handshake, or the connect counts as failed.  Connections idle longer than
``idle_timeout`` are closed.

The fast path (``get_ready``) reads no clock: it only remembers which connection it handed out
last (``hot``).  A connection's ``last_used`` is stamped when it stops being the hot one and,
for the hot one, by the idle sweep (which then forgets it), so a connection is never closed
before ``idle_timeout`` of real idleness and, with the sweep every quarter ``idle_timeout``, at
most 1.5 ``idle_timeout`` after its last use.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from types import ModuleType

from dataplane.engine import H2Settings, load_backend
from dataplane.routing import Endpoint

log = logging.getLogger("nfmesh.upstream")

_NO_ENDPOINT = object()  # get_ready's last-endpoint cache when empty (matches no argument)


class UpstreamUnavailable(Exception):
    """No connection to an endpoint could be had; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _EndpointPool:
    __slots__ = ("conns", "connecting", "failures", "retry_at", "last_error", "last_used",
                 "waiters", "dispatcher", "reserved", "hot", "max_connections", "connect_timeout")

    def __init__(self, max_connections: int = 8, connect_timeout: float = 2.0) -> None:
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.conns: list = []
        self.waiters: deque[asyncio.Future] = deque()
        self.dispatcher: asyncio.Task | None = None
        # streams handed to queued requests that have not opened them yet, per connection
        self.reserved: dict[int, int] = {}
        self.connecting: asyncio.Task | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.last_used: dict[int, float] = {}
        # the connection get_ready handed out last since the previous idle sweep (None: none);
        # it counts as used "now" until another one takes its place or the sweep stamps it
        self.hot = None


class UpstreamPools:
    """All upstream pools of one data-plane worker."""

    def __init__(
        self,
        backend: ModuleType | str,
        settings: H2Settings,
        connect_timeout: float = 2.0,
        ssl_context_factory: Callable[[Endpoint], ssl.SSLContext | None] | None = None,
        max_connections: int = 16,
        idle_timeout: float = 60.0,
        backoff_base: float = 0.05,
        backoff_max: float = 5.0,
        pending_timeout: float | None = None,
        peer_check: Callable[[Endpoint, object], str | None] | None = None,
    ) -> None:
        self.backend = load_backend(backend) if isinstance(backend, str) else backend
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.ssl_context_factory = ssl_context_factory
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # how long a request may wait for a stream when every allowed connection is full
        self.pending_timeout = connect_timeout if pending_timeout is None else pending_timeout
        # for a TLS endpoint with an ``identity``: ``peer_check(endpoint, ssl_object)`` after
        # the handshake, None to accept, else why not (then the connect fails: alternates)
        self.peer_check = peer_check
        self._tls_peers: dict[int, object] = {}  # id(conn) -> its ssl object (retire_where)
        self._pools: dict[Endpoint, _EndpointPool] = {}
        # per-endpoint (max_connections, connect_timeout) overriding the two above
        self._limits: dict[Endpoint, tuple[int, float]] = {}
        # the endpoint asked last and its pool: most requests repeat it, and an identity check
        # is cheaper than hashing the Endpoint dataclass
        self._last_endpoint: object = _NO_ENDPOINT
        self._last_pool: _EndpointPool | None = None
        self._sweeper: asyncio.Task | None = None
        self._closed = False
        self.connects = 0  # successful connects (observability)

    # ---- fast path ---------------------------------------------------------------------------
    def get_ready(self, endpoint: Endpoint):
        """A connection that can take a stream now, or None (also while requests are queued for
        a stream: newcomers do not overtake them)."""
        if endpoint is self._last_endpoint:
            pool = self._last_pool
        else:
            pool = self._pools.get(endpoint)
            if pool is None:
                return None
            self._last_endpoint, self._last_pool = endpoint, pool
        if pool.waiters or pool.reserved:
            return None
        conns = pool.conns
        if conns:
            conn = conns[0]  # the common case: the first connection has room (no loop set up)
            if not conn.available:
                for conn in conns:
                    if conn.available:
                        break
                else:
                    return None
            if conn is not pool.hot:
                _cool(pool)
                pool.hot = conn
            return conn
        return None

    async def acquire(self, endpoint: Endpoint):
        """A connection that can take a stream; connects when needed, queues when every
        allowed connection is at the peer's stream limit.

        Raises ``UpstreamUnavailable`` (back-off, connect refused or timed out, queued for
        longer than ``pending_timeout``)."""
        if self._closed:
            raise UpstreamUnavailable("upstream pools are closed")
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._pools[endpoint] = _EndpointPool(*self.limits_for(endpoint))
            self._start_sweeper()
        conn = self.get_ready(endpoint)
        if conn is not None:
            return conn
        pool.conns = [c for c in pool.conns if not c.closed]
        if not pool.conns:
            # nothing to queue on: connect (single flight) and fail fast in back-off
            if pool.connecting is None:
                self._check_backoff(pool)
                self._start_connect(endpoint, pool)
            await asyncio.shield(pool.connecting)
            conn = self.get_ready(endpoint)
            if conn is not None:
                return conn
        elif len(pool.conns) < pool.max_connections and pool.connecting is None \
                and time.monotonic() >= pool.retry_at:
            self._start_connect(endpoint, pool)  # more capacity; meanwhile queue
        return await self._wait_for_stream(endpoint, pool)

    def limits_for(self, endpoint: Endpoint) -> tuple[int, float]:
        """``(max_connections, connect_timeout)`` for ``endpoint``."""
        return self._limits.get(endpoint, (self.max_connections, self.connect_timeout))

    def set_endpoint_limits(self, limits: dict[Endpoint, tuple[int, float]]) -> None:
        """Give these endpoints their own ``(max_connections, connect_timeout)``; every other
        endpoint gets the constructor's values again.  Applies to pools already open too: a
        lower connection limit stops new connects (open connections stay until idle)."""
        for endpoint, (max_conns, timeout) in limits.items():
            if max_conns < 1 or not timeout > 0:
                raise ValueError(f"{endpoint}: max_connections must be >= 1 and "
                                 f"connect_timeout > 0, got {max_conns}, {timeout}")
        self._limits = dict(limits)
        for endpoint, pool in self._pools.items():
            pool.max_connections, pool.connect_timeout = self.limits_for(endpoint)

    def _check_backoff(self, pool: _EndpointPool) -> None:
        now = time.monotonic()
        if now < pool.retry_at:
            raise UpstreamUnavailable(
                f"in back-off for {pool.retry_at - now:.2f}s after {pool.failures} "
                f"failed connect(s): {pool.last_error}"
            )

    def _start_connect(self, endpoint: Endpoint, pool: _EndpointPool) -> None:
        pool.connecting = asyncio.get_running_loop().create_task(self._connect(endpoint, pool))
        pool.connecting.add_done_callback(_retrieve)
        pool.connecting.add_done_callback(lambda _t: self._kick(endpoint, pool))

    async def _wait_for_stream(self, endpoint: Endpoint, pool: _EndpointPool):
        """Queue (FIFO) for a free stream, at most ``pending_timeout``."""
        fut = asyncio.get_running_loop().create_future()
        pool.waiters.append(fut)
        self._kick(endpoint, pool)
        try:
            conn = await asyncio.wait_for(fut, self.pending_timeout)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"all {len(pool.conns)} connection(s) stayed at their stream limit for "
                f"{self.pending_timeout}s"
            ) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                _unreserve(pool, fut.result())
            raise
        _unreserve(pool, conn)  # the caller opens its stream before the loop runs again
        return conn

    def _kick(self, endpoint: Endpoint, pool: _EndpointPool) -> None:
        if pool.waiters and pool.dispatcher is None and not self._closed:
            pool.dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(endpoint, pool))

    async def _dispatch(self, endpoint: Endpoint, pool: _EndpointPool) -> None:
        """Hand free streams to queued requests in order.  The engines do not announce stream
        ends, so while requests are queued this looks again every millisecond."""
        waiters = pool.waiters
        try:
            while waiters:
                handed = 0
                for conn in pool.conns:
                    if not waiters:
                        break
                    if not conn.available:
                        continue
                    key = id(conn)
                    free = conn.max_streams - conn.open_streams - pool.reserved.get(key, 0)
                    while free > 0 and waiters:
                        fut = waiters.popleft()
                        if fut.done():  # timed out meanwhile
                            continue
                        fut.set_result(conn)
                        pool.reserved[key] = pool.reserved.get(key, 0) + 1
                        pool.last_used[key] = time.monotonic()
                        free -= 1
                        handed += 1
                while waiters and waiters[0].done():
                    waiters.popleft()
                if not waiters:
                    break
                live = [c for c in pool.conns if not c.closed]
                if len(live) < pool.max_connections and pool.connecting is None \
                        and time.monotonic() >= pool.retry_at:
                    self._start_connect(endpoint, pool)
                await asyncio.sleep(0 if handed else 0.001)
        finally:
            pool.dispatcher = None

    async def _connect(self, endpoint: Endpoint, pool: _EndpointPool) -> None:
        loop = asyncio.get_running_loop()
        ctx = None
        if endpoint.tls:
            ctx = self.ssl_context_factory(endpoint) if self.ssl_context_factory else None
            if ctx is None:
                from dataplane.tls import client_context

                ctx = client_context()
        factory = self.backend.ClientConnection
        settings = self.settings
        conn = None
        tls_peer = None
        try:
            async with asyncio.timeout(pool.connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: factory(settings, on_closed=lambda c: self._on_closed(endpoint, c)),
                    endpoint.host, endpoint.port, ssl=ctx,
                    server_hostname=(endpoint.server_name or endpoint.host) if ctx else None,
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    except OSError:
                        pass
                if ctx is not None:
                    sslobj = transport.get_extra_info("ssl_object")
                    alpn = sslobj.selected_alpn_protocol() if sslobj else None
                    if alpn != "h2":
                        transport.close()
                        raise UpstreamUnavailable(f"TLS peer did not negotiate h2 (ALPN {alpn!r})")
                    tls_peer = sslobj
                    if endpoint.identity is not None and self.peer_check is not None:
                        why = self.peer_check(endpoint, sslobj)
                        if why is not None:
                            transport.close()
                            raise UpstreamUnavailable(f"TLS peer is not {endpoint.identity}: {why}")
                await conn.ready
        except UpstreamUnavailable as exc:
            self._failed(pool, exc.reason)
            raise
        except TimeoutError:
            if conn is not None:
                conn.close()
            reason = f"connect timed out after {pool.connect_timeout}s"
            self._failed(pool, reason)
            raise UpstreamUnavailable(reason) from None
        except (OSError, ConnectionError, ssl.SSLError) as exc:
            if conn is not None:
                conn.close()
            reason = f"connect failed: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            self._failed(pool, reason)
            raise UpstreamUnavailable(reason) from None
        finally:
            pool.connecting = None
        if self._closed:
            conn.close()
            raise UpstreamUnavailable("upstream pools are closed")
        pool.failures = 0
        pool.retry_at = 0.0
        pool.conns.append(conn)
        if tls_peer is not None:
            self._tls_peers[id(conn)] = tls_peer
        pool.last_used[id(conn)] = time.monotonic()
        self.connects += 1

    def _failed(self, pool: _EndpointPool, reason: str) -> None:
        pool.failures += 1
        pool.last_error = reason
        delay = min(self.backoff_max, self.backoff_base * (2 ** (pool.failures - 1)))
        pool.retry_at = time.monotonic() + delay * (0.5 + random.random() / 2)

    def retire_where(self, predicate: Callable[[object], bool], grace: float = 5.0) -> int:
        """Stop using every TLS connection whose ssl object ``predicate`` picks (a producer
        whose certificate was revoked): no new streams go to it, it gets GOAWAY, the open
        streams finish and it is closed at the latest ``grace`` seconds later.  How many."""
        n = 0
        loop = asyncio.get_running_loop()
        for pool in self._pools.values():
            for conn in list(pool.conns):
                sslobj = self._tls_peers.get(id(conn))
                if sslobj is None or not predicate(sslobj):
                    continue
                pool.conns.remove(conn)
                pool.last_used.pop(id(conn), None)
                if pool.hot is conn:
                    pool.hot = None
                conn.drain()
                loop.call_later(grace, conn.close)
                n += 1
        return n

    def _on_closed(self, endpoint: Endpoint, conn) -> None:
        self._tls_peers.pop(id(conn), None)
        pool = self._pools.get(endpoint)
        if pool is not None:
            try:
                pool.conns.remove(conn)
            except ValueError:
                pass
            pool.last_used.pop(id(conn), None)
            if pool.hot is conn:
                pool.hot = None

    # ---- housekeeping --------------------------------------------------------------------------
    def _start_sweeper(self) -> None:
        if self._sweeper is None and self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        period = max(0.05, self.idle_timeout / 4)  # see the module doc: hot stamps lag a period
        while True:
            await asyncio.sleep(period)
            self.close_idle(self.idle_timeout)

    def close_idle(self, idle_for: float) -> int:
        """Close connections without streams unused for ``idle_for`` seconds; how many."""
        now = time.monotonic()
        closed = 0
        for pool in self._pools.values():
            _cool(pool, now)  # the hot connection was used at most now
            for conn in list(pool.conns):
                used = pool.last_used.get(id(conn), now)
                if conn.closed or (conn.open_streams == 0 and now - used >= idle_for):
                    pool.conns.remove(conn)
                    pool.last_used.pop(id(conn), None)
                    conn.close()
                    closed += 1
        return closed

    def connections(self, endpoint: Endpoint) -> list:
        """The live connections to ``endpoint`` (for tests and metrics)."""
        pool = self._pools.get(endpoint)
        return [c for c in pool.conns if not c.closed] if pool else []

    def close(self) -> None:
        """Shut down: close every connection and stop the sweeper."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self._pools.values():
            if pool.connecting is not None:
                pool.connecting.cancel()
            if pool.dispatcher is not None:
                pool.dispatcher.cancel()
            for fut in pool.waiters:
                if not fut.done():
                    fut.set_exception(UpstreamUnavailable("upstream pools are closed"))
            pool.waiters.clear()
            pool.reserved.clear()
            for conn in pool.conns:
                conn.close()
            pool.conns.clear()
        self._pools.clear()
        self._last_endpoint, self._last_pool = _NO_ENDPOINT, None


def _retrieve(task: asyncio.Task) -> None:
    """Consume a connect task's outcome so that an unawaited failure is not logged as lost."""
    if not task.cancelled():
        task.exception()


def _cool(pool: _EndpointPool, now: float | None = None) -> None:
    """The hot connection stops being hot: stamp its last use (no later than ``now``)."""
    hot = pool.hot
    if hot is not None:
        pool.last_used[id(hot)] = time.monotonic() if now is None else now
        pool.hot = None


def _unreserve(pool: _EndpointPool, conn) -> None:
    key = id(conn)
    left = pool.reserved.get(key, 0) - 1
    if left > 0:
        pool.reserved[key] = left
    else:
        pool.reserved.pop(key, None)
