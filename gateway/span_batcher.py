"""A bounded queue of finished spans and the thread that exports them in batches.

``SpanBatcher(export, max_queue=2048, batch_size=512, delay_s=0.5)``: ``submit(item)`` is what
the event loop calls once per finished span; it appends to a bounded queue and returns at once
(False, and ``dropped`` counted, when the queue is full: the newest span is the one refused,
so nothing already queued is lost and nothing waits).  A background thread takes up to
``batch_size`` items every ``delay_s`` seconds, or sooner once ``batch_size`` are waiting, and
hands each batch to ``export(batch) -> int`` (the number the receiver accepted; an exception
counts the whole batch as failed).  ``close(timeout_s)`` exports what is left and stops the
thread.

It knows nothing of OpenTelemetry (``gateway.otlp_export`` supplies ``export``); the event
loop pays one ``len`` and one ``deque.append`` per span, and one ``Event.set`` per batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("nfmesh.tracing")


class SpanBatcher:
    """Bounded, drop-when-full span queue with a background export thread."""

    def __init__(self, export: Callable[[list[Any]], int], *, max_queue: int = 2048,
                 batch_size: int = 512, delay_s: float = 0.5, name: str = "nfmesh-span-export",
                 start: bool = True) -> None:
        if max_queue < 1 or batch_size < 1 or delay_s <= 0:
            raise ValueError("max_queue and batch_size must be >= 1, delay_s > 0")
        self.export = export
        self.max_queue = max_queue
        self.batch_size = min(batch_size, max_queue)
        self.delay_s = delay_s
        self.queue: collections.deque = collections.deque()
        self.submitted = 0  # accepted into the queue
        self.dropped = 0  # refused: the queue was full (or the batcher closed)
        self.exported = 0  # accepted by the receiver
        self.failed = 0  # in a batch the receiver refused, or that could not be sent
        self.batches = 0  # export calls made
        self._wake = threading.Event()
        self._due = None  # the event loop's timer that wakes the thread for a batch (or None)
        self._closing = False
        self._failing = False  # the last export failed (one log line per failure streak)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        if start:
            self._thread.start()

    # -- the event loop's side ---------------------------------------------------------------
    def submit(self, item: Any) -> bool:
        """Queue one finished span; never blocks.  False (and counted in ``dropped``) when
        the queue is full or the batcher is closing."""
        q = self.queue
        n = len(q)
        if n >= self.max_queue or self._closing:
            self.dropped += 1
            return False
        q.append(item)
        self.submitted += 1
        if n + 1 >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        elif n == 0 and self._due is None:
            # the first span of a batch: the event loop wakes the thread when it is due (the
            # thread's own timed wait is the fallback; a loop timer is the clock the rest of
            # the gateway runs on, and it holds where a timed thread wait may not)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._due = loop.call_later(self.delay_s, self._wake_due)
        return True

    def _wake_due(self) -> None:
        self._due = None
        self._wake.set()

    def pending(self) -> int:
        return len(self.queue)

    # -- the export thread ---------------------------------------------------------------------
    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait(self.delay_s)
            wake.clear()
            closing = self._closing
            self.flush_now()
            if closing:
                return

    def flush_now(self) -> None:
        """Export everything queued now, in batches (the export thread's step; also callable
        from another thread when no export thread runs, e.g. in tests)."""
        q = self.queue
        while q:
            batch = []
            pop = q.popleft
            try:
                for _ in range(self.batch_size):
                    batch.append(pop())
            except IndexError:
                pass
            if batch:
                self._export(batch)

    def _export(self, batch: list[Any]) -> None:
        self.batches += 1
        try:
            accepted = self.export(batch)
        except Exception as exc:  # the receiver is down, refused the batch, ...
            self.failed += len(batch)
            if not self._failing:
                log.warning("span export failed (%d spans lost): %s", len(batch), exc)
            self._failing = True
            return
        accepted = max(0, min(int(accepted), len(batch)))
        self.exported += accepted
        self.failed += len(batch) - accepted
        if self._failing:
            log.info("span export works again")
        self._failing = False

    # -- life cycle -------------------------------------------------------------------------------
    def close(self, timeout_s: float = 5.0) -> bool:
        """Refuse new spans, export those queued (within ``timeout_s``), stop the thread.
        True when the thread ended in time.  Blocks: call it off the event loop."""
        self._closing = True
        self._wake.set()
        if not self._thread.is_alive():
            if self._thread.ident is None:  # never started: export here
                self.flush_now()
            return True
        deadline = time.monotonic() + timeout_s
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()
