"""``nfmesh perf abuse``: HTTP/2 abuse against nfmesh's engines, each case with a well-behaved
client alongside (issue 13, item 6, first part).

For each backend (nghttp2, h2) a responder process is started (the engine's ``ServerConnection``
answering every request locally, one worker, h2c on 127.0.0.1): what is measured is the
engine's defence, not the proxying.  Per case, for ``--duration`` seconds, an attacker sends its
frames over raw TCP (reconnecting when cut) while a legit client (the engine's own
``ClientConnection``, closed loop, ``--legit-concurrency`` requests in flight) runs beside it.
Reported per case: the legit client's success ratio, p50/p99 (ms) and its p99 against the
baseline (the same client with no attacker), the responder's RSS peak over its level before the
case, and what the attacker got (connections cut, GOAWAY codes seen, bytes sent).

Cases: ``rapid_reset``, ``hpack_bomb``, ``continuation_flood``, ``settings_flood``,
``ping_flood``, ``priority_flood``, ``stream_exhaustion``, ``garbage_preface``, ``idle_connections``
(``--idle`` connections held open: RSS per idle connection).  HAProxy and nghttpx beside it
are not in this tool yet.

Bounded: every case ends after ``--duration`` seconds; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import time

import hpack

from dataplane.engine import ErrorCode, H2Settings, available_backends, load_backend

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CASES = ("rapid_reset", "hpack_bomb", "continuation_flood", "settings_flood", "ping_flood",
         "priority_flood", "stream_exhaustion", "garbage_preface", "idle_connections")

_RESPONDER = r"""
import asyncio, sys, uvloop
from dataplane.engine import H2Settings, load_backend
from dataplane.listener import serve

class Responder:
    def on_request(self, conn, sid, headers, end):
        if dict(headers).get(b":path") == b"/hold":
            return  # never answered: holds a stream (stream-limit exhaustion)
        conn.respond(sid, 200, [(b"content-type", b"application/json")], b'{"ok":true}')
    def on_connection_lost(self, conn):
        pass

async def main():
    srv = await serve("127.0.0.1", 0, Responder, load_backend(sys.argv[1]), H2Settings())
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[2]))

uvloop.run(main())
"""


# :method GET, :scheme http, :path / (static table), :authority "abuse" (not indexed): a
# request head that adds nothing to the decoder's dynamic table
_BOMB_HEAD = b"\x82\x86\x84\x01\x05abuse"


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) \
        + payload


def _settings(flags: int = 0) -> bytes:
    return _frame(4, flags, 0)


def _headers_block(enc: hpack.Encoder, path: bytes = b"/x", extra=()) -> bytes:
    return enc.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"abuse"),
                       (b":path", path), *extra])


class _Attack:
    """Bytes for one connection of a case: ``first`` after the preface, then ``more()`` in a
    loop until the connection is cut or the case ends."""

    def __init__(self, case: str) -> None:
        self.case = case
        self.enc = hpack.Encoder()
        self.sid = 1

    def next_sid(self) -> int:
        sid = self.sid
        self.sid += 2
        return sid

    def first(self) -> bytes:
        if self.case == "garbage_preface":
            return os.urandom(64)
        out = _settings() + _settings(flags=1)
        if self.case == "hpack_bomb":  # one 4 KB entry, the newest in the decoder's table
            out += _frame(1, 0x5, self.next_sid(), _BOMB_HEAD + b"\x40\x06x-bomb\x7f\xa1\x1e"
                          + b"b" * 4000)
        return out

    def more(self) -> bytes:
        case = self.case
        if case == "rapid_reset":
            out = []
            for _ in range(100):
                sid = self.next_sid()
                out.append(_frame(1, 0x4, sid, _headers_block(self.enc)))
                out.append(_frame(3, 0, sid, struct.pack(">I", ErrorCode.CANCEL)))
            return b"".join(out)
        if case == "hpack_bomb":  # blocks of indexed references to the 4 KB entry:
            refs = b"\xbe" * 60  # index 62, ~240 KB decoded from 60 bytes
            return b"".join(_frame(1, 0x5, self.next_sid(), _BOMB_HEAD + refs)
                            for _ in range(20))
        if case == "continuation_flood":  # one header block that never ends
            if self.sid == 1:
                return _frame(1, 0x1, self.next_sid(), _headers_block(self.enc))
            return _frame(9, 0, 1, b"") * 500
        if case == "settings_flood":
            return _settings() * 200
        if case == "ping_flood":
            return _frame(6, 0, 0, b"\x00" * 8) * 200
        if case == "priority_flood":
            return b"".join(_frame(2, 0, 2 * i + 1, b"\x00\x00\x00\x00\x10") for i in range(200))
        if case == "stream_exhaustion":
            return b"".join(_frame(1, 0x5, self.next_sid(), _headers_block(self.enc, b"/hold"))
                            for _ in range(200))
        return b""


async def _attacker(port: int, case: str, stop: asyncio.Event, got: dict) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        got["connections"] += 1
        attack = _Attack(case)
        writer.write(PREFACE + attack.first())
        got["bytes_sent"] += 24

        async def read(reader: asyncio.StreamReader = reader) -> None:
            buf = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    if buf[3] == 7:  # GOAWAY
                        code = int.from_bytes(buf[13:17], "big")
                        try:
                            name = ErrorCode(code).name
                        except ValueError:
                            name = hex(code)
                        got["goaway"][name] = got["goaway"].get(name, 0) + 1
                    buf = buf[9 + n:]

        reading = asyncio.ensure_future(read())
        try:
            while not stop.is_set() and not reading.done():
                chunk = attack.more()
                if not chunk:
                    await asyncio.wait([reading], timeout=0.05)
                    continue
                writer.write(chunk)
                got["bytes_sent"] += len(chunk)
                await writer.drain()
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            pass
        if reading.done():
            got["cut"] += 1
        reading.cancel()
        writer.close()


async def _legit(engine, port: int, stop: asyncio.Event, concurrency: int) -> dict:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    failed = 0
    conn = None

    async def connect():
        _, c = await loop.create_connection(lambda: engine.ClientConnection(H2Settings()),
                                            "127.0.0.1", port)
        await asyncio.wait_for(c.ready, 2)
        return c

    async def one(c) -> None:
        nonlocal failed
        fut = loop.create_future()
        t0 = time.perf_counter()
        c.request([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"legit"),
                   (b":path", b"/nudm-sdm/v2/imsi-001010000000001/am-data"),
                   (b"user-agent", b"AMF-legit")], None,
                  lambda *a: fut.done() or fut.set_result(a))
        try:
            status, _, _, _, error = await asyncio.wait_for(fut, 2.0)
        except TimeoutError:
            failed += 1
            return
        if error is None and status == 200:
            lat.append(time.perf_counter() - t0)
        else:
            failed += 1

    async def worker() -> None:
        nonlocal conn, failed
        while not stop.is_set():
            try:
                if conn is None or not conn.available:
                    conn = await connect()
                await one(conn)
            except (OSError, ConnectionError, TimeoutError):
                failed += 1
                conn = None
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if conn is not None:
        conn.close()
    lat.sort()
    total = len(lat) + failed

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else None

    return {"requests": total, "ok": len(lat),
            "success": round(len(lat) / total, 4) if total else 0.0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def _case(backend: str, port: int, pid: int, case: str, duration: float,
                concurrency: int, idle: int, baseline_p99: float | None) -> dict:
    engine = load_backend(backend)
    stop = asyncio.Event()
    got = {"connections": 0, "cut": 0, "goaway": {}, "bytes_sent": 0}
    before = _rss(pid)
    peak = before
    held = []
    tasks = [asyncio.ensure_future(_legit(engine, port, stop, concurrency))]
    if case == "idle_connections":
        for _ in range(idle):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:  # out of descriptors (ulimit -n)
                got["error"] = f"{len(held)} idle connections opened: {exc}"
                break
            w.write(PREFACE + _settings() + _settings(flags=1))
            held.append(w)
        got["connections"] = len(held)
        idle = len(held)
    elif case != "baseline":
        tasks.append(asyncio.ensure_future(_attacker(port, case, stop, got)))
    end = time.monotonic() + duration
    while time.monotonic() < end:
        await asyncio.sleep(0.05)
        peak = max(peak, _rss(pid))
    stop.set()
    legit = await tasks[0]
    for t in tasks[1:]:
        await t
    out = {"case": case, "legit": legit, "rss_peak_growth_kib": round((peak - before) / 1024, 1),
           "attacker": got}
    if case == "idle_connections" and idle:
        out["kib_per_idle_connection"] = round((peak - before) / idle / 1024, 2)
    for w in held:
        w.close()
    if baseline_p99 and legit["p99_ms"]:
        out["legit"]["p99_vs_baseline"] = round(legit["p99_ms"] / baseline_p99, 2)
    return out


async def _run_backend(backend: str, cases: list[str], duration: float, concurrency: int,
                       idle: int) -> dict:
    total = (len(cases) + 1) * (duration + 2) + 30
    proc = subprocess.Popen([sys.executable, "-c", _RESPONDER, backend, str(total)],
                            stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__))))
    try:
        port = int(proc.stdout.readline())
        base = await _case(backend, port, proc.pid, "baseline", duration, concurrency, idle, None)
        results = [base]
        for case in cases:
            results.append(await _case(backend, port, proc.pid, case, duration, concurrency,
                                       idle, base["legit"]["p99_ms"]))
        return {"backend": backend, "cases": results}
    finally:
        proc.kill()
        proc.wait()


def _raise_fd_limit(need: int) -> None:
    """Idle connections need descriptors here and in the responder (which inherits this)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        top = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfmesh perf abuse", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="1 s per case, 200 idle connections")
    p.add_argument("--duration", type=float, default=None, help="seconds per case (default 3)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " +
                   ", ".join(CASES))
    p.add_argument("--backends", default=",".join(available_backends()))
    p.add_argument("--legit-concurrency", type=int, default=4)
    p.add_argument("--idle", type=int, default=None, help="idle connections (default 2000)")
    args = p.parse_args(argv)
    duration = args.duration or (1.0 if args.quick else 3.0)
    idle = args.idle if args.idle is not None else (200 if args.quick else 2000)
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}")
    _raise_fd_limit(2 * idle + 256)
    out = {"duration_s": duration, "backends": []}
    for backend in [b for b in args.backends.split(",") if b]:
        out["backends"].append(asyncio.run(_run_backend(backend, cases, duration,
                                                        args.legit_concurrency, idle)))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for b in out["backends"]:
            print(f"backend {b['backend']}")
            print(f"  {'case':20} {'legit ok':>9} {'p99 ms':>8} {'x base':>7} {'RSS+ KiB':>9}"
                  f"  attacker")
            for c in b["cases"]:
                lg, at = c["legit"], c["attacker"]
                print(f"  {c['case']:20} {lg['success'] * 100:8.2f}% {lg['p99_ms'] or 0:8.2f} "
                      f"{lg.get('p99_vs_baseline', 1.0):7.2f} {c['rss_peak_growth_kib']:9.1f}  "
                      f"conns={at['connections']} cut={at['cut']} goaway={at['goaway']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
