"""A capacity-limited HTTP/2 (h2c) producer NF for the overload benchmark (``nfmesh perf overload``).

It models a real NF that has a fixed amount of work it can do at once: ``concurrency`` (C)
requests are served at a time, each for ``service_ms`` (S), so its capacity is
``C * 1000 / S`` requests per second.  Requests beyond C wait in the producer's own FIFO queue,
which is unbounded, as in an overloaded NF that has no protection of its own: that queue is what
makes a proxy without protection collapse (every answer comes late).

Service is scheduled on a virtual clock: a server slot that finishes a request at virtual time
``T`` starts the next queued one at ``max(T, its arrival)``, so the event loop's millisecond
timer granularity does not lower the capacity while the producer is busy.

It honours RST_STREAM (and lost connections): a queued request whose stream was reset is
dropped without being worked on; a request in service when its stream is reset stops at once
and the work it had already had is counted as ``partial_work_ms``.  A completed request is
answered ``200`` with a small JSON body; a completed request whose stream had closed meanwhile
is counted as ``wasted``.

Counters are kept per load step, named by the request's ``x-overload-step`` header (the
benchmark's generator sets it), and arrivals are counted per 250 ms window (of the system-wide
monotonic clock, ``time.monotonic()``) and per priority class (from
``3gpp-Sbi-Message-Priority``: 0..7 high, 8..23 normal, 24..31 low, absent "none").

Two paths on the same port are not work: ``GET /stats`` answers the counters as JSON, and
``GET /control?oci=50&validity=3&for=1`` makes the producer put a ``3gpp-Sbi-Oci`` header
(NF-Instance scope, its own ``--nf-instance`` id, timestamp = now) on its responses for ``for``
seconds (``oci=0`` stops it).  ``--stats-file`` also writes the counters on SIGTERM.

Run: ``python -m perf.capacity_producer --port 9000 --concurrency 8 --service-ms 4``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import math
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from dataplane.engine import H2Settings, Headers, load_backend
from nf_adapters.sbi_headers import (
    MESSAGE_PRIORITY_H,
    OCI_H,
    ControlScope,
    OverloadControl,
    format_oci,
)

STEP_H = b"x-overload-step"
WINDOW_S = 0.25
CLASSES = ("high", "normal", "low", "none")
JSON_CT = (b"content-type", b"application/json")
BODY = json.dumps({"nfStatus": "REGISTERED", "load": 0, "result": "ok"},
                  separators=(",", ":")).encode()

QUEUED, SERVING, DONE, CANCELLED = 0, 1, 2, 3


def priority_class(value: bytes | None) -> str:
    """The benchmark's class of a ``3gpp-Sbi-Message-Priority`` value (0 is the highest)."""
    if value is None:
        return "none"
    try:
        p = int(value)
    except ValueError:
        return "none"
    if p <= 7:
        return "high"
    if p <= 23:
        return "normal"
    return "low"


@dataclass(slots=True)
class StepCounters:
    """What happened to the requests of one load step at the producer."""

    arrived: int = 0
    completed: int = 0  # work done in full (answered, or wasted)
    wasted: int = 0  # completed, but the stream was gone when the answer was ready
    aborted: int = 0  # reset while in service: the work stopped part way
    dropped_queued: int = 0  # reset while queued: never worked on
    partial_work_ms: float = 0.0  # work spent on the aborted ones
    queue_wait_ms_max: float = 0.0

    def as_dict(self) -> dict:
        return {"arrived": self.arrived, "completed": self.completed, "wasted": self.wasted,
                "aborted": self.aborted, "dropped_queued": self.dropped_queued,
                "partial_work_ms": round(self.partial_work_ms, 3),
                "queue_wait_ms_max": round(self.queue_wait_ms_max, 3)}


@dataclass(slots=True)
class _Item:
    """One request the producer has to work on."""

    conn: object
    sid: int
    step: str
    arrived: float
    state: int = QUEUED
    start: float = 0.0
    done_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class OciState:
    """The overload control the producer currently puts on its responses."""

    value: bytes
    until: float  # time.monotonic()
    sent: int = 0
    first_sent: float | None = None
    last_sent: float | None = None


@dataclass
class CapacityProducer:
    """The handler (``ServerHandler``) and its capacity model."""

    concurrency: int = 8
    service_ms: float = 4.0
    nf_instance: str = field(default_factory=lambda: str(uuid.uuid4()))
    steps: dict[str, StepCounters] = field(default_factory=dict)
    windows: dict[int, list[int]] = field(default_factory=dict)
    max_queue: int = 0
    oci: OciState | None = None
    oci_history: list[dict] = field(default_factory=list)
    connections: set = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.service_ms <= 0:
            raise ValueError("concurrency must be >= 1 and service_ms > 0")
        self._queue: collections.deque[_Item] = collections.deque()
        self._live: dict[tuple[int, int], _Item] = {}
        self._busy = 0
        self._service_s = self.service_ms / 1000.0

    @property
    def capacity_rps(self) -> float:
        return self.concurrency * 1000.0 / self.service_ms

    @property
    def queued(self) -> int:
        return sum(1 for it in self._queue if it.state == QUEUED)

    @property
    def in_service(self) -> int:
        return self._busy

    def _step(self, name: str) -> StepCounters:
        c = self.steps.get(name)
        if c is None:
            c = self.steps[name] = StepCounters()
        return c

    # ---- ServerHandler ----------------------------------------------------------------------
    def on_request(self, conn, stream_id: int, headers: Headers, end_stream: bool) -> None:
        self.connections.add(conn)
        path = b""
        step = b""
        prio = None
        for k, v in headers:
            if k == b":path":
                path = v
            elif k == STEP_H:
                step = v
            elif k == MESSAGE_PRIORITY_H:
                prio = v
        if path.startswith(b"/stats"):
            self._answer_json(conn, stream_id, end_stream, self.stats())
            return
        if path.startswith(b"/control"):
            self._answer_json(conn, stream_id, end_stream, self.control(path.decode()))
            return
        now = time.monotonic()
        w = self.windows.get(int(now / WINDOW_S))
        if w is None:
            w = self.windows[int(now / WINDOW_S)] = [0, 0, 0, 0]
        w[CLASSES.index(priority_class(prio))] += 1
        item = _Item(conn, stream_id, step.decode(errors="replace") or "-", now)
        self._step(item.step).arrived += 1
        self._live[(id(conn), stream_id)] = item
        if end_stream:
            self._enqueue(item)
        else:
            def body_read(body: bytes | None, trailers: Headers) -> None:
                if body is not None and item.state == QUEUED:
                    self._enqueue(item)
            conn.read_body(stream_id, 1 << 16, body_read)

    def on_stream_reset(self, conn, stream_id: int, error_code: int) -> None:
        item = self._live.pop((id(conn), stream_id), None)
        if item is not None:
            self._cancel(item)

    def on_connection_lost(self, conn) -> None:
        self.connections.discard(conn)
        key = id(conn)
        for k in [k for k in self._live if k[0] == key]:
            self._cancel(self._live.pop(k))

    # ---- the capacity model -----------------------------------------------------------------
    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        if len(self._queue) > self.max_queue:
            self.max_queue = len(self._queue)
        self._dispatch()

    def _dispatch(self, after: float | None = None) -> None:
        """Start queued work while a slot is free; ``after`` is the virtual time the slot
        that called was freed at."""
        loop = asyncio.get_running_loop()
        while self._busy < self.concurrency and self._queue:
            item = self._queue.popleft()
            if item.state != QUEUED:
                continue
            now = time.monotonic()
            item.start = max(after, item.arrived) if after is not None else now
            after = None
            item.done_at = item.start + self._service_s
            item.state = SERVING
            c = self._step(item.step)
            wait_ms = (item.start - item.arrived) * 1000.0
            if wait_ms > c.queue_wait_ms_max:
                c.queue_wait_ms_max = wait_ms
            self._busy += 1
            delay = item.done_at - now
            item.timer = loop.call_later(delay, self._finish, item) if delay > 0 else \
                loop.call_soon(self._finish, item)

    def _finish(self, item: _Item) -> None:
        if item.state != SERVING:
            return
        early = item.done_at - time.monotonic()
        if early > 0:  # the loop's timers round to milliseconds: never serve faster than S
            item.timer = asyncio.get_running_loop().call_later(early, self._finish, item)
            return
        item.state = DONE
        item.timer = None
        self._busy -= 1
        c = self._step(item.step)
        c.completed += 1
        live = self._live.pop((id(item.conn), item.sid), None) is not None
        if live:
            try:
                item.conn.respond(item.sid, 200, self._response_headers(), BODY)
            except Exception:
                live = False
        if not live:
            c.wasted += 1
        self._dispatch(after=item.done_at)

    def _cancel(self, item: _Item) -> None:
        c = self._step(item.step)
        if item.state == QUEUED:
            item.state = CANCELLED
            c.dropped_queued += 1
        elif item.state == SERVING:
            item.state = CANCELLED
            now = time.monotonic()
            c.aborted += 1
            c.partial_work_ms += max(0.0, now - item.start) * 1000.0
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            self._busy -= 1
            self._dispatch(after=max(now, item.start))

    def _response_headers(self) -> Headers:
        out = [JSON_CT]
        oci = self.oci
        if oci is not None:
            now = time.monotonic()
            if now < oci.until:
                out.append((OCI_H, oci.value))
                oci.sent += 1
                if oci.first_sent is None:
                    oci.first_sent = now
                oci.last_sent = now
        return out

    # ---- /stats and /control ----------------------------------------------------------------
    def _answer_json(self, conn, stream_id: int, end_stream: bool, obj: dict) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        if end_stream:
            conn.respond(stream_id, 200, [JSON_CT], body)
        else:
            conn.read_body(stream_id, 1 << 16, lambda b, t: b is not None and conn.respond(
                stream_id, 200, [JSON_CT], body))

    def control(self, path: str) -> dict:
        """``/control?oci=PCT&validity=S&for=S``: put (or, with oci=0, stop) an OCI."""
        q = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        try:
            pct = int(q.get("oci", "0"))
            validity = int(q.get("validity", "5"))
            for_s = float(q.get("for", "3600"))
        except ValueError:
            return {"error": f"bad control query {path!r}"}
        self._end_oci()
        if pct <= 0:
            return {"oci": None}
        if not 0 < pct <= 100 or validity < 0 or not math.isfinite(for_s) or for_s <= 0:
            return {"error": "oci must be 1..100, validity >= 0, for > 0"}
        now = time.monotonic()
        wall = time.time()
        # the header's date-time has whole seconds: say when (monotonic) that second began
        stamp_mono = now - (wall - math.floor(wall))
        element = OverloadControl(
            timestamp=dt.datetime.fromtimestamp(math.floor(wall), dt.UTC), validity_s=validity,
            reduction_pct=pct, scope=ControlScope("NF-Instance", self.nf_instance))
        self.oci = OciState(format_oci([element]), now + for_s)
        info = {"oci": self.oci.value.decode(), "from": now, "until": now + for_s,
                "timestamp": stamp_mono}
        self.oci_history.append(dict(info, validity_s=validity, reduction_pct=pct))
        return info

    def _end_oci(self) -> None:
        if self.oci is not None and self.oci_history:
            h = self.oci_history[-1]
            h.update(sent=self.oci.sent, first_sent=self.oci.first_sent,
                     last_sent=self.oci.last_sent, until=min(h["until"], time.monotonic()))
        self.oci = None

    def stats(self) -> dict:
        """Every counter, JSON-able."""
        history = [dict(h) for h in self.oci_history]
        if self.oci is not None and history:
            history[-1].update(sent=self.oci.sent, first_sent=self.oci.first_sent,
                               last_sent=self.oci.last_sent)
        total = StepCounters()
        for c in self.steps.values():
            for k in ("arrived", "completed", "wasted", "aborted", "dropped_queued",
                      "partial_work_ms"):
                setattr(total, k, getattr(total, k) + getattr(c, k))
            total.queue_wait_ms_max = max(total.queue_wait_ms_max, c.queue_wait_ms_max)
        return {
            "concurrency": self.concurrency, "service_ms": self.service_ms,
            "capacity_rps": self.capacity_rps, "nf_instance": self.nf_instance,
            "now": time.monotonic(), "queued": self.queued, "in_service": self._busy,
            "max_queue": self.max_queue, "total": total.as_dict(),
            "steps": {k: c.as_dict() for k, c in sorted(self.steps.items())},
            "window_s": WINDOW_S, "classes": list(CLASSES),
            "windows": {str(k): v for k, v in sorted(self.windows.items())},
            "oci": history,
        }


def server_settings() -> H2Settings:
    """Stream and reset limits high enough for an overloaded proxy in front: a proxy that
    gives up on thousands of requests a second resets thousands of streams a second."""
    return H2Settings(max_concurrent_streams=100_000, max_resets_per_second=10_000_000,
                      max_control_frames_per_second=10_000_000)


async def serve(producer: CapacityProducer, host: str, port: int,
                backend: str = "auto") -> asyncio.AbstractServer:
    """Listen on ``host:port`` (0: any free port) with ``producer`` answering."""
    engine = load_backend(backend)
    settings = server_settings()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: engine.ServerConnection(producer, settings),
                                    host, port)


async def _main(args: argparse.Namespace) -> int:
    producer = CapacityProducer(args.concurrency, args.service_ms,
                                args.nf_instance or str(uuid.uuid4()))
    server = await serve(producer, args.host, args.port, args.backend)
    port = server.sockets[0].getsockname()[1]
    print(f"capacity producer listening on {args.host}:{port}: concurrency "
          f"{args.concurrency}, service {args.service_ms} ms, capacity "
          f"{producer.capacity_rps:.0f} req/s", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if args.stats_file:
            Path(args.stats_file).write_text(json.dumps(producer.stats()))
        server.close()
        for conn in list(producer.connections):
            conn.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m perf.capacity_producer",
                                description="A capacity-limited h2c producer (C at a time, "
                                "S ms each, unbounded FIFO queue, honours RST_STREAM).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--service-ms", type=float, default=4.0)
    p.add_argument("--nf-instance", help="NF instance id used in the OCI scope (default: new)")
    p.add_argument("--backend", choices=["auto", "nghttp2", "h2"], default="auto")
    p.add_argument("--stats-file", help="write the counters here as JSON on SIGTERM")
    return p


def main(argv: list[str]) -> int:
    """Entry point: serve until SIGTERM."""
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or args.service_ms <= 0:
        print("capacity producer: --concurrency >= 1 and --service-ms > 0", file=sys.stderr)
        return 2
    import uvloop

    return uvloop.run(_main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
