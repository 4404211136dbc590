"""Memory a proxy spends per idle HTTP/2 connection and per open stream, from its RSS.

The probe opens ``connections`` HTTP/2 connections to the target (the project's engine as the
client, SETTINGS exchanged, no request) and reads the growth of the target's RSS: bytes per
idle connection.  Then it stops the backend (SIGSTOP), so that no request can finish, sends
``streams`` POSTs spread over those connections, waits until the target has forwarded them
(its RSS stops growing), and reads the growth again: bytes per open stream, request body held
and upstream stream included.  The backend is continued (SIGCONT) in every case; the answers
are awaited (bounded) and the connections closed.

RSS moves in pages and allocators keep freed memory, so the numbers are estimates, good for
comparing proxies measured the same way in the same run, not for exact accounting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from dataclasses import dataclass

from dataplane.engine import H2Settings, load_backend
from perf.proc_stats import snapshot


@dataclass(frozen=True, slots=True)
class MemoryProbeResult:
    connections: int
    streams: int
    bytes_per_idle_connection: float
    bytes_per_open_stream: float
    streams_answered: int


def _rss(pid: int) -> int:
    return snapshot(pid).rss


async def _settle(pid: int, interval_s: float = 0.05, rounds: int = 40) -> int:
    """The target's RSS once two readings in a row agree (at most ``rounds`` readings)."""
    last = _rss(pid)
    for _ in range(rounds):
        await asyncio.sleep(interval_s)
        now = _rss(pid)
        if now == last:
            return now
        last = now
    return last


async def probe(
    host: str, port: int, target_pid: int, backend_pid: int, *, headers: list[tuple[bytes, bytes]],
    body: bytes, tls: bool = False, connections: int = 100, streams: int = 500,
    backend: str = "auto", timeout_s: float = 10.0,
) -> MemoryProbeResult:
    """Run the probe (see the module doc).  ``headers`` is a full request header block."""
    engine = load_backend(backend)
    loop = asyncio.get_running_loop()
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    conns = []
    answered = 0
    done = loop.create_future()
    try:
        base = await _settle(target_pid)
        for _ in range(connections):
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: engine.ClientConnection(H2Settings()), host, port, ssl=ctx,
                server_hostname=host if ctx else None), timeout_s)
            await asyncio.wait_for(conn.ready, timeout_s)
            conns.append(conn)
        idle = await _settle(target_pid)
        os.kill(backend_pid, signal.SIGSTOP)
        try:
            def on_answer(status, rheaders, rbody, trailers, error) -> None:
                nonlocal answered
                answered += 1
                if answered == streams and not done.done():
                    done.set_result(None)

            for i in range(streams):
                conns[i % len(conns)].request(headers, body, on_answer)
            await asyncio.sleep(0.2)
            loaded = await _settle(target_pid)
        finally:
            os.kill(backend_pid, signal.SIGCONT)
        try:
            await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            pass
    finally:
        for c in conns:
            c.close()
    return MemoryProbeResult(
        connections=connections,
        streams=streams,
        bytes_per_idle_connection=max(0, idle - base) / connections,
        bytes_per_open_stream=max(0, loaded - idle) / streams,
        streams_answered=answered,
    )


def run_probe(host: str, port: int, target_pid: int, backend_pid: int, **kw) -> MemoryProbeResult:
    """``probe`` on a fresh uvloop loop (for the synchronous harness)."""
    import uvloop

    return uvloop.run(probe(host, port, target_pid, backend_pid, **kw))
