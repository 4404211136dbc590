"""The compiled proxy (``dataplane._proxy_fast``: ``dataplane/proxy.py`` compiled with
``proxy.pxd``) against its pure twin (``dataplane.proxy``, the same file uncompiled).

Every test using ``start_proxy`` already runs on both classes (``proxy_impl`` in conftest);
here: the selector, and a differential test: randomized mixes of requests (forwarded, failed
over, unreachable, timed out, reset upstream, local answers, local services, router bugs) go
through a pure and a compiled proxy in front of the same real origin, and statuses, headers,
bodies, stats and access-log records must match request by request.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import proxy as pure_mod
from dataplane.client import H2Client, H2ClientError
from dataplane.engine import H2Settings, load_backend
from dataplane.listener import serve
from dataplane.routing import (
    Endpoint,
    Forward,
    LocalResponse,
    LocalService,
    RouterSlot,
)
from dataplane.upstream_pool import UpstreamPools
from tests.conftest import RecordingStats, free_port, start_origin

fast_mod = pytest.importorskip("dataplane._proxy_fast")


def test_selector_picks_the_compiled_class_when_built(monkeypatch) -> None:
    monkeypatch.delenv("NFMESH_PROXY", raising=False)
    assert pure_mod.load_proxy("pure") is pure_mod.Proxy
    assert pure_mod.load_proxy("cython") is fast_mod.Proxy
    assert pure_mod.load_proxy() is fast_mod.Proxy  # auto prefers the compiled one
    assert fast_mod.load_proxy("pure") is pure_mod.Proxy  # the same answer from either twin
    assert pure_mod.available_proxies() == ["cython", "pure"]
    with pytest.raises(ValueError, match="unknown proxy implementation"):
        pure_mod.load_proxy("rust")
    monkeypatch.setenv("NFMESH_PROXY", "pure")  # A/B measurements of the gateway
    assert pure_mod.load_proxy() is pure_mod.Proxy
    assert pure_mod.load_proxy("cython") is fast_mod.Proxy  # an explicit name wins


def test_build_info_reports_the_proxy_exchange_compiled() -> None:
    from gateway.build_info import info

    assert info()["hot_paths"]["proxy exchange"] == "compiled"


def test_the_twins_are_one_source_compiled_once() -> None:
    """``_proxy_fast`` is ``proxy.py`` compiled (setup.py's TWINS), not a second copy: the
    same public names, its exchange and proxy core extension types, and nothing of the pure
    module's inside it."""
    assert fast_mod.NAME == "cython" and pure_mod.NAME == "pure"
    assert fast_mod.__file__.endswith(".so") and pure_mod.__file__.endswith("proxy.py")
    ex = fast_mod._Exchange.__new__(fast_mod._Exchange)
    assert not hasattr(ex, "__dict__") and ex.sent_at == 0.0 and ex.proxy is None  # C fields
    for name in ("Proxy", "ProxyStats", "default_problem", "load_proxy", "available_proxies",
                 "PROXIES", "COARSE_TIMEOUT_S", "SWEEP_PERIOD_S", "ready_connection",
                 "DIRECT_SLOTS"):
        assert hasattr(pure_mod, name) and hasattr(fast_mod, name), name
    for cls in ("Proxy", "_Exchange", "_ProxyCore"):
        mine = {n for n in vars(getattr(pure_mod, cls)) if not n.startswith("__")}
        assert mine <= set(dir(getattr(fast_mod, cls))) | {
            # the exchange's internal steps are C methods of the compiled twin
            "_begin", "_skip_ejected", "_attempt", "_splice", "_next_or_fail", "_answer",
            "_finish", "_release"}, cls
    assert fast_mod.Proxy is not pure_mod.Proxy
    assert not issubclass(fast_mod.Proxy, pure_mod.Proxy)  # no pure code on the compiled path


def test_compiled_proxy_reads_forward_and_pool_slots_directly() -> None:
    """Forward and the upstream pool are still the slots classes whose fields the compiled
    exchange reads in place (else it falls back to attribute lookups: correct, slower)."""
    assert fast_mod.DIRECT_SLOTS == (True, True)


class TaggedForward(Forward):
    """A Forward subclass: the compiled exchange must read it through attribute lookups."""

    __slots__ = ("tag",)


class MixRouter:
    """Routes by the first path segment, so one request mix covers every decision kind."""

    def __init__(self, origin: Endpoint, dead: Endpoint) -> None:
        self.origin = origin
        self.dead = dead

    def _fwd_headers(self, headers, path: bytes):
        out = []
        for k, v in headers:
            if k == b":path":
                v = path
            elif k == b":authority":
                v = f"127.0.0.1:{self.origin.port}".encode()
            out.append((k, v))
        return out

    def route(self, headers, peer):
        path = dict(headers[:5])[b":path"]
        kind, _, rest = path[1:].partition(b"/")
        target = b"/" + rest
        if kind == b"fwd":
            return Forward(self.origin, self._fwd_headers(headers, target), cluster="c1",
                           extra_response_headers=[(b"x-producer", b"origin")])
        if kind == b"alt":  # first endpoint refuses connections: the alternate answers
            hs = self._fwd_headers(headers, target)
            return Forward(self.dead, hs, cluster="c2", alternates=[(self.origin, hs)],
                           extra_response_headers=[(b"x-producer", b"dead")],
                           alternate_response_headers=[[(b"x-producer", b"alt")]])
        if kind == b"sub":
            fwd = TaggedForward(self.origin, self._fwd_headers(headers, target), cluster="c5",
                                extra_response_headers=[(b"x-producer", b"tagged")])
            fwd.tag = "sub"
            return fwd
        if kind == b"dead":
            return Forward(self.dead, self._fwd_headers(headers, target), cluster="c3")
        if kind == b"slowfwd":  # a short deadline on a held request: 504
            return Forward(self.origin, self._fwd_headers(headers, b"/hold"), cluster="c4",
                           timeout=0.1)
        if kind == b"local":
            return LocalResponse(418, [(b"x-local", b"1")], b"teapot")
        if kind == b"svc":
            async def handle(req):
                return LocalResponse(201, [], f"{req.method} {len(req.body)}".encode())
            return LocalService("svc", handle, max_body=64)
        if kind == b"boom":
            raise KeyError("router bug (on purpose)")
        return "not a decision"


REQUESTS = st.sampled_from([
    ("GET", "/fwd/plain", b""),
    ("POST", "/fwd/echo", b"hello body"),
    ("GET", "/fwd/status/404", b""),
    ("GET", "/fwd/headers", b""),
    ("GET", "/fwd/trailers", b""),
    ("GET", "/fwd/reset?code=2", b""),
    ("GET", "/fwd/slow?ms=5", b""),
    ("PUT", "/alt/echo", b"to the alternate"),
    ("POST", "/sub/echo", b"through a Forward subclass"),
    ("GET", "/dead/x", b""),
    ("GET", "/slowfwd/x", b""),
    ("GET", "/local", b""),
    ("POST", "/svc/x", b"abc"),
    ("POST", "/svc/big", b"y" * 100),
    ("DELETE", "/boom", b""),
    ("PATCH", "/odd", b""),
])


class ListLog:
    """An access log with the batched ``record`` form, keeping the raw rows."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def __call__(self, **kw) -> None:  # pragma: no cover - the proxy prefers record()
        raise AssertionError("record() expected")

    def record(self, method, path, status, cluster, endpoint, duration_s, error_code, peer):
        assert duration_s >= 0
        self.rows.append((method, path, status, cluster, endpoint, error_code))


def _outcome(resp) -> tuple:
    if isinstance(resp, BaseException):
        return ("error", type(resp).__name__)
    headers = [(k, v) for k, v in resp.headers if k not in ("date", "content-length")]
    return (resp.status, headers, resp.body, resp.trailers)


async def _close(client, server, proxy, pools) -> None:
    client.close()
    server.close()
    for conn in list(proxy.connections):
        conn.close()
    pools.close()
    await asyncio.sleep(0)


async def _through(cls, backend, router, mix) -> tuple[list, Counter, Counter]:
    settings = H2Settings()
    pools = UpstreamPools(backend, settings, connect_timeout=1.0)
    stats, access = RecordingStats(), ListLog()
    proxy = cls(RouterSlot(router), pools, stats=stats, access_log=access)
    server = await serve("127.0.0.1", 0, lambda: proxy, backend, settings, None)
    port = server.sockets[0].getsockname()[1]
    client = H2Client(backend.NAME)
    try:
        results = await asyncio.gather(
            *(client.request(m, f"http://127.0.0.1:{port}{p}", body=b, timeout=3.0)
              for m, p, b in mix),
            return_exceptions=True)
        for _ in range(100):  # local services and failures record right after answering
            if len(stats.done) >= len(mix) and len(access.rows) >= len(mix):
                break
            await asyncio.sleep(0.01)
    finally:
        await _close(client, server, proxy, pools)
    assert not any(isinstance(r, (H2ClientError, TimeoutError)) and "connect" in str(r)
                   for r in results)
    return [_outcome(r) for r in results], Counter(stats.done), Counter(access.rows)


async def _compare(mix) -> None:
    backend = load_backend("auto")
    origin = await start_origin(backend)
    dead = Endpoint("127.0.0.1", free_port())
    router = MixRouter(origin.endpoint, dead)
    try:
        pure = await _through(pure_mod.Proxy, backend, router, mix)
        fast = await _through(fast_mod.Proxy, backend, router, mix)
    finally:
        await origin.stop()
    assert fast[0] == pure[0]  # request by request: status, headers, body, trailers
    assert fast[1] == pure[1]  # stats: cluster, method, status, error code
    assert fast[2] == pure[2]  # access log rows
    assert sum(fast[1].values()) == len(mix)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mix=st.lists(REQUESTS, min_size=1, max_size=12))
def test_fast_and_pure_proxy_agree_on_random_request_mixes(mix) -> None:
    uvloop.run(_compare(mix))


def test_every_decision_kind_gives_the_expected_answer() -> None:
    """The fixed mix of all kinds: both agree, and on what the pure docstring promises."""
    mix = [("GET", "/fwd/plain", b""), ("PUT", "/alt/echo", b"z"), ("GET", "/dead/x", b""),
           ("POST", "/sub/echo", b"s"),
           ("GET", "/slowfwd/x", b""), ("GET", "/local", b""), ("POST", "/svc/x", b"abc"),
           ("DELETE", "/boom", b""), ("PATCH", "/odd", b""), ("GET", "/fwd/reset?code=2", b"")]

    async def run() -> list:
        backend = load_backend("auto")
        origin = await start_origin(backend)
        router = MixRouter(origin.endpoint, Endpoint("127.0.0.1", free_port()))
        try:
            return await _through(fast_mod.Proxy, backend, router, mix)
        finally:
            await origin.stop()

    outcomes, stats, _ = uvloop.run(run())
    statuses = [o[0] for o in outcomes]
    assert statuses == [200, 200, 504, 200, 504, 418, 201, 500, 500, 502]
    assert ("x-producer", "alt") in outcomes[1][1] and outcomes[1][2] == b"z"
    assert ("x-producer", "origin") in outcomes[0][1]
    assert ("x-producer", "tagged") in outcomes[3][1] and outcomes[3][2] == b"s"
    assert stats[("c5", "POST", 200, 0)] == 1
    assert stats[("c4", "GET", 504, 0)] == 1 and stats[("svc", "POST", 201, 0)] == 1


class _Answers:
    """A router that answers every request itself, with its own body."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def route(self, headers, peer) -> LocalResponse:
        return LocalResponse(200, [("content-type", "text/plain")], self.body)


@pytest.mark.parametrize("cls", [pure_mod.Proxy, fast_mod.Proxy], ids=["pure", "compiled"])
def test_a_router_put_in_the_slot_answers_the_next_request(cls) -> None:
    """The compiled proxy keeps the last router's bound ``route``: a new snapshot in the slot
    (one assignment, as the control plane does it) must answer the very next request."""

    async def run() -> list[bytes]:
        backend = load_backend("auto")
        settings = H2Settings()
        pools = UpstreamPools(backend, settings, connect_timeout=1.0)
        slot = RouterSlot(_Answers(b"one"))
        proxy = cls(slot, pools)
        server = await serve("127.0.0.1", 0, lambda: proxy, backend, settings, None)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
        client = H2Client(backend.NAME)
        bodies = []
        try:
            for body in (b"one", b"two", b"two", b"three"):
                if slot.current.body != body:
                    slot.current = _Answers(body)
                bodies.append((await client.request("GET", url, timeout=3.0)).body)
        finally:
            await _close(client, server, proxy, pools)
        return bodies

    assert uvloop.run(run()) == [b"one", b"two", b"two", b"three"]
