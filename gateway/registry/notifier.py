"""NF status notifications (TS 29.510 §5.2.2.6): POSTs of NotificationData to subscribers.

``Notifier.post`` only enqueues (bounded; the oldest waiting notification is dropped and counted
when full), so the NRF API never waits on a subscriber.  Background workers send each one over
HTTP/2 with ``sender`` and retry failures (connect errors, 5xx, 429, timeouts) with exponential
backoff, ``attempts`` times in all.  With ``via`` ("host:port" of the gateway's own SBI
listener) the POST goes through the mesh as SCP model C: to ``via`` with
``3gpp-Sbi-Target-apiRoot`` naming the callback's authority.

The default sender is ``dataplane.client.H2Client``; tests and the benchmark may pass any
``async (method, url, headers, body, timeout) -> status`` callable.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

Sender = Callable[[str, str, list[tuple[str, str]], bytes, float], Awaitable[int]]


@dataclass(slots=True)
class Delivery:
    """One notification waiting to be sent."""

    url: str
    body: bytes
    attempt: int = 0


def h2client_sender() -> Sender:
    """A sender over ``dataplane.client.H2Client`` (imported lazily: it is another module's)."""
    from dataplane.client import H2Client  # noqa: PLC0415

    client = H2Client()

    async def send(method: str, url: str, headers: list[tuple[str, str]], body: bytes,
                   timeout: float) -> int:
        resp = await client.request(method, url, headers=headers, body=body, timeout=timeout)
        return int(resp.status)

    send.client = client  # type: ignore[attr-defined]
    return send


class Notifier:
    """Bounded queue + workers delivering notifications with retries."""

    def __init__(
        self,
        sender: Sender | None = None,
        *,
        via: str | None = None,
        attempts: int = 4,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        timeout_s: float = 3.0,
        max_queue: int = 10000,
        workers: int = 4,
    ) -> None:
        self._sender = sender
        self.via = via
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self._queue: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._n_workers = workers
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        if self._tasks:
            return
        if self._sender is None:
            self._sender = h2client_sender()
        self._tasks = [asyncio.create_task(self._worker(), name=f"nrf-notify-{i}")
                       for i in range(self._n_workers)]

    async def close(self) -> None:
        for h in self._retry_handles:
            h.cancel()
        self._retry_handles.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks = []
        client = getattr(self._sender, "client", None)
        if client is not None and hasattr(client, "close"):
            res = client.close()
            if asyncio.iscoroutine(res):
                await res

    @property
    def pending(self) -> int:
        return len(self._queue)

    def post(self, url: str, body: bytes) -> None:
        """Queue one notification; never blocks."""
        self._push(Delivery(url, body))

    def _push(self, d: Delivery) -> None:
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(d)
        self._wake.set()

    def _target(self, url: str) -> tuple[str, list[tuple[str, str]]]:
        headers = [("content-type", "application/json"), ("user-agent", "NRF-nfmesh")]
        if not self.via:
            return url, headers
        parts = urlsplit(url)
        headers.append(("3gpp-sbi-target-apiroot", f"{parts.scheme}://{parts.netloc}"))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return f"http://{self.via}{path}", headers

    async def _worker(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            d = self._queue.popleft()
            await self._deliver(d)

    async def _deliver(self, d: Delivery) -> None:
        url, headers = self._target(d.url)
        d.attempt += 1
        status = 0
        try:
            assert self._sender is not None
            status = await self._sender("POST", url, headers, d.body, self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (any transport failure is retried)
            log.debug("notification to %s failed: %r", d.url, exc)
        if 200 <= status < 300:
            self.sent += 1
            return
        if status and status < 500 and status != 429:  # the subscriber refused it: no retry
            self.failed += 1
            log.info("notification to %s refused with %d", d.url, status)
            return
        if d.attempt >= self.attempts:
            self.failed += 1
            log.warning("notification to %s dropped after %d attempts", d.url, d.attempt)
            return
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** (d.attempt - 1)))
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def requeue() -> None:
            if handle is not None:
                self._retry_handles.discard(handle)
            self._push(d)

        handle = loop.call_later(delay, requeue)
        self._retry_handles.add(handle)
