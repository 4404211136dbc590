"""The proxy's cheap per-request paths: deadlines watched by one sweep (no timer per request),
the batched access log's ``record`` form, ``RequestStats`` cells, the pool's last-endpoint cache.

Every proxy test runs on each available backend (the ``backend`` fixture), against a real
origin over HTTP/2."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
from prometheus_client import generate_latest

from dataplane import proxy as proxy_mod
from dataplane.client import H2Client
from dataplane.engine import ErrorCode
from dataplane.routing import Endpoint
from gateway.app import AccessLog
from gateway.metrics import BUCKETS, RequestStats, new_registry
from tests.conftest import StaticRouter, free_port, start_origin, start_proxy
from tests.waiting import HANG_GUARD_S, wait_until


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


@pytest.fixture
async def client(backend):
    c = H2Client(backend.NAME)
    yield c
    c.close()


def url(running, path: str) -> str:
    return f"http://127.0.0.1:{running.port}{path}"


# ---- deadlines --------------------------------------------------------------------------------

async def test_long_deadline_is_swept_504_without_a_timer_per_request(
        backend, origin, client, monkeypatch, proxy_impl):
    # make 0.3 s a "long" deadline so the sweep watches it (in the module of the twin in use:
    # the compiled one has its own copy of the settings)
    twin = sys.modules[proxy_mod.load_proxy(proxy_impl).__module__]
    monkeypatch.setattr(twin, "COARSE_TIMEOUT_S", 0.25)
    monkeypatch.setattr(twin, "SWEEP_PERIOD_S", 0.02)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, timeout=0.3))
    try:
        resp = await client.request("GET", url(proxy, "/hold"), timeout=HANG_GUARD_S)
        assert resp.status == 504
        assert resp.json()["cause"] == "TIMED_OUT_REQUEST"
        await wait_until(lambda: origin.handler.resets, what="the origin sees the stream reset")
        assert origin.handler.resets[0][1] == ErrorCode.CANCEL
        assert proxy.extra["stats"].done[-1][2] == 504
        # answered requests leave nothing behind: no watched exchange, no timer on them
        for _ in range(5):
            resp = await client.request("GET", url(proxy, "/slow?ms=10"))
            assert resp.status == 200
        assert proxy.handler._deadlines == {}
        # a response that started before the deadline is not cut by the sweep
        resp = await client.request("GET", url(proxy, "/slow?ms=50"))
        assert resp.status == 200
    finally:
        await proxy.stop()


async def test_short_deadline_keeps_its_own_timer(backend, origin, client):
    # below COARSE_TIMEOUT_S: exact timer, nothing for the sweep
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, timeout=0.2))
    try:
        resp = await client.request("GET", url(proxy, "/hold"), timeout=HANG_GUARD_S)
        assert resp.status == 504
        assert proxy.handler._deadlines == {} and proxy.handler._sweep_timer is None
    finally:
        await proxy.stop()


async def test_sweep_runs_only_while_deadlines_are_pending(backend, origin, client):
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, timeout=30.0))
    try:
        resp = await client.request("GET", url(proxy, "/echo"))
        assert resp.status == 200
        assert proxy.handler._deadlines == {}
        # a window of time, kept: the sweep the request armed fires within one period (timers
        # run in due order, so before this sleep ends); with nothing left to watch it must
        # not re-arm itself, and a sweep that did would still be armed after three periods
        await asyncio.sleep(proxy_mod.SWEEP_PERIOD_S * 3)
        assert proxy.handler._sweep_timer is None  # stopped once nothing was left to watch
    finally:
        await proxy.stop()


# ---- access log and stats through a real exchange ----------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_access_log_record_form_through_the_proxy(backend, origin, client, fmt):
    out = io.StringIO()
    log = AccessLog(fmt, out=out, flush_s=60)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, cluster="udm"),
                              access_log=log)
    try:
        for i in range(3):
            resp = await client.request("POST", url(proxy, f"/echo?n={i}"), body=b"x")
            assert resp.status == 200
        assert out.getvalue() == ""  # nothing formatted or written per request
        log.flush()
        lines = out.getvalue().splitlines()
        assert len(lines) == 3
        up = f"127.0.0.1:{origin.endpoint.port}"
        if fmt == "json":
            entries = [json.loads(x) for x in lines]
            assert [e["path"] for e in entries] == [f"/echo?n={i}" for i in range(3)]
            e = entries[0]
            assert (e["method"], e["status"], e["cluster"], e["upstream"], e["error_code"]) == (
                "POST", 200, "udm", up, 0)
            assert e["peer"][0] == "127.0.0.1" and e["duration_s"] > 0
        else:
            assert lines[0].startswith(f"method=POST path=/echo?n=0 status=200 cluster=udm "
                                       f"upstream={up} duration_s=")
            assert " error_code=0 peer=('127.0.0.1', " in lines[0]
    finally:
        await proxy.stop()


async def test_access_log_record_batches_are_bounded_and_keep_order() -> None:
    out = io.StringIO()
    log = AccessLog("text", out=out, flush_s=60)
    ep = Endpoint("2001:db8::1", 8443)
    for i in range(1200):  # the row bound writes before the (60 s) timer
        log.record("GET", f"/p/{i}", 200, "c", ep if i % 2 else None, 0.001, 0, {})
    written = out.getvalue().splitlines()
    assert 0 < len(written) < 1200
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1200
    assert lines[1].startswith("method=GET path=/p/1 status=200 cluster=c upstream=[2001:db8::1]:8443")
    assert " upstream= " in lines[0] and lines[-1].startswith("method=GET path=/p/1199 ")


async def test_access_log_mixes_keyword_lines_and_records_in_order() -> None:
    out = io.StringIO()
    log = AccessLog("json", out=out, flush_s=60)
    log.record("GET", "/a", 200, "c", None, 0.5, 0, {"peername": ("::1", 1, 0, 0)})
    log(method="PUT", path="/b", status=201, extra="yes")
    log.record("GET", "/\u00e9", 404, "c", None, 0.25, 8, {})
    log.flush()
    entries = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [e["path"] for e in entries] == ["/a", "/b", "/\u00e9"]
    assert entries[0]["peer"] == ["::1", 1, 0, 0] and entries[1]["extra"] == "yes"
    assert entries[2]["peer"] is None and entries[2]["error_code"] == 8


# ---- Forward.on_done ---------------------------------------------------------------------------

class _DoneRouter(StaticRouter):
    """A StaticRouter whose decisions ask to be told when their exchange ends."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.told: list[tuple] = []
        self.fail = False

    def on_done(self, status, error_code, endpoint, reselections) -> None:
        self.told.append((status, error_code, type(error_code), endpoint, reselections))
        if self.fail:
            raise RuntimeError("hook bug (on purpose)")

    def route(self, headers, peer):
        fwd = super().route(headers, peer)
        fwd.on_done = self.on_done
        return fwd


async def _told(router: _DoneRouter, n: int) -> list[tuple]:
    # the engine reports the end right around the last frame
    await wait_until(lambda: len(router.told) >= n,
                     what=lambda: f"on_done told {n} times: {router.told}")
    return router.told


async def test_on_done_is_told_once_with_the_outcome(backend, origin, client, caplog):
    """Each exchange tells its decision's ``on_done`` once: the status (0: none sent), the
    error code as a plain int, the endpoint last tried and how many others were tried after
    the first; a failing hook is logged and costs nothing else."""
    dead = Endpoint("127.0.0.1", free_port())
    router = _DoneRouter(origin.endpoint)
    proxy = await start_proxy(backend, router)
    try:
        assert (await client.request("GET", url(proxy, "/echo"))).status == 200
        assert await _told(router, 1) == [(200, 0, int, origin.endpoint, 0)]
        router.endpoint, router.alternates = dead, [origin.endpoint]  # refused: the alternate
        assert (await client.request("GET", url(proxy, "/echo"))).status == 200
        assert (await _told(router, 2))[1:] == [(200, 0, int, origin.endpoint, 1)]
        router.endpoint, router.alternates = origin.endpoint, []
        assert (await client.request("GET", url(proxy, "/reset?code=2"))).status == 502
        assert (await _told(router, 3))[2:] == [
            (502, ErrorCode.INTERNAL_ERROR, int, origin.endpoint, 0)]
        router.fail = True
        assert (await client.request("GET", url(proxy, "/echo"))).status == 200
        assert len(await _told(router, 4)) == 4 and "on_done hook failed" in caplog.text
        assert [d[2] for d in proxy.extra["stats"].done] == [200, 200, 502, 200]
    finally:
        await proxy.stop()


# ---- the pure twin where Cython is not installed -------------------------------------------------

def test_pure_proxy_imports_without_cython() -> None:
    """``dataplane/proxy.py`` is also the compiled twin's source, so it reads
    ``cython.compiled``; without the Cython package it must still import, as plain Python."""
    import subprocess

    code = ("import sys; sys.modules['cython'] = None\n"  # import cython raises ImportError
            "from dataplane import proxy\n"
            "assert proxy.NAME == 'pure' and proxy.load_proxy('pure') is proxy.Proxy\n"
            "assert proxy.DIRECT_SLOTS == (False, False)\n"
            "print(proxy.cython.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "dataplane._no_cython"


# ---- RequestStats ------------------------------------------------------------------------------

def test_request_stats_counts_histogram_and_resets() -> None:
    stats = RequestStats()
    stats.on_request_done("udm", "GET", 200, 0.0004, 0)
    stats.on_request_done("udm", "GET", 200, 0.003, 0)
    stats.on_request_done("udm", "POST", 502, 0.2, ErrorCode.INTERNAL_ERROR)
    stats.on_request_done("ausf", "GET", 0, 9.0, ErrorCode.CANCEL)
    assert stats.requests == {("udm", "GET", "200"): 2, ("udm", "POST", "502"): 1,
                              ("ausf", "GET", "0"): 1}
    assert stats.total == 4
    assert stats.resets == {("udm", 2): 1, ("ausf", 8): 1}
    assert all(type(code) is int for _, code in stats.resets)
    hist = stats.latency["udm"]
    assert hist.n == 3 and hist.total == pytest.approx(0.2034)
    assert hist.counts[0] == 1 and hist.counts[BUCKETS.index(0.005)] == 1
    assert stats.latency["ausf"].counts[-1] == 1  # above every bound: +Inf only
    text = generate_latest(new_registry(stats)).decode()
    assert 'nfmesh_requests_total{cluster="udm",method="GET",status="200"} 2.0' in text
    assert 'nfmesh_request_duration_seconds_bucket{cluster="udm",le="0.0005"} 1.0' in text
    assert 'nfmesh_request_duration_seconds_bucket{cluster="udm",le="+Inf"} 3.0' in text
    assert 'nfmesh_request_duration_seconds_count{cluster="udm"} 3.0' in text
    assert 'nfmesh_stream_errors_total{cluster="udm",error_code="2"} 1.0' in text


async def test_proxy_feeds_request_stats(backend, origin, client):
    stats = RequestStats()
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, cluster="smf"))
    proxy.handler.stats = stats
    try:
        for _ in range(4):
            assert (await client.request("GET", url(proxy, "/echo"))).status == 200
        assert stats.requests == {("smf", "GET", "200"): 4}
        assert stats.latency["smf"].n == 4
    finally:
        await proxy.stop()


# ---- upstream pool -----------------------------------------------------------------------------

async def test_pool_last_endpoint_cache_follows_endpoints_and_close(backend, origin, client):
    other = await start_origin(backend)
    router = StaticRouter(origin.endpoint)
    proxy = await start_proxy(backend, router)
    try:
        pools = proxy.extra["pools"]
        for ep in (origin.endpoint, other.endpoint, origin.endpoint):
            router.endpoint = ep
            resp = await client.request("POST", url(proxy, "/echo"), body=b"z")
            assert resp.status == 200
        assert len(origin.handler.requests) == 2 and len(other.handler.requests) == 1
        assert pools.get_ready(other.endpoint) is pools.connections(other.endpoint)[0]
        assert pools.get_ready(Endpoint("127.0.0.1", 1)) is None  # never asked: no pool
        pools.close()
        assert pools.get_ready(other.endpoint) is None
    finally:
        await proxy.stop()
        await other.stop()


# ---- the benchmark's stand-ins stay faithful ---------------------------------------------------

@pytest.mark.parametrize("model_c", [True, False])
async def test_hotpath_bench_drives_every_request_through_the_real_path(model_c):
    from perf import hotpath_bench

    result = await hotpath_bench._run(300, model_c, "json", False)
    # every request was routed, spliced (not answered locally) and counted once
    assert result["counted"] == 300 and result["requests"] == 300


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_compiled_stats_and_log_count_and_log_what_the_pure_ones_do(backend, origin,
                                                                          client, proxy_impl,
                                                                          fmt):
    """Either proxy, with the compiled stats and access log, counts and logs exactly what it
    does with the pure objects; a stats object swapped in later gets the next request."""
    from gateway.access_log import available_access_logs, load_access_log
    from gateway.metrics import load_request_stats

    if "cython" not in available_access_logs():
        pytest.skip("gateway._access_log_fast is not built")
    try:
        fast_stats_cls = load_request_stats("cython")
    except ImportError:
        pytest.skip("gateway._stats_fast is not built")

    def scrub(text: str) -> list:
        # durations and the client's port differ between runs
        if fmt == "json":
            return [{k: v for k, v in json.loads(x).items() if k not in ("duration_s", "peer")}
                    for x in text.splitlines()]
        return [x.split(" duration_s=")[0] + x.split(" duration_s=")[1].split(" ", 1)[1]
                .split(" peer=")[0] for x in text.splitlines()]

    results = []
    for stats_cls, log_cls in ((load_request_stats("pure"), load_access_log("pure")),
                               (fast_stats_cls, load_access_log("cython"))):
        out = io.StringIO()
        stats, log = stats_cls(), log_cls(fmt, out=out, flush_s=60)
        proxy = await start_proxy(backend, StaticRouter(origin.endpoint, cluster="udm"),
                                  access_log=log, stats=stats)
        try:
            compiled = stats_cls is fast_stats_cls
            for i in range(5):
                resp = await client.request("POST" if i % 2 else "GET",
                                            url(proxy, f"/echo?n={i}é"), body=b"x")
                assert resp.status == 200
            log.flush()
            results.append((stats.requests, stats.latency["udm"].n, scrub(out.getvalue())))
            if compiled:  # swapped while running: the new object gets the calls
                proxy.handler.stats = replaced = load_request_stats("pure")()
                assert (await client.request("GET", url(proxy, "/echo"))).status == 200
                assert replaced.requests == {("udm", "GET", "200"): 1}
        finally:
            await proxy.stop()
    assert results[0] == results[1]
    assert results[0][0] == {("udm", "GET", "200"): 3, ("udm", "POST", "200"): 2}
    assert len(results[0][2]) == 5
