"""The nghttp2 (Cython) backend against real HTTP/2 peers, and against the pure backend.

Peers nobody here wrote: ``nghttp`` and ``h2load`` as clients, ``nghttpd`` as the upstream of a
splice, curl and grpcio's C-core through a splice, the python-hyper ``h2`` library as a slow
reading client.  A tiny splice handler (``tests.nghttp2_rig.SpliceProxy``) joins downstream
streams to one upstream connection, so the engine is tested without the project's proxy.  The
differential test runs one request sequence through both backends and compares the answers.
Splice semantics (trailers, resets, replay, flow control) are in
``test_nghttp2_backend_splice.py``, limits and shutdown in ``test_nghttp2_backend_limits.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re

import h2.config
import h2.connection
import h2.events
import pytest

from dataplane.engine import available_backends, load_backend
from tests.conftest import free_port, pattern, start_origin
from tests.nghttp2_rig import (
    FRAME,
    WINDOW,
    request,
    run,
    start_splice_proxy,
    stop_splice_proxy,
    tools,
)
from tests.waiting import HANG_GUARD_S, wait_until

nghttp2 = pytest.importorskip("dataplane._nghttp2")

pytestmark = pytest.mark.interop


@pytest.fixture
async def origin():
    running = await start_origin(nghttp2)
    yield running
    await running.stop()


@pytest.fixture
async def nghttpd(tmp_path):
    """A real nghttpd (h2c) serving tmp_path/htdocs, echoing POST bodies."""
    tools("nghttpd")
    htdocs = tmp_path / "htdocs"
    htdocs.mkdir()
    (htdocs / "hello.txt").write_bytes(b"hello from nghttpd\n")
    big = os.urandom(10 << 20)
    (htdocs / "big.bin").write_bytes(big)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "nghttpd",
        "--no-tls",
        "--echo-upload",
        "-a",
        "127.0.0.1",
        "-d",
        str(htdocs),
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def listening() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"nghttpd exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        w.close()
        return True

    await wait_until(listening, what=f"nghttpd listens on {port}")
    yield port, big, tmp_path
    proc.terminate()
    await proc.wait()


# ---- local responses to real clients -------------------------------------------------------------


async def test_nghttp_gets_local_responses_and_trailers(origin, tmp_path):
    tools("nghttp")
    base = f"http://127.0.0.1:{origin.port}"
    assert await run("nghttp", f"{base}/hello") == b"ok origin"
    data = tmp_path / "up.bin"
    data.write_bytes(pattern(300_000))
    out = json.loads(await run("nghttp", "-d", str(data), f"{base}/upload"))
    assert out == {"len": 300_000, "sha256": hashlib.sha256(pattern(300_000)).hexdigest()}
    # request trailers come back as response trailers (/echo), seen on the wire by nghttp -v
    verbose = (
        await run("nghttp", "-v", "-d", str(data), "--trailer", "x-req-sum: 42", f"{base}/echo")
    ).decode(errors="replace")
    recv_headers = re.findall(r"recv \(stream_id=\d+\) (x-req-sum: \S+)", verbose)
    assert recv_headers == ["x-req-sum: 42"]


async def test_h2load_many_concurrent_requests(origin):
    tools("h2load")
    out = (
        await run(
            "h2load", "-n", "3000", "-c", "4", "-m", "16", f"http://127.0.0.1:{origin.port}/hello"
        )
    ).decode()
    assert "3000 succeeded" in out, out
    assert re.search(r"status codes: 3000 2xx", out), out


# ---- splices to a real nghttpd -------------------------------------------------------------------


async def test_splice_to_nghttpd_10mb_both_ways_bounded(nghttpd):
    tools("nghttp", "h2load")
    port, big, tmp_path = nghttpd
    server, pport, proxy = await start_splice_proxy(nghttp2, port)
    try:
        base = f"http://127.0.0.1:{pport}"
        assert await run("nghttp", f"{base}/hello.txt") == b"hello from nghttpd\n"
        down = await run("nghttp", f"{base}/big.bin")
        assert hashlib.sha256(down).digest() == hashlib.sha256(big).digest()
        echoed = await run("nghttp", "-d", str(tmp_path / "htdocs" / "big.bin"), f"{base}/echo")
        assert len(echoed) == len(big) and echoed == big
        out = (
            await run("h2load", "-n", "2000", "-c", "4", "-m", "10", f"{base}/hello.txt")
        ).decode()
        assert "2000 succeeded" in out, out
        # per stream, the engine never held more than the windows it advertised
        peak = max(c.peak_buffered for c in proxy.connections)
        assert 0 < peak <= 2 * (WINDOW + FRAME)
        assert proxy.upstream.available and not proxy.upstream.closed
    finally:
        await stop_splice_proxy(server, proxy)


async def test_slow_reader_keeps_proxy_buffer_bounded(origin):
    """A client that reads slowly: the upstream is slowed down, the proxy does not buffer."""
    server, pport, proxy = await start_splice_proxy(nghttp2, origin.port)
    size = 4 << 20
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", pport)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        sid = h2c.get_next_available_stream_id()
        h2c.send_headers(
            sid,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "x"),
                (":path", f"/download?size={size}"),
            ],
            end_stream=True,
        )
        writer.write(h2c.data_to_send())
        got = bytearray()
        ended = False
        while not ended:
            data = await asyncio.wait_for(reader.read(65536), HANG_GUARD_S)
            assert data, "connection closed early"
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    # a slow consumer: the pause is the behaviour under test, not a wait
                    await asyncio.sleep(0.002)
                    h2c.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError(f"reset {ev.error_code}")
            writer.write(h2c.data_to_send())
        writer.close()
        assert bytes(got) == pattern(size)
        peak = max(c.peak_buffered for c in proxy.connections)
        assert peak <= WINDOW + FRAME, peak
    finally:
        await stop_splice_proxy(server, proxy)


# ---- more independent peers: curl, grpcio (C-core) ----------------------------------------------


async def test_curl_through_splice(origin, tmp_path):
    tools("curl")
    server, pport, proxy = await start_splice_proxy(nghttp2, origin.port)
    try:
        base = f"http://127.0.0.1:{pport}"
        out = await run(
            "curl", "-sS", "--http2-prior-knowledge", "-D", "-", f"{base}/download?size=1000000"
        )
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/2 200") and b"x-via: nfmesh" in head
        assert body == pattern(1_000_000)
        data = tmp_path / "up.bin"
        data.write_bytes(pattern(2_000_000))
        out = await run(
            "curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{data}", f"{base}/upload"
        )
        assert json.loads(out)["sha256"] == hashlib.sha256(pattern(2_000_000)).hexdigest()
    finally:
        await stop_splice_proxy(server, proxy)


async def test_grpc_unary_stream_and_error_status_through_splice():
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    def echo(request, context):
        return request[::-1]

    def count(request, context):
        for i in range(int(request)):
            yield b"%d" % i

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such subscriber")

    handlers = grpc.method_handlers_generic_handler(
        "nfmesh.Test",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    gserver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gserver.add_generic_rpc_handlers((handlers,))
    gport = gserver.add_insecure_port("127.0.0.1:0")
    gserver.start()
    server, pport, proxy = await start_splice_proxy(nghttp2, gport)
    try:

        def calls():
            with grpc.insecure_channel(f"127.0.0.1:{pport}") as ch:
                echo = ch.unary_unary("/nfmesh.Test/Echo")
                echoed = echo(b"x" * 100_000 + b"end", timeout=HANG_GUARD_S)
                count = ch.unary_stream("/nfmesh.Test/Count")
                counted = list(count(b"50", timeout=HANG_GUARD_S))
                try:
                    ch.unary_unary("/nfmesh.Test/Fail")(b"", timeout=HANG_GUARD_S)
                    failed = None
                except grpc.RpcError as exc:
                    failed = (exc.code(), exc.details())
                return echoed, counted, failed

        echoed, counted, failed = await asyncio.to_thread(calls)
        assert echoed == b"dne" + b"x" * 100_000
        assert counted == [b"%d" % i for i in range(50)]
        # grpc-status / grpc-message travel in the trailers (a trailers-only response here)
        assert failed == (grpc.StatusCode.NOT_FOUND, "no such subscriber")
    finally:
        await stop_splice_proxy(server, proxy)
        gserver.stop(None)


# ---- differential: the same exchanges through both backends --------------------------------------


SEQUENCE = [
    ("GET", "/hello", None, None),
    ("POST", "/echo", pattern(70_000), [(b"x-t", b"1")]),
    ("GET", "/trailers", None, None),
    ("GET", "/status/404", None, None),
    ("GET", "/download?size=300000", None, None),
    ("POST", "/upload", pattern(500_000), None),
    ("GET", "/headers", None, None),
    ("GET", "/reset?code=2", None, None),
]


async def _run_sequence(backend_name: str) -> list:
    backend = load_backend(backend_name)
    origin = await start_origin(backend)
    server, pport, proxy = await start_splice_proxy(backend, origin.port)
    out = []
    try:
        for method, path, body, trailers in SEQUENCE:
            status, headers, rbody, rtrailers, err = await request(
                nghttp2, pport, method, path, body, trailers=trailers, authority=b"nf.example"
            )
            headers = [(k, v) for k, v in headers if k not in (b"date", b"server")]
            out.append(
                (
                    path,
                    status,
                    headers,
                    rbody,
                    rtrailers,
                    getattr(err, "error_code", None if err is None else -1),
                )
            )
    finally:
        await stop_splice_proxy(server, proxy)
        await origin.stop()
    return out


@pytest.mark.skipif("h2" not in available_backends(), reason="pure backend not importable")
async def test_differential_nghttp2_vs_h2_backend():
    fast = await _run_sequence("nghttp2")
    pure = await _run_sequence("h2")
    for f, p in zip(fast, pure, strict=True):
        assert f == p, f"{f[0]}: nghttp2 {f[1:3]} {f[4:]} vs h2 {p[1:3]} {p[4:]}"
