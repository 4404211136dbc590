"""What the nghttp2 backend's tests share (tests/test_nghttp2_backend*.py): a minimal splice
handler (``SpliceProxy``: every request spliced to one upstream connection, failures answered
502 or replayed once), connecting and requesting over the backend's own ClientConnection, a
local server for a handler (``start_local``), and running the nghttp2 tools.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from dataplane.engine import H2Settings
from tests.waiting import HANG_GUARD_S, wait_until

nghttp2 = pytest.importorskip("dataplane._nghttp2")

WINDOW = 256 << 10
SMALL = H2Settings(initial_window_size=WINDOW, connection_window_size=4 * WINDOW)
FRAME = 16384


def tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} not installed (Debian nghttp2-client / nghttp2-server)")


# ---- a minimal splice handler ------------------------------------------------------------------


class SpliceProxy:
    """Splices every request to ``upstream`` (a connected ClientConnection); an upstream
    failure is answered 502, or replayed once on ``fallback`` with ``fallback_path``."""

    def __init__(self, upstream, fallback=None, fallback_path: bytes | None = None) -> None:
        self.upstream = upstream
        self.fallback = fallback
        self.fallback_path = fallback_path
        self.connections: list = []
        self.lost: list = []  # connections the engine told us are gone
        self.failed: list[tuple[int, int, bool]] = []
        self.completed: list[tuple[int, int, int]] = []
        self.replayed: list[int] = []

    def on_connection_made(self, conn) -> None:
        self.connections.append(conn)

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        conn.splice(
            stream_id,
            self.upstream,
            headers,
            ProxyObserver(self, conn, headers),
            [(b"x-via", b"nfmesh")],
            retain_body=True,
        )

    def on_stream_reset(self, conn, stream_id, error_code) -> None:
        pass

    def on_connection_lost(self, conn) -> None:
        self.lost.append(conn)


class ProxyObserver:
    def __init__(self, proxy: SpliceProxy, conn, headers) -> None:
        self.proxy, self.conn, self.headers = proxy, conn, headers

    def on_upstream_failed(self, stream_id, error_code, reached) -> None:
        p = self.proxy
        p.failed.append((stream_id, error_code, reached))
        if (
            p.fallback is not None
            and self.conn.can_replay(stream_id)
            and stream_id not in p.replayed
        ):
            p.replayed.append(stream_id)
            headers = [(k, p.fallback_path if k == b":path" else v) for k, v in self.headers]
            self.conn.splice(stream_id, p.fallback, headers, self, [(b"x-replayed", b"1")])
            return
        self.conn.respond(stream_id, 502, [(b"x-upstream-error", b"%d" % error_code)], b"")

    def on_complete(self, stream_id, status, error_code) -> None:
        self.proxy.completed.append((stream_id, status, error_code))


async def connect(backend, port: int, settings: H2Settings = H2Settings()):
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: backend.ClientConnection(settings), "127.0.0.1", port
    )
    await asyncio.wait_for(conn.ready, HANG_GUARD_S)
    return conn


async def start_splice_proxy(
    backend,
    upstream_port: int,
    settings: H2Settings = SMALL,
    fallback_port: int | None = None,
    fallback_path: bytes = b"/",
    proxy_cls: type[SpliceProxy] = SpliceProxy,
):
    upstream = await connect(backend, upstream_port, settings)
    fallback = await connect(backend, fallback_port, settings) if fallback_port else None
    proxy = proxy_cls(upstream, fallback, fallback_path)
    loop = asyncio.get_running_loop()

    def make():
        conn = backend.ServerConnection(proxy, settings)
        proxy.on_connection_made(conn)
        return conn

    server = await loop.create_server(make, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], proxy


async def stop_splice_proxy(server, proxy) -> None:
    server.close()
    for conn in proxy.connections:
        conn.close()
    proxy.upstream.close()
    if proxy.fallback is not None:
        proxy.fallback.close()
    await wait_until(lambda: all(c in proxy.lost for c in proxy.connections),
                     what="the engine tells the proxy its connections are lost")


async def request(
    backend,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    extra=(),
    trailers=None,
    timeout: float = HANG_GUARD_S,
    authority: bytes | None = None,
):
    """(status, headers, body, trailers, error) over the backend's own ClientConnection."""
    conn = await connect(backend, port)
    fut = asyncio.get_running_loop().create_future()
    headers = [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", authority or b"127.0.0.1:%d" % port),
        (b":path", path.encode()),
        *extra,
    ]
    conn.request(headers, body, lambda *a: fut.done() or fut.set_result(a), trailers)
    try:
        return await asyncio.wait_for(fut, timeout)
    finally:
        conn.close()


def hdr(headers, name: bytes):
    return next((v for k, v in headers if k == name), None)


async def run(*argv: str, timeout: float = HANG_GUARD_S, stdin: bytes | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, (argv, proc.returncode, err.decode(errors="replace")[-2000:])
    return out


async def start_local(handler, settings: H2Settings = H2Settings()):
    loop = asyncio.get_running_loop()
    conns = []

    def make():
        conn = nghttp2.ServerConnection(handler, settings)
        conns.append(conn)
        return conn

    server = await loop.create_server(make, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], conns
