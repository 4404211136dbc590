"""The open-loop SBI client of the overload benchmark: fixed rates, priority classes, a deadline.

``run_schedule(spec)`` sends request *i* of each load step at ``step_start + i / rate`` (the
intended time) over several h2c connections, whatever the target does (open loop: latency is
measured from the intended time, so a stalled target shows as latency, not as a slower load).
Every request carries the headers an AMF would send through an SCP:
``3gpp-Sbi-Message-Priority`` drawn from the class mix (10% priority 2 "high", 60% priority 16
"normal", 30% priority 28 "low"), ``3gpp-Sbi-Max-Rsp-Time`` (the deadline, 500 ms),
``3gpp-Sbi-Sender-Timestamp`` (the intended send time), ``User-Agent: AMF-<n>``, optionally
``3gpp-Sbi-Target-apiRoot`` (SCP model C), and ``x-overload-step`` naming the step so the
producer can count per step.

The client gives up on a request at its deadline (intended time + deadline): it resets the
stream (RST_STREAM CANCEL), as a real consumer whose timer fired would, and counts a timeout.
A request that cannot be sent yet (every connection at its stream limit) waits in a backlog
and times out there if its deadline passes first.

It is a small HTTP/2 client of its own rather than the engine's ``ClientConnection``, because
it must reset its own streams.  To stay cheap it advertises ``SETTINGS_HEADER_TABLE_SIZE 0``
(so the peers' HPACK encoders use no dynamic table), encodes its requests as HPACK literals
without indexing, and reads only ``:status`` from a response header block (falling back to the
``hpack`` decoder for any representation it does not expect).

Results per step and per class: sent, 2xx, 2xx within the deadline ("useful"), 2xx after it,
other statuses, timeouts, errors, and the latencies of answered requests (µs); per step the
achieved offered rate and the send lag; raw ``(offset, latency)`` samples of the steps named in
``raw_steps`` (for the recovery time); requests sent per class per 250 ms window.  Several
processes can share a load: ``merge_results`` adds their outputs.

Run one process: ``python -m perf.overload_client SPEC.json`` (prints one JSON object).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import random
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field

from hpack import Decoder
from hpack.huffman_table import decode_huffman

from nf_adapters.sbi_headers import format_sender_timestamp

CLASSES = ("high", "normal", "low")
CLASS_MIX: tuple[tuple[str, int, float], ...] = (
    ("high", 2, 0.10), ("normal", 16, 0.60), ("low", 28, 0.30))
WINDOW_S = 0.25
DEFAULT_PATH = "/nudm-sdm/v2/imsi-001010000000001/am-data"

clock = time.monotonic  # CLOCK_MONOTONIC: the same clock in every process of the run

# --- HTTP/2 framing and HPACK, the little this client needs ----------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG, ACK = 0x1, 0x4, 0x8, 0x20, 0x1
CANCEL = 0x8
RECV_WINDOW = 1 << 30
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 §5.1), ``first`` holding the flags."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: bytes | int, value: bytes) -> bytes:
    """A literal header field without indexing: ``name`` a static-table index or a string."""
    if isinstance(name, int):
        head = hpack_int(name, 4)
    else:
        head = b"\x00" + hpack_int(len(name), 7) + name
    return head + hpack_int(len(value), 7) + value


def _read_int(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def response_status(block: bytes) -> int:
    """``:status`` from a response header block encoded without a dynamic table; 0 when the
    first field is not a plain ``:status`` (the caller then decodes the whole block)."""
    pos = 0
    n = len(block)
    while pos < n and block[pos] & 0xE0 == 0x20:  # dynamic table size update(s)
        _, pos = _read_int(block, pos, 5)
    if pos >= n:
        return 0
    b = block[pos]
    if b & 0x80:  # indexed field
        idx, _ = _read_int(block, pos, 7)
        return STATIC_STATUS.get(idx, 0)
    if b & 0xC0 == 0x40:
        idx, pos = _read_int(block, pos, 6)
    elif b & 0xF0 in (0x00, 0x10):
        idx, pos = _read_int(block, pos, 4)
    else:
        return 0
    if not 8 <= idx <= 14 or pos >= n:
        return 0
    huff = block[pos] & 0x80
    length, pos = _read_int(block, pos, 7)
    raw = block[pos:pos + length]
    text = decode_huffman(raw) if huff else raw
    return int(text) if text.isdigit() else 0


def decode_status_slow(block: bytes) -> int:
    """``:status`` through the full HPACK decoder (never needed with a conforming peer)."""
    try:
        for k, v in Decoder().decode(block, raw=True):
            if k == b":status":
                return int(v)
    except Exception:
        return 0
    return 0


# --- the load ---------------------------------------------------------------------------------

def class_table(seed: int, size: int = 10_000) -> bytes:
    """A random draw of ``size`` class indexes (0 high, 1 normal, 2 low) from ``CLASS_MIX``;
    the generator walks it cyclically."""
    rng = random.Random(seed)
    weights = [w for _, _, w in CLASS_MIX]
    return bytes(rng.choices(range(len(CLASS_MIX)), weights=weights, k=size))


@dataclass(slots=True)
class ClassStats:
    """One priority class in one step."""

    sent: int = 0
    ok: int = 0  # 2xx
    useful: int = 0  # 2xx within the deadline
    late_2xx: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    timeouts: int = 0  # the client reset the stream at the deadline (or never sent it)
    errors: collections.Counter = field(default_factory=collections.Counter)
    latencies_us: array = field(default_factory=lambda: array("l"))

    def as_dict(self) -> dict:
        return {"sent": self.sent, "ok": self.ok, "useful": self.useful,
                "late_2xx": self.late_2xx,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "timeouts": self.timeouts, "errors": dict(self.errors),
                "latencies_us": self.latencies_us.tolist()}


@dataclass(slots=True, eq=False)
class StepStats:
    """One load step: per class, the achieved rate and the send lag."""

    name: str
    rate: float
    start: float  # intended start (monotonic)
    duration: float
    classes: list[ClassStats] = field(default_factory=lambda: [ClassStats() for _ in CLASSES])
    last_send: float = 0.0
    lag_us: array = field(default_factory=lambda: array("l"))
    raw: list[tuple[float, float | None]] | None = None  # (offset s, latency ms; None: not 2xx)
    not_sent: int = 0


class _Request:
    __slots__ = ("step", "cls", "intended", "deadline", "conn", "sid", "done", "status")

    def __init__(self, step: StepStats, cls: int, intended: float, deadline: float) -> None:
        self.step = step
        self.cls = cls
        self.intended = intended
        self.deadline = deadline
        self.conn: _Conn | None = None
        self.sid = 0
        self.done = False
        self.status = 0  # the final status once its HEADERS came


class _Conn(asyncio.Protocol):
    """One h2c connection of the client."""

    def __init__(self, gen: OpenLoopClient) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.streams: dict[int, _Request] = {}
        self.next_sid = 1
        self.max_streams = 10_000  # no limit until the peer's SETTINGS name one
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = False
        self.goaway = False
        self.received = 0
        self.block: dict[int, bytearray] = {}  # header blocks still waiting for CONTINUATION

    @property
    def available(self) -> bool:
        return (not self.closed and not self.goaway and self.ready.done()
                and len(self.streams) < self.max_streams and self.next_sid < (1 << 31) - 2)

    def connection_made(self, transport) -> None:
        self.transport = transport
        settings = struct.pack(">HIHIHI", 1, 0, 2, 0, 4, RECV_WINDOW)
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings)
                        + frame(8, 0, 0, struct.pack(">I", RECV_WINDOW - 65535)))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost before SETTINGS"))
        for req in list(self.streams.values()):
            self.gen.fail(req, "connection_lost")
        self.streams.clear()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def send(self, req: _Request, block: bytes) -> None:
        sid = self.next_sid
        self.next_sid += 2
        req.conn = self
        req.sid = sid
        self.streams[sid] = req
        n = len(block)
        self.out.append(struct.pack(">BHBBI", n >> 16, n & 0xFFFF, HEADERS,
                                    END_STREAM | END_HEADERS, sid) + block)

    def cancel(self, req: _Request) -> None:
        if self.streams.pop(req.sid, None) is not None and not self.closed:
            self.out.append(frame(RST_STREAM, 0, req.sid, struct.pack(">I", CANCEL)))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        gen = self.gen
        while end - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if end - pos < 9 + length:
                break
            ftype = buf[pos + 3]
            flags = buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            body = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            if ftype == DATA:
                self.received += length
                if flags & END_STREAM:
                    req = self.streams.pop(sid, None)
                    if req is not None:
                        gen.answered(req, req.status)
            elif ftype == HEADERS or ftype == CONTINUATION:
                self._headers(ftype, flags, sid, body)
            elif ftype == RST_STREAM:
                req = self.streams.pop(sid, None)
                if req is not None:
                    gen.fail(req, "reset_by_peer")
            elif ftype == SETTINGS:
                if not flags & ACK:
                    for i in range(0, len(body) - 5, 6):
                        ident, value = struct.unpack_from(">HI", body, i)
                        if ident == 3:
                            self.max_streams = value
                    self.out.append(frame(SETTINGS, ACK, 0))
                    if not self.ready.done():
                        self.ready.set_result(None)
            elif ftype == PING:
                if not flags & ACK:
                    self.out.append(frame(PING, ACK, 0, body))
            elif ftype == GOAWAY:
                self.goaway = True
                last = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
                for s in [s for s in self.streams if s > last]:
                    gen.fail(self.streams.pop(s), "goaway")
        del buf[:pos]
        if self.received > RECV_WINDOW // 2:
            self.out.append(frame(8, 0, 0, struct.pack(">I", self.received)))
            self.received = 0
        self.flush()

    def _headers(self, ftype: int, flags: int, sid: int, body: bytes) -> None:
        if ftype == HEADERS:
            start = 0
            pad = 0
            if flags & PADDED:
                pad = body[0]
                start = 1
            if flags & PRIORITY_FLAG:
                start += 5
            fragment = body[start:len(body) - pad]
            if not flags & END_HEADERS:
                self.block[sid] = bytearray(fragment)
                self._pending_end = flags & END_STREAM
                return
        else:
            pending = self.block.get(sid)
            if pending is None:
                return
            pending += body
            if not flags & END_HEADERS:
                return
            fragment = bytes(self.block.pop(sid))
            flags |= self._pending_end
        req = self.streams.get(sid)
        if req is None:
            return
        if req.status == 0:
            status = response_status(fragment) or decode_status_slow(fragment)
            if 100 <= status < 200:
                return  # an interim response; the final one follows
            req.status = status
        if flags & END_STREAM:
            del self.streams[sid]
            self.gen.answered(req, req.status)

    _pending_end = 0


@dataclass(slots=True)
class Spec:
    """What one generator process sends (JSON-able; see ``Spec.from_dict``)."""

    host: str
    port: int
    steps: list[dict]  # {"name": str, "rate": req/s, "duration": s}
    start_at: float  # monotonic time of the first step's start
    connections: int = 8
    deadline_ms: int = 500
    path: str = DEFAULT_PATH
    authority: str = ""
    target_apiroot: str | None = None
    seed: int = 1
    amf_base: int = 0  # User-Agent AMF-<amf_base + connection index>
    raw_steps: list[str] = field(default_factory=list)
    drain_s: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> Spec:
        return cls(**d)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class OpenLoopClient:
    """Sends one ``Spec`` and collects its results."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.conns: list[_Conn] = []
        self.deadlines: collections.deque[_Request] = collections.deque()
        self.backlog: collections.deque[_Request] = collections.deque()
        self.windows: dict[int, list[int]] = {}
        self.outstanding = 0
        self._rr = 0
        self._ts_ms = -1
        self._ts_field = b""
        self._wall_offset = time.time() - clock()
        self._connecting = 0
        self.reconnects = 0
        self.connect_errors: collections.Counter = collections.Counter()
        authority = (spec.authority or f"{spec.host}:{spec.port}").encode()
        common = (b"\x82\x86" + hpack_literal(1, authority)
                  + hpack_literal(4, spec.path.encode())
                  + hpack_literal(b"accept", b"application/json")
                  + hpack_literal(b"3gpp-sbi-max-rsp-time", str(spec.deadline_ms).encode()))
        if spec.target_apiroot:
            common += hpack_literal(b"3gpp-sbi-target-apiroot", spec.target_apiroot.encode())
        self._common = common
        self._prio = [hpack_literal(b"3gpp-sbi-message-priority", str(p).encode())
                      for _, p, _ in CLASS_MIX]
        self._ua: dict[_Conn, bytes] = {}

    # ---- connections ----------------------------------------------------------------------
    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Conn(self), self.spec.host, self.spec.port), 5)
        await asyncio.wait_for(conn.ready, 5)
        n = self.spec.amf_base + len(self._ua)
        self._ua[conn] = hpack_literal(58, f"AMF-{n}".encode())
        return conn

    async def connect(self) -> None:
        for _ in range(self.spec.connections):
            self.conns.append(await self._open())

    async def _replace(self, dead: _Conn) -> None:
        self._connecting += 1
        try:
            conn = await self._open()
        except (OSError, TimeoutError, ConnectionError) as exc:
            self.connect_errors[type(exc).__name__] += 1
            await asyncio.sleep(0.1)
            self._connecting -= 1
            return
        self._connecting -= 1
        self.reconnects += 1
        self.conns[self.conns.index(dead)] = conn

    def _check_connections(self) -> None:
        if self._connecting:
            return
        for c in self.conns:
            if c.closed or c.goaway:
                asyncio.get_running_loop().create_task(self._replace(c))
                return

    def close(self) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()

    def _free_conn(self) -> _Conn | None:
        conns = self.conns
        n = len(conns)
        for i in range(n):
            c = conns[(self._rr + i) % n]
            if c.available:
                self._rr = (self._rr + i + 1) % n
                return c
        return None

    # ---- requests -------------------------------------------------------------------------
    def _timestamp(self, intended: float) -> bytes:
        ms = int((intended + self._wall_offset) * 1000)
        if ms != self._ts_ms:
            when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
            self._ts_ms = ms
            self._ts_field = hpack_literal(b"3gpp-sbi-sender-timestamp",
                                           format_sender_timestamp(when))
        return self._ts_field

    def _transmit(self, conn: _Conn, req: _Request, step_field: bytes, now: float) -> None:
        block = (self._common + self._prio[req.cls] + self._ua[conn] + step_field
                 + self._timestamp(req.intended))
        conn.send(req, block)
        req.step.lag_us.append(int((now - req.intended) * 1e6))
        if now > req.step.last_send:
            req.step.last_send = now

    def answered(self, req: _Request, status: int) -> None:
        if req.done:
            return
        req.done = True
        self.outstanding -= 1
        latency = clock() - req.intended
        c = req.step.classes[req.cls]
        c.statuses[status] += 1
        c.latencies_us.append(int(latency * 1e6))
        good = 200 <= status < 300
        if good:
            c.ok += 1
            if latency <= self.spec.deadline_ms / 1000.0:
                c.useful += 1
            else:
                c.late_2xx += 1
        if req.step.raw is not None:
            req.step.raw.append((req.intended - req.step.start,
                                 latency * 1000.0 if good else None))

    def fail(self, req: _Request, why: str) -> None:
        if req.done:
            return
        req.done = True
        self.outstanding -= 1
        req.step.classes[req.cls].errors[why] += 1
        if req.step.raw is not None:
            req.step.raw.append((req.intended - req.step.start, None))

    def _timeout(self, req: _Request) -> None:
        req.done = True
        self.outstanding -= 1
        req.step.classes[req.cls].timeouts += 1
        if req.step.raw is not None:
            req.step.raw.append((req.intended - req.step.start, None))
        if req.conn is not None:
            req.conn.cancel(req)
        else:
            req.step.not_sent += 1

    def _sweep(self, now: float) -> None:
        dl = self.deadlines
        while dl and dl[0].deadline <= now:
            req = dl.popleft()
            if not req.done:
                self._timeout(req)

    def _drain_backlog(self, now: float, step_fields: dict[StepStats, bytes]) -> None:
        bl = self.backlog
        while bl:
            if bl[0].done:
                bl.popleft()
                continue
            conn = self._free_conn()
            if conn is None:
                return
            req = bl.popleft()
            self._transmit(conn, req, step_fields[req.step], now)

    async def run(self) -> dict:
        """Send every step, wait for the answers (at most deadline + drain), return results."""
        spec = self.spec
        table = class_table(spec.seed)
        deadline_s = spec.deadline_ms / 1000.0
        steps: list[StepStats] = []
        t = spec.start_at
        for s in spec.steps:
            st = StepStats(str(s["name"]), float(s["rate"]), t, float(s["duration"]))
            if st.name in spec.raw_steps:
                st.raw = []
            steps.append(st)
            t += st.duration
        end_of_sending = t
        step_fields = {st: hpack_literal(b"x-overload-step", st.name.encode()) for st in steps}
        k = 0
        windows = self.windows
        last_check = 0.0
        for st in steps:
            total = int(round(st.rate * st.duration))
            i = 0
            field_ = step_fields[st]
            while i < total:
                now = clock()
                due = min(total, int((now - st.start) * st.rate) + 1) if now >= st.start else 0
                while i < due:
                    intended = st.start + i / st.rate
                    i += 1
                    cls = table[k % len(table)]
                    k += 1
                    req = _Request(st, cls, intended, intended + deadline_s)
                    st.classes[cls].sent += 1
                    w = windows.get(int(intended / WINDOW_S))
                    if w is None:
                        w = windows[int(intended / WINDOW_S)] = [0, 0, 0]
                    w[cls] += 1
                    self.outstanding += 1
                    self.deadlines.append(req)
                    conn = self._free_conn() if not self.backlog else None
                    if conn is not None:
                        self._transmit(conn, req, field_, now)
                    else:
                        self.backlog.append(req)
                self._sweep(now)
                self._drain_backlog(now, step_fields)
                for c in self.conns:
                    c.flush()
                if now - last_check > 0.1:
                    last_check = now
                    self._check_connections()
                if i < total:
                    # the loop's timers have millisecond granularity: a shorter sleep would
                    # spin; what is due meanwhile goes out together at the next tick
                    await asyncio.sleep(max(0.001, st.start + i / st.rate - clock()))
        # drain: everything still open times out at its deadline
        stop = end_of_sending + deadline_s + spec.drain_s
        while self.outstanding > 0 and clock() < stop:
            now = clock()
            self._sweep(now)
            self._drain_backlog(now, step_fields)
            for c in self.conns:
                c.flush()
            await asyncio.sleep(0.005)
        return self.result(steps)

    def result(self, steps: list[StepStats]) -> dict:
        out_steps = {}
        for st in steps:
            sent = sum(c.sent for c in st.classes)
            span = max(st.duration, (st.last_send - st.start) if st.last_send else 0.0)
            lag = sorted(st.lag_us)
            out_steps[st.name] = {
                "rate": st.rate, "duration": st.duration, "sent": sent,
                "offered_rps": round(sent / span, 1) if span > 0 else 0.0,
                "send_lag_p99_ms": round(lag[int(0.99 * (len(lag) - 1))] / 1000, 3) if lag else None,
                "not_sent": st.not_sent,
                "classes": {name: c.as_dict() for name, c in zip(CLASSES, st.classes, strict=True)},
                "raw": [(round(o, 4), None if lat is None else round(lat, 3))
                        for o, lat in st.raw] if st.raw is not None else None,
            }
        return {"steps": out_steps, "windows": {str(k): v for k, v in sorted(self.windows.items())},
                "window_s": WINDOW_S, "reconnects": self.reconnects,
                "connect_errors": dict(self.connect_errors), "processes": 1}


async def run_schedule(spec: Spec) -> dict:
    """Connect, send the schedule, close; the results object."""
    client = OpenLoopClient(spec)
    try:
        await client.connect()
        return await client.run()
    finally:
        client.close()


def merge_results(parts: list[dict]) -> dict:
    """Add the outputs of several generator processes that shared one schedule."""
    if len(parts) == 1:
        return parts[0]
    out: dict = {"steps": {}, "windows": {}, "window_s": parts[0]["window_s"],
                 "reconnects": sum(p["reconnects"] for p in parts), "connect_errors": {},
                 "processes": sum(p.get("processes", 1) for p in parts)}
    for p in parts:
        for k, v in p["connect_errors"].items():
            out["connect_errors"][k] = out["connect_errors"].get(k, 0) + v
        for w, counts in p["windows"].items():
            cur = out["windows"].setdefault(w, [0] * len(counts))
            for i, n in enumerate(counts):
                cur[i] += n
        for name, st in p["steps"].items():
            m = out["steps"].get(name)
            if m is None:
                out["steps"][name] = json.loads(json.dumps(st))
                continue
            m["rate"] += st["rate"]
            m["sent"] += st["sent"]
            m["offered_rps"] = round(m["offered_rps"] + st["offered_rps"], 1)
            m["not_sent"] += st["not_sent"]
            lags = [x for x in (m["send_lag_p99_ms"], st["send_lag_p99_ms"]) if x is not None]
            m["send_lag_p99_ms"] = max(lags) if lags else None
            if st["raw"] is not None:
                m["raw"] = sorted([*(m["raw"] or []), *st["raw"]], key=lambda x: x[0])
            for cname, c in st["classes"].items():
                mc = m["classes"][cname]
                for k in ("sent", "ok", "useful", "late_2xx", "timeouts"):
                    mc[k] += c[k]
                for key in ("statuses", "errors"):
                    for k, v in c[key].items():
                        mc[key][k] = mc[key].get(k, 0) + v
                mc["latencies_us"] += c["latencies_us"]
    return out


def main(argv: list[str]) -> int:
    """``python -m perf.overload_client SPEC.json``: run it, print the results object."""
    if len(argv) != 1:
        print("usage: python -m perf.overload_client SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = Spec.from_dict(json.load(f))
    import uvloop

    result = uvloop.run(run_schedule(spec))
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
