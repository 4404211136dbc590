"""gRPC (grpcio's C core on both ends) through the proxy: unary and server-streaming calls with
raw-bytes serializers (no protoc), grpc-status and custom trailers intact, errors included."""

from __future__ import annotations

import asyncio
from concurrent import futures

import pytest

from dataplane.routing import Endpoint
from tests.conftest import StaticRouter, start_proxy

grpc = pytest.importorskip("grpc", reason="grpcio is not installed")
pytestmark = pytest.mark.interop


def _unary(request: bytes, context) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such subscriber")
    context.set_trailing_metadata((("x-served-by", "grpc-origin"),))
    return request[::-1]


def _stream(request: bytes, context):
    count = int(request)
    for i in range(count):
        yield f"message {i}".encode() + b"." * 1000
    context.set_trailing_metadata((("x-count", str(count)),))


@pytest.fixture
def grpc_origin():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield Endpoint("127.0.0.1", port)
    server.stop(grace=None)


@pytest.fixture
async def grpc_proxy(backend, grpc_origin):
    running = await start_proxy(backend, StaticRouter(grpc_origin))
    yield running
    await running.stop()


def _calls(port: int) -> dict:
    """Runs in a worker thread: the sync grpc client with its own C-core threads."""
    out: dict = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        resp, call = unary.with_call(b"hello grpc", timeout=5)
        out["unary"] = resp
        out["unary_code"] = call.code()
        out["unary_trailers"] = dict(call.trailing_metadata())
        try:
            unary(b"missing", timeout=5)
        except grpc.RpcError as err:
            out["error"] = (err.code(), err.details())
        stream = channel.unary_stream("/test.Echo/Stream")
        call = stream(b"50", timeout=5)
        out["stream"] = list(call)
        out["stream_code"] = call.code()
        out["stream_trailers"] = dict(call.trailing_metadata())
    return out


async def test_grpc_unary_and_streaming_through_proxy(grpc_proxy):
    out = await asyncio.wait_for(asyncio.to_thread(_calls, grpc_proxy.port), 30)
    assert out["unary"] == b"cprg olleh"
    assert out["unary_code"] == grpc.StatusCode.OK
    assert out["unary_trailers"]["x-served-by"] == "grpc-origin"
    assert out["error"] == (grpc.StatusCode.NOT_FOUND, "no such subscriber")
    assert len(out["stream"]) == 50
    assert out["stream"][49].startswith(b"message 49")
    assert out["stream_code"] == grpc.StatusCode.OK
    assert out["stream_trailers"]["x-count"] == "50"
    statuses = [done[2] for done in grpc_proxy.extra["stats"].done]
    assert statuses == [200, 200, 200]
