"""The compiled request stats (``gateway._stats_fast``: ``gateway/stats_core.py`` compiled a
second time) against the same file run as plain Python (``gateway.metrics.RequestStats``, the
reference): random call sequences must leave identical cells, views and Prometheus text; the
loader's choice and fallback; a real proxy feeding each implementation.

Tests of the compiled class skip with a reason when it is not built."""

from __future__ import annotations

import bisect
import math
import random
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from dataplane.client import H2Client
from dataplane.engine import ErrorCode
from gateway import build_info, stats_core
from gateway.metrics import BUCKETS, RequestStats, load_request_stats, new_registry
from tests.conftest import StaticRouter, start_origin, start_proxy

try:
    from gateway import _stats_fast
except ImportError:
    _stats_fast = None

needs_fast = pytest.mark.skipif(
    _stats_fast is None,
    reason="gateway._stats_fast is not built (.venv/bin/python setup.py build_ext --inplace)")


def _stats_pair():
    return RequestStats(), _stats_fast.RequestStats()


# ---- comparison -------------------------------------------------------------------------------

def _same_float(a: float, b: float) -> bool:
    """Bit-identical (0.0 differs from -0.0), except that any NaN equals any NaN: its sign
    and payload are not observable (``repr``, the exposition) and C may add NaNs in either
    operand order."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return struct.pack("<d", a) == struct.pack("<d", b)


def _assert_cells_equal(pure: dict, fast: dict) -> None:
    assert list(pure) == list(fast)  # same keys, same first-seen order
    for key, cell in pure.items():
        other = fast[key]
        assert other[:-1] == cell[:-1], key
        assert all(type(n) is int for n in other[:-1])
        assert _same_float(other[-1], cell[-1]), (key, other[-1], cell[-1])


def _assert_same(pure: RequestStats, fast, exposition: bool = True) -> None:
    _assert_cells_equal(pure.cells, fast.cells)
    assert pure.requests == fast.requests
    assert pure.total == fast.total
    assert type(fast.total) is int
    assert list(pure.resets.items()) == list(fast.resets.items())
    pl, fl = pure.latency, fast.latency
    assert list(pl) == list(fl)
    for cluster, hist in pl.items():
        assert fl[cluster].counts == hist.counts
        assert fl[cluster].n == hist.n
        assert _same_float(fl[cluster].total, hist.total)
    if exposition:
        assert generate_latest(new_registry(fast)) == generate_latest(new_registry(pure))


# ---- strategies -------------------------------------------------------------------------------

CLUSTERS = ("udm", "ausf", "smf", "scp-model-c", "nrf", "a", "é-cluster")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "")


def _copied(s: str) -> str:
    """An equal string that is another object (len >= 2)."""
    return "".join([s[:1], s[1:]])


def _text(choices: tuple[str, ...]) -> st.SearchStrategy[str]:
    named = st.sampled_from(choices)
    return st.one_of(named, named.map(_copied), st.text(max_size=6))


_edges = [x for b in BUCKETS for x in (b, math.nextafter(b, 0.0), math.nextafter(b, math.inf))]
durations = st.one_of(
    st.sampled_from(_edges + [0.0, -0.0, 1e-9, 1e308, math.inf, -math.inf, math.nan, -1.0]),
    st.floats(min_value=0.0, max_value=10.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10, max_value=10),  # an int duration counts like the float
)
statuses = st.one_of(
    st.sampled_from([200, 201, 204, 400, 404, 429, 500, 502, 503, 504, 0]),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond a C long: the dict path
    st.booleans(),  # equal to 1 / 0 as dict keys, not plain ints
)
error_codes = st.one_of(
    st.just(0), st.sampled_from(list(ErrorCode)), st.integers(min_value=0, max_value=2**40))
calls = st.tuples(_text(CLUSTERS), _text(METHODS), statuses, durations, error_codes)


def _replay(seq) -> tuple[RequestStats, object]:
    pure, fast = _stats_pair()
    for c in seq:
        pure.on_request_done(*c)
        fast.on_request_done(*c)
    return pure, fast


@needs_fast
@settings(max_examples=300, deadline=None)
@given(st.lists(calls, max_size=25))
def test_compiled_counts_like_pure_on_random_calls(seq) -> None:
    pure, fast = _replay(seq)
    _assert_same(pure, fast, exposition=False)


_POOL_DURATIONS = _edges + [0.0, -0.0, 1e308, math.inf, -math.inf, math.nan, 3, 0]
_POOL_STATUSES = [200, 201, 204, 404, 500, 503, 0, 2**70, -1, True]


@needs_fast
@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_compiled_counts_like_pure_on_long_random_runs(seed) -> None:
    """Long runs (thousands of calls each, hypothesis only draws the seed): a few hot keys,
    equal copies of names, bucket edges and odd statuses mixed."""
    rnd = random.Random(seed)
    clusters = [*CLUSTERS, *(_copied(c) for c in CLUSTERS if len(c) > 1)]
    seq = [(rnd.choice(clusters), rnd.choice(METHODS), rnd.choice(_POOL_STATUSES),
            rnd.choice(_POOL_DURATIONS) if rnd.random() < 0.3 else rnd.expovariate(200.0),
            rnd.choice((0, 0, 0, 2, 8, ErrorCode.CANCEL)))
           for _ in range(2000)]
    pure, fast = _replay(seq)
    _assert_same(pure, fast)


@needs_fast
@settings(max_examples=100, deadline=None)
@given(st.lists(calls, min_size=1, max_size=80))
def test_compiled_exports_the_same_prometheus_text(seq) -> None:
    pure, fast = _replay(seq)
    _assert_same(pure, fast)


@needs_fast
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 399), st.sampled_from(METHODS[:4]),
                          st.sampled_from([200, 404, 503]), durations), max_size=400))
def test_compiled_many_keys_collide_in_the_cell_cache(seq) -> None:
    """More keys than cache slots: slots are overwritten and shared, counts still land in the
    right cell."""
    names = [f"cluster-{i}" for i in range(400)]
    pure, fast = _stats_pair()
    for i, method, status, d in seq:
        pure.on_request_done(names[i], method, status, d, 0)
        fast.on_request_done(names[i], method, status, d, 0)
    _assert_same(pure, fast, exposition=False)


@needs_fast
def test_bucket_edges_follow_bisect_left() -> None:
    """A duration equal to a bound is in that bound's bucket (Prometheus ``le``)."""
    fast = _stats_fast.RequestStats()
    values = _edges + [0.0, -0.0, -5.0, math.inf, -math.inf, math.nan, 1e308, 5e-324]
    for i, d in enumerate(values):
        fast.on_request_done("c", "GET", i, d, 0)
    cells = fast.cells
    for i, d in enumerate(values):
        counts = cells[("c", "GET", i)][:-1]
        want = bisect.bisect_left(BUCKETS, d)
        assert counts == [int(j == want) for j in range(len(BUCKETS) + 1)], d
    assert fast.latency["c"].counts[-1] == 3  # above 5.0: nextafter(5.0, inf), inf, 1e308
    assert cells[("c", "GET", len(_edges) + 5)][0] == 1  # NaN compares false: first bucket


@needs_fast
def test_equal_strings_and_status_types_share_cells_like_dict_keys() -> None:
    pure, fast = _stats_pair()
    seq = [("udm", "GET", 200, 0.001, 0), (_copied("udm"), _copied("GET"), 200, 0.002, 0),
           ("udm", "GET", True, 0.003, 0), ("udm", "GET", 1, 0.004, 0),
           ("udm", "GET", 2**80, 0.005, 0), ("udm", "GET", 2**80, 0.006, 0),
           ("udm", "GET", 200.0, 0.007, 0)]
    for c in seq:
        pure.on_request_done(*c)
        fast.on_request_done(*c)
    _assert_same(pure, fast)
    assert fast.requests == {("udm", "GET", "200"): 3, ("udm", "GET", "True"): 2,
                             ("udm", "GET", str(2**80)): 2}


@needs_fast
def test_resets_use_plain_int_codes() -> None:
    pure, fast = _stats_pair()
    for s in (pure, fast):
        s.on_request_done("udm", "POST", 502, 0.2, ErrorCode.INTERNAL_ERROR)
        s.on_request_done("udm", "POST", 0, 0.1, 8)
        s.on_request_done("udm", "POST", 0, 0.1, 0)
    assert fast.resets == {("udm", 2): 1, ("udm", 8): 1}
    assert all(type(code) is int for _, code in fast.resets)
    _assert_same(pure, fast)


@needs_fast
@pytest.mark.parametrize("bad", ["0.1", None, 10**400])
def test_bad_duration_raises_and_counts_nothing(bad) -> None:
    pure, fast = _stats_pair()
    for s in (pure, fast):
        s.on_request_done("udm", "GET", 200, 0.5, 0)
        with pytest.raises((TypeError, OverflowError)):
            s.on_request_done("udm", "GET", 200, bad, 0)
        with pytest.raises((TypeError, OverflowError)):
            s.on_request_done("new", "GET", 200, bad, 0)
    _assert_same(pure, fast)
    assert fast.total == 1 and list(fast.requests) == [("udm", "GET", "200")]


def _impls() -> list:
    return [RequestStats] + ([_stats_fast.RequestStats] if _stats_fast is not None else [])


@pytest.mark.parametrize("cls", _impls(), ids=lambda c: c.__module__)
def test_label_values_stay_bounded_whatever_peers_send(cls) -> None:
    """Methods outside the known set count as ``_OTHER`` and HTTP/2 error codes RFC 9113 does
    not define as INTERNAL_ERROR: a peer cannot grow the series (or the memory) without bound."""
    stats = cls()
    for i in range(3000):
        stats.on_request_done("udm", f"M{i}", 200, 0.001, 0)
        stats.on_request_done("udm", "POST", 200, 0.001, 0x100 + i)
    stats.on_request_done("udm", "GET", 200, 0.001, -1)
    stats.on_request_done("udm", "GET", 200, 0.001, ErrorCode.HTTP_1_1_REQUIRED)  # 0xd: known
    assert stats.requests == {("udm", "_OTHER", "200"): 3000, ("udm", "POST", "200"): 3000,
                              ("udm", "GET", "200"): 2}
    assert stats.resets == {("udm", 2): 3001, ("udm", 13): 1}
    assert len(stats.cells) == 3
    text = generate_latest(new_registry(stats)).decode()
    assert 'nfmesh_requests_total{cluster="udm",method="_OTHER",status="200"} 3000.0' in text


@needs_fast
def test_the_compiled_twin_is_stats_core_compiled() -> None:
    assert RequestStats is stats_core.RequestStats
    assert _stats_fast.__file__.endswith(".so") and stats_core.__file__.endswith(".py")
    assert _stats_fast.BUCKETS == stats_core.BUCKETS
    assert _stats_fast.RequestStats.__doc__ == RequestStats.__doc__
    assert _stats_fast.RequestStats.cells.__doc__ == RequestStats.cells.__doc__


# ---- loader -----------------------------------------------------------------------------------

def test_load_request_stats_choices(monkeypatch) -> None:
    monkeypatch.delenv("NFMESH_STATS", raising=False)
    assert load_request_stats("pure") is RequestStats
    with pytest.raises(ValueError, match="unknown request stats implementation 'fast'"):
        load_request_stats("fast")
    monkeypatch.setenv("NFMESH_STATS", "pure")
    assert load_request_stats() is RequestStats
    if _stats_fast is not None:
        assert load_request_stats("cython") is _stats_fast.RequestStats
        monkeypatch.setenv("NFMESH_STATS", "cython")
        assert load_request_stats() is _stats_fast.RequestStats
        monkeypatch.delenv("NFMESH_STATS")
        assert load_request_stats() is _stats_fast.RequestStats


def test_pure_twin_used_when_not_built(monkeypatch) -> None:
    monkeypatch.delenv("NFMESH_STATS", raising=False)
    monkeypatch.setitem(sys.modules, "gateway._stats_fast", None)  # import fails: not built
    assert load_request_stats() is RequestStats
    with pytest.raises(ImportError):
        load_request_stats("cython")
    stats = load_request_stats()()
    stats.on_request_done("udm", "GET", 200, 0.001, 0)
    assert stats.total == 1


def test_hot_path_registered() -> None:
    assert ("request stats", "gateway._stats_fast", "gateway.stats_core") in build_info.HOT_PATHS
    built = "compiled" if _stats_fast is not None else "pure-python"
    assert build_info.info()["hot_paths"]["request stats"] == built


# ---- a real proxy feeding each implementation -------------------------------------------------

@pytest.mark.parametrize("impl", ["pure", "cython"])
async def test_proxy_feeds_each_implementation(backend, impl) -> None:
    if impl == "cython" and _stats_fast is None:
        pytest.skip("gateway._stats_fast is not built")
    stats = load_request_stats(impl)()
    origin = await start_origin(backend)
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, cluster="smf"))
    proxy.handler.stats = stats
    client = H2Client(backend.NAME)
    base = f"http://127.0.0.1:{proxy.port}"
    try:
        for path in ("/echo", "/echo", "/status/404", "/status/503"):
            await client.request("GET", base + path)
        try:  # the upstream resets the stream: the proxy answers or resets in turn
            await client.request("GET", base + "/reset?code=2")
        except Exception:
            pass
        assert stats.requests[("smf", "GET", "200")] == 2
        assert stats.requests[("smf", "GET", "404")] == 1
        assert stats.requests[("smf", "GET", "503")] == 1
        assert stats.total == 5
        assert sum(n for (cluster, _code), n in stats.resets.items() if cluster == "smf") == 1
        text = generate_latest(new_registry(stats)).decode()
        assert 'nfmesh_request_duration_seconds_count{cluster="smf"} 5.0' in text
    finally:
        client.close()
        await proxy.stop()
        await origin.stop()



def test_every_hot_path_names_the_source_its_compiled_module_is_built_from() -> None:
    """A compiled module built from a pure module (setup.py's TWINS) names that module as its
    pure twin in ``nfmesh version``'s table, and the module exists."""
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "setup.py")) as f:
        twins = dict(re.findall(r'\("([\w.]+)", "([\w/]+)\.py"\)', f.read()))
    assert twins["gateway._stats_fast"] == "gateway/stats_core"
    checked = 0
    for _label, native, twin in build_info.HOT_PATHS:
        if native in twins:
            assert twin == twins[native].replace("/", "."), native
            assert os.path.exists(os.path.join(root, twins[native] + ".py"))
            checked += 1
    assert checked >= 5
