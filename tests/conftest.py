"""Shared test fixtures: uvloop, the HTTP/2 backends, free ports, an in-process origin, a PKI.

* ``backend``: parametrized over ``dataplane.engine.available_backends()``, so every test that
  takes it runs on the h2 backend and, once built, on the nghttp2 one.
* ``free_port()``: a TCP port free on 127.0.0.1 right now.
* ``start_origin(backend, ...)``: an in-process HTTP/2 server (``OriginHandler``) answering from
  the request; ``start_proxy(...)``: a ``Proxy`` listener in front of endpoints (``StaticRouter``),
  built from the pure or the compiled class (``proxy_impl``: every proxy test runs on both).
* ``pki``: a throw-away CA with server and client certificates (tests/certs.py).

Property tests (hypothesis) read ``HYPOTHESIS_PROFILE``: ``ci`` (what scripts/test.sh sets) draws
the same examples on every run, so a CI result is reproducible here; ``stress`` draws 20x more
examples to hunt for wrong properties; unset, hypothesis's default random draw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
import uvloop
from hypothesis import settings

from dataplane.engine import ErrorCode, H2Settings, Headers, available_backends, load_backend
from dataplane.listener import serve
from dataplane.proxy import Proxy, available_proxies, load_proxy
from dataplane.routing import Endpoint, Forward, RouterSlot
from dataplane.upstream_pool import UpstreamPools
from tests.certs import make_pki

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("stress", max_examples=2000, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on uvloop, the loop the gateway uses."""
    return {"uvloop": uvloop.new_event_loop}


# the Proxy class start_proxy builds; the proxy_impl fixture sets it per test
_PROXY_CLASS: list[type[Proxy]] = [Proxy]


@pytest.fixture(autouse=True)
def proxy_impl(request):
    """The ``Proxy`` implementation ``start_proxy`` builds: ``pure``, and (parametrized by
    ``pytest_generate_tests``) also ``cython`` for backend tests in modules using start_proxy."""
    name = getattr(request, "param", "pure")
    _PROXY_CLASS[0] = load_proxy(name)
    yield name
    _PROXY_CLASS[0] = Proxy


def pytest_generate_tests(metafunc):
    """Every proxy test (takes ``backend``, module uses ``start_proxy``) runs on each proxy."""
    if ("backend" in metafunc.fixturenames and "start_proxy" in vars(metafunc.module)
            and "proxy_impl" in metafunc.fixturenames):
        metafunc.parametrize("proxy_impl", available_proxies(), indirect=True)


@pytest.fixture(params=available_backends())
def backend(request):
    """The backend module (``ServerConnection``, ``ClientConnection``, ``NAME``)."""
    return load_backend(request.param)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


# ---- the in-process origin ----------------------------------------------------------------------

def header(headers: Headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


class OriginHandler:
    """A ServerHandler answering from the request path:

    ``/echo`` body back (with request trailers as response trailers); ``/upload`` JSON
    {len, sha256} of the body; ``/download?size=N`` N bytes (pattern ``i % 251``);
    ``/status/NNN``; ``/fields?n=N&t=M`` N response header fields and M trailer fields;
    ``/slow?ms=N``; ``/reset?code=N`` RST_STREAM; ``/reset_mid`` headers,
    part of a body, then RST_STREAM; ``/headers`` the request headers as JSON; ``/trailers``
    a body and trailers; ``/hold`` never answers; ``/raise`` raises in the handler; anything
    else 200 "ok <name>".  ``refuse_all`` / ``reset_all`` make it reset every request.
    """

    def __init__(self, name: str = "origin") -> None:
        self.name = name
        self.requests: list[Headers] = []
        self.resets: list[tuple[int, int]] = []
        self.connections: list = []
        self.held: list[tuple] = []
        # answer every request with RST_STREAM(REFUSED_STREAM): True at once, "after_body" once
        # the whole request body was read
        self.refuse_all: bool | str = False
        self.reset_all: int | None = None  # RST_STREAM every request with this code

    def on_connection_made(self, conn) -> None:
        self.connections.append(conn)

    def on_request(self, conn, stream_id: int, headers: Headers, end_stream: bool) -> None:
        self.requests.append(headers)
        if self.refuse_all == "after_body":  # REFUSED_STREAM once the whole body is in
            conn.read_body(stream_id, 64 << 20, lambda body, trailers: body is not None and
                           conn.reset(stream_id, ErrorCode.REFUSED_STREAM))
            return
        if self.refuse_all:
            conn.reset(stream_id, ErrorCode.REFUSED_STREAM)
            return
        if self.reset_all is not None:
            conn.reset(stream_id, self.reset_all)
            return
        url = urlsplit(header(headers, b":path").decode())
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/echo":
            def done(body, trailers):
                if body is not None:
                    ctype = header(headers, b"content-type") or b"application/octet-stream"
                    conn.respond(stream_id, 200, [(b"content-type", ctype)], body,
                                 trailers or None)
            conn.read_body(stream_id, 64 << 20, done)
        elif path == "/upload":
            def done(body, trailers):
                if body is not None:
                    out = json.dumps({"len": len(body),
                                      "sha256": hashlib.sha256(body).hexdigest()}).encode()
                    conn.respond(stream_id, 200, [(b"content-type", b"application/json")], out)
            conn.read_body(stream_id, 64 << 20, done)
        elif path == "/download":
            size = int(query.get("size", "0"))
            conn.respond(stream_id, 200, [(b"content-type", b"application/octet-stream")],
                         pattern(size))
        elif path.startswith("/status/"):
            conn.respond(stream_id, int(path.rsplit("/", 1)[1]), [], b"")
        elif path == "/slow":
            asyncio.get_running_loop().call_later(
                int(query.get("ms", "100")) / 1000, conn.respond, stream_id, 200, [],
                b"slow " + self.name.encode())
        elif path == "/reset":
            conn.reset(stream_id, int(query.get("code", str(int(ErrorCode.INTERNAL_ERROR)))))
        elif path == "/reset_mid":
            # response headers and a first part of the body, then RST_STREAM
            conn.respond(stream_id, 200, [], pattern(int(query.get("size", "200000"))))
            conn.reset(stream_id, int(query.get("code", str(int(ErrorCode.INTERNAL_ERROR)))))
        elif path == "/headers":
            body = json.dumps([[k.decode(), v.decode()] for k, v in headers]).encode()
            conn.respond(stream_id, 200, [(b"content-type", b"application/json")], body)
        elif path == "/trailers":
            conn.respond(stream_id, 200, [(b"content-type", b"text/plain")], b"with trailers",
                         [(b"x-checksum", b"abc"), (b"grpc-status", b"0")])
        elif path == "/fields":
            # n response header fields x-f-<i>, then m trailer fields x-t-<i> when m > 0
            n, m = int(query.get("n", "0")), int(query.get("t", "0"))
            fields = [(b"x-f-%d" % i, b"v%d-" % i + b"h" * (i % 7)) for i in range(n)]
            trailers = [(b"x-t-%d" % i, b"t%d" % i) for i in range(m)] or None
            conn.respond(stream_id, 200, fields, b"fields", trailers)
        elif path == "/raise":
            raise RuntimeError("handler bug (on purpose)")
        elif path == "/hold":
            self.held.append((conn, stream_id))
        else:
            conn.respond(stream_id, 200, [(b"content-type", b"text/plain")],
                         b"ok " + self.name.encode())

    def on_stream_reset(self, conn, stream_id: int, error_code: int) -> None:
        self.resets.append((stream_id, error_code))

    def on_connection_lost(self, conn) -> None:
        pass


def pattern(size: int) -> bytes:
    block = bytes(i % 251 for i in range(251 * 64))
    reps, rest = divmod(size, len(block))
    return block * reps + block[:rest]


@dataclass
class Running:
    """A started listener: where it is and how to stop it."""

    server: asyncio.Server
    port: int
    handler: object = None
    extra: dict = field(default_factory=dict)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    async def stop(self) -> None:
        self.server.close()
        handler = self.handler
        for conn in list(getattr(handler, "connections", ())):
            conn.close()
        await asyncio.sleep(0)


async def start_origin(backend, name: str = "origin", settings: H2Settings = H2Settings(),
                       ssl_context=None) -> Running:
    handler = OriginHandler(name)
    server = await serve("127.0.0.1", 0, lambda: handler, backend, settings, ssl_context)
    port = server.sockets[0].getsockname()[1]
    return Running(server, port, handler)


class StaticRouter:
    """A test Router: every request goes to ``endpoint`` (then ``alternates``), :authority kept."""

    def __init__(self, endpoint: Endpoint, alternates: list[Endpoint] = (), timeout=None,
                 retryable: bool = False, cluster: str = "test") -> None:
        self.endpoint = endpoint
        self.alternates = list(alternates)
        self.timeout = timeout
        self.retryable = retryable
        self.cluster = cluster

    def route(self, headers: Headers, peer: dict):
        fwd_headers = [(k, v) for k, v in headers]
        return Forward(self.endpoint, fwd_headers, cluster=self.cluster,
                       alternates=[(ep, fwd_headers) for ep in self.alternates],
                       extra_response_headers=[(b"x-nfmesh", b"1")],
                       timeout=self.timeout, retryable=self.retryable)


class RecordingStats:
    def __init__(self) -> None:
        self.done: list[tuple] = []

    def on_request_done(self, cluster, method, status, duration_s, error_code) -> None:
        self.done.append((cluster, method, status, error_code))


async def start_proxy(backend, router, settings: H2Settings = H2Settings(), ssl_context=None,
                      pools: UpstreamPools | None = None, **proxy_kw) -> Running:
    pools = pools or UpstreamPools(backend, settings, connect_timeout=1.0)
    stats = proxy_kw.pop("stats", None) or RecordingStats()
    proxy = _PROXY_CLASS[0](RouterSlot(router), pools, stats=stats, **proxy_kw)
    server = await serve("127.0.0.1", 0, lambda: proxy, backend, settings, ssl_context)
    port = server.sockets[0].getsockname()[1]
    running = Running(server, port, proxy, {"pools": pools, "stats": stats})

    async def stop() -> None:
        server.close()
        for conn in list(proxy.connections):
            conn.close()
        pools.close()
        await asyncio.sleep(0)

    running.stop = stop  # type: ignore[method-assign]
    return running
