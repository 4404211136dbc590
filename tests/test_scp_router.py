"""SCP router: model C rewriting, loop protection, deadlines, static routes and selection,
composition; plus the pure and Cython header passes compared on random inputs.

Every test runs on the pure ``ScpRouter`` and, when built, the one on the compiled base
(``nf_adapters._scp_fast``: ``nf_adapters/scp_model_c.py`` compiled, model C's common case in
C), and a differential test feeds both the same random requests."""

from __future__ import annotations

import collections
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.routing import Endpoint, Forward, LocalResponse
from nf_adapters import sbi_headers as sh
from nf_adapters import sbi_rewrite
from nf_adapters.scp_router import (
    MODEL_C_CLUSTER,
    ChainRouter,
    ClusterSpec,
    PureScpRouter,
    RouteSpec,
    RouteTable,
    ScpRouter,
    load_scp_router,
)

try:  # the router on the compiled base (nf_adapters._scp_fast: scp_model_c.py compiled)
    FastScpRouter = load_scp_router("cython")
except ImportError:  # pragma: no cover - depends on the build
    FastScpRouter = None

IMPLS = {"pure": PureScpRouter, "cython": FastScpRouter}
_IMPL: list = [PureScpRouter]  # the class router() builds; the fixture below sets it per test


@pytest.fixture(autouse=True, params=list(IMPLS))
def scp_impl(request):
    cls = IMPLS[request.param]
    if cls is None:
        pytest.skip("nf_adapters._scp_fast is not built (setup.py build_ext --inplace)")
    _IMPL[0] = cls
    yield cls
    _IMPL[0] = PureScpRouter

NOW = 1_700_000_000.0


def req(path: bytes = b"/nudm-sdm/v2/imsi-001010000000001/am-data?plmn-id=1",
        method: bytes = b"GET", authority: bytes = b"scp.5gc:80", extra=()) -> list:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", authority),
            (b":path", path), (b"user-agent", b"AMF-amf1"), (b"accept", b"application/json"),
            *extra]


def body(resp: LocalResponse) -> dict:
    assert dict(resp.headers)[b"content-type"] == b"application/problem+json"
    return json.loads(resp.body)


def router(**kw) -> ScpRouter:
    kw.setdefault("via_name", "scp1.5gc")
    kw.setdefault("clock", lambda: NOW)
    return _IMPL[0](kw.pop("table", RouteTable()), **kw)


# --------------------------------------------------------------------------- model C

def test_model_c_rewrites_target_and_keeps_other_headers() -> None:
    headers = req(extra=[(b"3gpp-sbi-target-apiroot", b"https://udm1.5gc:8443/pre/"),
                         (b"3gpp-sbi-message-priority", b"5")])
    d = router().route(headers, {})
    assert isinstance(d, Forward)
    assert d.endpoint == Endpoint("udm1.5gc", 8443, True, "udm1.5gc")
    assert d.cluster == MODEL_C_CLUSTER
    assert d.retryable is True
    assert d.alternates == []
    assert d.headers == [
        (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"udm1.5gc:8443"),
        (b":path", b"/pre/nudm-sdm/v2/imsi-001010000000001/am-data?plmn-id=1"),
        (b"user-agent", b"AMF-amf1"), (b"accept", b"application/json"),
        (b"3gpp-sbi-message-priority", b"5"),
        (b"3gpp-sbi-max-forward-hops", b"7; nodetype=scp"),
        (b"via", b"2.0 SCP-scp1.5gc"),
    ]
    assert headers[3] == (b":path", b"/nudm-sdm/v2/imsi-001010000000001/am-data?plmn-id=1")


@pytest.mark.parametrize(("root", "endpoint", "authority", "path"), [
    (b"http://10.0.0.5", Endpoint("10.0.0.5", 80, False, None), b"10.0.0.5", b"/a/b?x=1"),
    (b"https://[2001:db8::5]", Endpoint("2001:db8::5", 443, True, None), b"[2001:db8::5]",
     b"/a/b?x=1"),
    (b"http://[::1]:7777/p", Endpoint("::1", 7777, False, None), b"[::1]:7777", b"/p/a/b?x=1"),
    (b"http://h/", Endpoint("h", 80, False, None), b"h", b"/a/b?x=1"),
])
def test_model_c_endpoint_and_authority(root, endpoint, authority, path) -> None:
    d = router().route(req(b"/a/b?x=1", extra=[(b"3gpp-sbi-target-apiroot", root)]), {})
    assert d.endpoint == endpoint
    h = dict(d.headers)
    assert (h[b":authority"], h[b":path"]) == (authority, path)
    assert b"3gpp-sbi-target-apiroot" not in h


def test_model_c_drops_host_header_and_post_not_retryable() -> None:
    d = router().route(req(method=b"POST", extra=[(b"host", b"scp.5gc"),
                                                  (b"3gpp-sbi-target-apiroot", b"http://a")]), {})
    assert all(k != b"host" for k, _ in d.headers)
    assert d.retryable is False


@pytest.mark.parametrize(("value", "reason"), [
    (b"ftp://x", "scheme must be http or https, got 'ftp'"),
    (b"http://h?q", "a query is not allowed in an apiRoot"),
    (b"", "empty value"),
])
def test_model_c_bad_target_gives_400(value: bytes, reason: str) -> None:
    d = router().route(req(extra=[(b"3gpp-sbi-target-apiroot", value)]), {})
    assert isinstance(d, LocalResponse) and d.status == 400
    assert body(d) == {
        "title": "Bad Request", "status": 400, "cause": "MANDATORY_IE_INCORRECT",
        "detail": f"invalid 3gpp-Sbi-Target-apiRoot: {reason}",
        "invalidParams": [{"param": "3gpp-Sbi-Target-apiRoot", "reason": reason}],
    }


def test_model_c_repeated_target_rejected() -> None:
    d = router().route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                                  (b"3gpp-sbi-target-apiroot", b"http://b")]), {})
    assert d.status == 400
    assert body(d)["invalidParams"] == [{"param": "3gpp-Sbi-Target-apiRoot",
                                         "reason": "header repeated"}]


def test_model_c_disabled_is_not_mine() -> None:
    r = router(model_c=False)
    assert r.try_route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a")]), {}) is None


def test_allowed_targets_policy() -> None:
    r = router(allowed_targets=["10.0.0.0/8", "2001:db8::/32", ".3gppnetwork.org", "nrf.local"])
    for root, ok in [(b"http://10.1.2.3", True), (b"http://11.0.0.1", False),
                     (b"http://[2001:db8::9]", True), (b"http://[2001:db9::9]", False),
                     (b"http://udm.5gc.mnc001.mcc001.3gppnetwork.org", True),
                     (b"http://3gppnetwork.org.evil.com", False), (b"http://NRF.local:80", True),
                     (b"http://nrf.local.evil", False)]:
        for _ in range(2):  # the second answer comes from the parsed-target cache
            d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", root)]), {})
            assert isinstance(d, Forward) is ok, root
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://169.254.169.254")]), {})
    assert d.status == 403
    assert body(d) == {
        "title": "Forbidden", "status": 403, "cause": "TARGET_NOT_ALLOWED",
        "detail": "3gpp-Sbi-Target-apiRoot host 169.254.169.254 is not in scp.allowed_targets",
        "invalidParams": [{"param": "3gpp-Sbi-Target-apiRoot", "reason": "target not allowed"}]}
    with pytest.raises(ValueError, match="allowed target must be a CIDR, .domain or host name"):
        _IMPL[0](allowed_targets=["bad host"])
    with pytest.raises(ValueError, match="allowed target must be a CIDR, .domain or host name"):
        _IMPL[0](allowed_targets=["300.1.1.1"])


# --------------------------------------------------------------------------- loops

def test_own_via_is_a_loop() -> None:
    d = router().route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                                  (b"via", b"2.0 SCP-other, 2.0 scp-SCP1.5gc")]), {})
    assert d.status == 508
    assert body(d) == {"title": "Loop Detected", "status": 508, "cause": "LOOP_DETECTED",
                       "detail": "request already passed SCP-scp1.5gc (Via)"}


def test_similar_via_name_is_not_a_loop() -> None:
    d = router().route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                                  (b"via", b"2.0 SCP-scp1.5gc.other")]), {})
    assert isinstance(d, Forward)
    assert d.headers[-2:] == [(b"3gpp-sbi-max-forward-hops", b"7; nodetype=scp"),
                              (b"via", b"2.0 SCP-scp1.5gc")]
    assert (b"via", b"2.0 SCP-scp1.5gc.other") in d.headers


def test_hops_exhausted_is_a_loop_and_hops_decrement() -> None:
    r = router()
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                           (b"3gpp-sbi-max-forward-hops", b"0; nodetype=scp")]), {})
    assert d.status == 508
    assert body(d)["detail"] == "3gpp-Sbi-Max-Forward-Hops exhausted"
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                           (b"3gpp-sbi-max-forward-hops", b"3; nodetype=scp")]), {})
    assert dict(d.headers)[b"3gpp-sbi-max-forward-hops"] == b"2; nodetype=scp"
    assert sum(1 for k, _ in d.headers if k == b"3gpp-sbi-max-forward-hops") == 1
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                           (b"3gpp-sbi-max-forward-hops", b"three")]), {})
    assert d.status == 400
    assert body(d)["invalidParams"] == [{"param": "3gpp-Sbi-Max-Forward-Hops",
                                         "reason": "hop count must be 0..99, got 'three'"}]


def test_chain_of_scps_ends_in_508_not_a_hang() -> None:
    """Three SCPs forwarding in a circle: the request comes back to the first one."""
    names = ["scp-a", "scp-b", "scp-c"]
    routers = {n: router(via_name=n, max_forward_hops=10) for n in names}
    headers = req(extra=[(b"3gpp-sbi-target-apiroot", b"http://next")])
    for step in range(4):
        d = routers[names[step % 3]].route(headers, {})
        if isinstance(d, LocalResponse):
            break
        headers = d.headers + [(b"3gpp-sbi-target-apiroot", b"http://next")]
    assert step == 3 and d.status == 508


def test_hop_limit_ends_a_loop_of_distinct_scps() -> None:
    headers = req(extra=[(b"3gpp-sbi-target-apiroot", b"http://next")])
    for i in range(20):
        d = router(via_name=f"scp-{i}", max_forward_hops=4).route(headers, {})
        if isinstance(d, LocalResponse):
            break
        headers = d.headers + [(b"3gpp-sbi-target-apiroot", b"http://next")]
    assert (i, d.status) == (4, 508)


# --------------------------------------------------------------------------- deadlines

def _ts(delta: float) -> bytes:
    return sh.format_sender_timestamp(dt.datetime.fromtimestamp(NOW + delta, dt.UTC))


def test_max_rsp_time_sets_timeout() -> None:
    d = router(default_timeout=30.0).route(
        req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                   (b"3gpp-sbi-max-rsp-time", b"2500")]), {})
    assert d.timeout == 2.5
    d = router(default_timeout=30.0).route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a")]), {})
    assert d.timeout == 30.0


def test_sender_timestamp_shortens_deadline_and_late_requests_get_504() -> None:
    r = router()
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                           (b"3gpp-sbi-max-rsp-time", b"2000"),
                           (b"3gpp-sbi-sender-timestamp", _ts(-0.5))]), {})
    assert d.timeout == pytest.approx(1.5, abs=0.002)
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                           (b"3gpp-sbi-max-rsp-time", b"2000"),
                           (b"3gpp-sbi-sender-timestamp", _ts(-3))]), {})
    assert d.status == 504
    assert body(d)["cause"] == "TIMED_OUT_REQUEST"
    d = r.route(req(extra=[(b"3gpp-sbi-target-apiroot", b"http://a"),
                           (b"3gpp-sbi-max-rsp-time", b"abc")]), {})
    assert d.status == 400
    assert body(d)["cause"] == "OPTIONAL_IE_INCORRECT"
    assert body(d)["invalidParams"][0]["param"] == "3gpp-Sbi-Max-Rsp-Time"


# --------------------------------------------------------------------------- static routes

E1, E2, E3 = (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 443, True))


def table() -> RouteTable:
    return RouteTable(
        [ClusterSpec("ausf", (E1, E2), request_timeout_s=5.0),
         ClusterSpec("udm", (E1, E2, E3), (5, 1, 1), "weighted"),
         ClusterSpec("udm-sdm", (E3,)),
         ClusterSpec("nrf", (E2,))],
        [RouteSpec("ausf", "/nausf-auth/v1/", "ausf", timeout_s=2.0),
         RouteSpec("udm", "/nudm-", "udm"),
         RouteSpec("sdm", "/nudm-sdm/", "udm-sdm"),
         RouteSpec("nrf-host", "/", "nrf", authority="NRF.5gc"),
         RouteSpec("nrf-port", "/nnrf-nfm/", "ausf", authority="nrf.5gc:8000")])


def test_longest_prefix_and_authority_match() -> None:
    r = router(table=table())
    assert r.route(req(b"/nudm-sdm/v2/x"), {}).cluster == "udm-sdm"
    assert r.route(req(b"/nudm-uecm/v1/x"), {}).cluster == "udm"
    assert r.route(req(b"/nausf-auth/v1/ue-authentications"), {}).cluster == "ausf"
    assert r.route(req(b"/anything", authority=b"nrf.5gc:9999"), {}).cluster == "nrf"
    assert r.route(req(b"/nnrf-nfm/v1/x", authority=b"nrf.5gc:8000"), {}).cluster == "ausf"
    assert r.route(req(b"/nnrf-nfm/v1/x", authority=b"nrf.5gc:8001"), {}).cluster == "nrf"
    assert r.try_route(req(b"/npcf-x/v1"), {}) is None
    assert r.try_route(req(b"/nausf-auth/v2/x"), {}) is None


def test_no_route_is_404_problem() -> None:
    d = router(table=table()).route(req(b"/npcf-am-policy-control/v1/x?y=1"), {})
    assert d.status == 404
    assert body(d) == {
        "title": "Not Found", "status": 404, "cause": "RESOURCE_URI_STRUCTURE_NOT_FOUND",
        "detail": "no route for scp.5gc:80/npcf-am-policy-control/v1/x?y=1 (no "
                  "3gpp-Sbi-Target-apiRoot, no discovery headers, no static route)"}


def test_round_robin_and_alternates() -> None:
    r = router(table=table())
    got = [r.route(req(b"/nausf-auth/v1/x", method=b"POST"), {}) for _ in range(4)]
    assert [d.endpoint for d in got] == [E1, E2, E1, E2]
    assert [a for a, _ in got[0].alternates] == [E2]
    assert got[0].alternates[0][1] is got[0].headers
    assert got[0].timeout == 2.0  # route timeout beats the cluster's 5.0
    assert got[0].retryable is False
    h = got[0].headers
    assert h[:4] == req(b"/nausf-auth/v1/x", method=b"POST")[:4]
    assert h[-2:] == [(b"3gpp-sbi-max-forward-hops", b"7; nodetype=scp"),
                      (b"via", b"2.0 SCP-scp1.5gc")]


def test_smooth_weighted_round_robin() -> None:
    r = router(table=table())
    picks = [r.route(req(b"/nudm-uecm/v1/x"), {}).endpoint for _ in range(70)]
    assert collections.Counter(picks) == {E1: 50, E2: 10, E3: 10}
    # smooth: never more than... the heavy endpoint is interleaved with the others
    assert picks[:7] == [E1, E1, E2, E1, E3, E1, E1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(1, 3))
def test_smooth_wrr_exact_proportions_every_cycle(weights: list[int], cycles: int) -> None:
    eps = tuple(Endpoint(f"10.0.0.{i + 1}", 80) for i in range(len(weights)))
    r = router(table=RouteTable([ClusterSpec("c", eps, tuple(weights), "weighted")],
                                [RouteSpec("r", "/", "c")]))
    total = sum(weights)
    picks_all: list[Endpoint] = []
    for _ in range(cycles):
        picks = [r.route(req(b"/x"), {}).endpoint for _ in range(total)]
        assert collections.Counter(picks) == {ep: w for ep, w in zip(eps, weights, strict=True)}
        picks_all += picks
    # smooth: the sequence is exactly nginx's smooth WRR (every endpoint gains its weight, the
    # largest current weight wins, first on ties, and the winner pays the total back)
    assert picks_all == nginx_smooth_wrr(weights, total * cycles)


def nginx_smooth_wrr(weights: list[int], n: int) -> list[Endpoint]:
    """Reference model of nginx's smooth weighted round robin, written from its description."""
    current = [0] * len(weights)
    out = []
    for _ in range(n):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[best] -= sum(weights)
        out.append(Endpoint(f"10.0.0.{best + 1}", 80))
    return out


def test_alternates_carry_their_own_scheme() -> None:
    d = router(table=table()).route(req(b"/nudm-uecm/v1/x"), {})
    schemes = {ep: dict(h)[b":scheme"] for ep, h in [(d.endpoint, d.headers), *d.alternates]}
    assert schemes == {E1: b"http", E2: b"http", E3: b"https"}


def test_static_route_loop_check() -> None:
    d = router(table=table()).route(req(b"/nudm-sdm/v2/x", extra=[(b"via", b"2.0 SCP-scp1.5gc")]), {})
    assert d.status == 508


@pytest.mark.parametrize(("clusters", "routes", "message"), [
    ([ClusterSpec("a", ())], [], "cluster 'a' has no endpoints"),
    ([ClusterSpec("a", (E1,)), ClusterSpec("a", (E2,))], [], "cluster 'a' defined twice"),
    ([ClusterSpec("a", (E1,), (0,))], [], "cluster 'a': weights must be > 0"),
    ([ClusterSpec("a", (E1,), (1, 2))], [], "cluster 'a': 2 weights for 1 endpoints"),
    ([ClusterSpec("a", (E1,), lb="random")], [], "cluster 'a': lb must be one of round_robin, weighted"),
    ([], [RouteSpec("r", "/", "x")], "route 'r': unknown cluster 'x'"),
    ([ClusterSpec("a", (E1,))], [RouteSpec("r", "x", "a")], "route 'r': path_prefix must start with '/'"),
    ([ClusterSpec("a", (E1,))], [RouteSpec("r", "/", "a"), RouteSpec("r", "/b", "a")],
     "route 'r' defined twice"),
])
def test_route_table_validation(clusters, routes, message) -> None:
    with pytest.raises(ValueError) as info:
        RouteTable(clusters, routes)
    assert str(info.value) == message


def test_router_option_validation() -> None:
    with pytest.raises(ValueError, match="max_forward_hops must be 1..99"):
        _IMPL[0](max_forward_hops=0)
    with pytest.raises(ValueError, match="via_name must be a token"):
        _IMPL[0](via_name="a b")


def test_hop_stamp_for_other_forwarding_routers() -> None:
    from nf_adapters.scp_router import rewrite_headers

    r = router()
    stamp = r.hop_stamp(req(extra=[(b"3gpp-sbi-max-forward-hops", b"4; nodetype=scp")]))
    assert stamp == (b"3; nodetype=scp", b"2.0 SCP-scp1.5gc")
    out = rewrite_headers(req(extra=[(b"3gpp-sbi-max-forward-hops", b"4; nodetype=scp")]),
                          b"https", b"udm:443", b"/x", *stamp)
    assert out[-2:] == [(b"3gpp-sbi-max-forward-hops", b"3; nodetype=scp"),
                        (b"via", b"2.0 SCP-scp1.5gc")]
    assert [k for k, _ in out].count(b"3gpp-sbi-max-forward-hops") == 1
    assert r.hop_stamp(req(extra=[(b"via", b"2.0 SCP-scp1.5gc")])).status == 508
    assert r.hop_stamp(req()) == (b"7; nodetype=scp", b"2.0 SCP-scp1.5gc")


# --------------------------------------------------------------------------- composition

class _ModelD:
    """A stand-in for the registry's model D router: owns requests with discovery headers."""

    def __init__(self) -> None:
        self.seen = 0

    def try_route(self, headers, peer):
        self.seen += 1
        if any(k.startswith(b"3gpp-sbi-discovery-") for k, _ in headers):
            return LocalResponse(200, [], b"model-d")
        return None


def test_chain_router_order_and_fallthrough() -> None:
    d_router = _ModelD()
    chain = ChainRouter([router(table=table()), d_router])
    assert chain.route(req(b"/nudm-sdm/v2/x"), {}).cluster == "udm-sdm"
    assert d_router.seen == 0
    got = chain.route(req(b"/npcf/v1", extra=[(b"3gpp-sbi-discovery-target-nf-type", b"PCF")]), {})
    assert got.body == b"model-d"
    assert chain.route(req(b"/npcf/v1"), {}).status == 404
    assert chain.try_route(req(b"/npcf/v1"), {}) is None


def test_nested_chains_reach_the_innermost_fallback() -> None:
    inner = ChainRouter([_ModelD()], fallback=router(table=table()))
    outer = ChainRouter([ChainRouter([inner])])
    assert outer.route(req(b"/nudm-sdm/v2/x"), {}).cluster == "udm-sdm"
    assert outer.try_route(req(b"/npcf/v1"), {}) is None
    scp = router(fallback=inner)
    assert scp.try_route(req(b"/x", extra=[(b"3gpp-sbi-discovery-dnn", b"a")]), {}).body == \
        b"model-d"


def test_scp_router_fallback_and_plain_route_members() -> None:
    class Plain:
        def route(self, headers, peer):
            return None

    r = router(fallback=ChainRouter([Plain(), _ModelD()]))
    d = r.route(req(b"/x", extra=[(b"3gpp-sbi-discovery-target-nf-type", b"UDM")]), {})
    assert d.body == b"model-d"
    assert r.route(req(b"/x"), {}).status == 404


# --------------------------------------------------------------------------- twins

_names = st.sampled_from([b":method", b":scheme", b":authority", b":path", b"host", b"via",
                          b"3gpp-sbi-target-apiroot", b"3gpp-sbi-max-forward-hops",
                          b"3gpp-sbi-max-rsp-time", b"3gpp-sbi-sender-timestamp",
                          b"user-agent", b"3gpp-sbi-discovery-dnn", b"x", b":", b"3gpp-"])
_hdrs = st.lists(st.tuples(_names, st.binary(max_size=12)), max_size=14)
_opt = st.one_of(st.none(), st.binary(max_size=10))


def _twins():
    fast = pytest.importorskip(
        "nf_adapters._sbi_fast",
        reason="Cython twin not built (.venv/bin/python setup.py build_ext --inplace)")
    return fast


@settings(max_examples=300, deadline=None)
@given(_hdrs, _opt, _opt, _opt, _opt, _opt)
def test_fast_and_pure_rewrite_agree(headers, scheme, authority, path, hops, via) -> None:
    fast = _twins()
    assert fast.scan_request(headers) == sbi_rewrite.scan_request(headers)
    assert fast.rewrite_headers(headers, scheme, authority, path, hops, via) == \
        sbi_rewrite.rewrite_headers(headers, scheme, authority, path, hops, via)


_NAME_POOL = [b":method", b":scheme", b":authority", b":path", b"host", b"via", b"",
              b"3gpp-sbi-target-apiroot", b"3gpp-sbi-max-forward-hops", b"3gpp-sbi-max-rsp-time",
              b"3gpp-sbi-sender-timestamp", b"user-agent", b"3gpp-sbi-discovery-dnn", b"x",
              b":", b"3gpp-", b"3gpp-sbi-target-apiroo", b"vi", b"hosts", b":pat"]


def test_fast_and_pure_agree_on_30000_random_inputs() -> None:
    """Tens of thousands of seeded random header lists (hypothesis above shrinks failures;
    this loop gives volume at low cost)."""
    import random

    fast = _twins()
    rnd = random.Random(29500)

    def opt():
        return None if rnd.random() < 0.4 else rnd.randbytes(rnd.randrange(6))

    for _ in range(30000):
        headers = [(rnd.choice(_NAME_POOL), rnd.randbytes(rnd.randrange(5)))
                   for _ in range(rnd.randrange(12))]
        args = (opt(), opt(), opt(), opt(), opt())
        assert fast.scan_request(headers) == sbi_rewrite.scan_request(headers)
        assert fast.rewrite_headers(headers, *args) == sbi_rewrite.rewrite_headers(headers, *args)


def test_fast_rewrite_shares_pairs_only_for_the_same_value_object() -> None:
    """The compiled rewrite reuses a (name, value) tuple when given the very value object it
    made one for last time, and keeps the request's own field when the new value is that
    field's value object; any other value gets a fresh pair.  Checked on random sequences
    whose values come from a small pool of objects (so reuse and replacement interleave),
    answer by answer against the pure twin."""
    import random

    fast = _twins()
    rnd = random.Random(4711)
    pool = [bytes([0x61 + i]) * 9 for i in range(4)] + [None]  # distinct objects, no interning
    names = [b":method", b":scheme", b":authority", b":path", b"host", b"x-a",
             b"3gpp-sbi-max-forward-hops", b"via", b"3gpp-sbi-target-apiroot"]
    for _ in range(5000):
        headers = [(rnd.choice(names), rnd.choice(pool[:4])) for _ in range(rnd.randrange(8))]
        args = tuple(rnd.choice(pool) for _ in range(5))
        got = fast.rewrite_headers(headers, *args)
        assert got == sbi_rewrite.rewrite_headers(headers, *args), (headers, args)
        again = fast.rewrite_headers(headers, *args)
        assert again == got and all(a is b for a, b in zip(again, got, strict=True)), (headers, args)
    authority, path, hops, via = b"nrf.example:8443", b"/nnrf-disc/v1/nf-instances", b"7", b"2.0 scp"
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"scp:80"),
               (b":path", path), (b"accept", b"application/json")]
    one = fast.rewrite_headers(headers, b"https", authority, path, hops, via)
    two = fast.rewrite_headers(headers, b"https", authority, path, hops, via)
    assert one[3] is headers[3]  # the request's own :path field, kept
    assert all(a is b for a, b in zip(one, two, strict=True))
    other = fast.rewrite_headers(headers, b"https", bytes(bytearray(authority)), path, hops, via)
    assert other[2] == one[2] and other[2] is not one[2]


def test_alternating_target_objects_route_to_their_own_endpoints() -> None:
    """The same Target-apiRoot objects request after request (as the decoder's header cache
    hands them out), alternating, and across the target cache being emptied: each request
    goes to its own target."""
    r = router()
    a, b = b"http://10.0.0.1:8080", b"https://udm.example:8443"
    ha = req(extra=[(b"3gpp-sbi-target-apiroot", a)])
    hb = req(extra=[(b"3gpp-sbi-target-apiroot", b)])
    want = {id(ha): ("10.0.0.1", 8080, False), id(hb): ("udm.example", 8443, True)}
    for i, headers in enumerate([ha, ha, hb, ha, hb, hb, ha] * 3):
        if i == 10:
            r._targets.clear()
        ep = r.route(headers, {}).endpoint
        assert (ep.host, ep.port, ep.tls) == want[id(headers)], i


@pytest.mark.parametrize("twin", ["pure", "cython"])
def test_both_twins_reject_non_bytes_names(twin) -> None:
    """Header names are bytes: a str or None name raises TypeError in both twins (the pure one
    used to skip a str name in the scan and forward it in the rewrite)."""
    mod = sbi_rewrite if twin == "pure" else _twins()
    for bad in (":path", "x-a", None):
        with pytest.raises(TypeError):
            mod.scan_request([(bad, b"/")])
        with pytest.raises(TypeError):
            mod.rewrite_headers([(b":method", b"GET"), (bad, b"/")], None, None, None, None, None)
    with pytest.raises(TypeError, match="header names must be bytes"):
        mod.scan_request([(None, b"/")])
    assert mod.scan_request([[b":path", b"/"]])[3] == b"/"  # any 2-sequence
    assert mod.rewrite_headers([[b"x-a", b"1"]], b"http", None, None, None, None) == \
        [(b":scheme", b"http"), [b"x-a", b"1"]]


def test_the_compiled_header_pass_is_sbi_rewrite_compiled() -> None:
    fast = _twins()
    assert fast.__file__.endswith(".so") and sbi_rewrite.__file__.endswith("sbi_rewrite.py")
    assert fast.scan_request.__doc__ == sbi_rewrite.scan_request.__doc__
    assert fast.REPEATED == sbi_rewrite.REPEATED and fast.USER_AGENT == sbi_rewrite.USER_AGENT


@settings(max_examples=200, deadline=None)
@given(_hdrs, _opt, _opt, _opt)
def test_pure_rewrite_invariants(headers, scheme, authority, path) -> None:
    out = sbi_rewrite.rewrite_headers(headers, scheme, authority, path, b"1; nodetype=scp", b"v")
    names = [k for k, _ in out]
    assert b"3gpp-sbi-target-apiroot" not in names
    assert names.count(b"3gpp-sbi-max-forward-hops") == 1
    assert out[-1] == (b"via", b"v")
    for pseudo, want in ((b":scheme", scheme), (b":authority", authority), (b":path", path)):
        if want is not None:
            assert [v for k, v in out if k == pseudo] == [want]
    kept = [h for h in headers if not h[0].startswith(b":") and h[0] not in (
        b"3gpp-sbi-target-apiroot", b"3gpp-sbi-max-forward-hops")
        and not (h[0] == b"host" and authority is not None)]
    assert [h for h in out[:-2] if not h[0].startswith(b":")] == kept


def test_router_same_decisions_with_pure_twin(monkeypatch) -> None:
    """The router gives identical decisions whichever twin it imported."""
    import nf_adapters.scp_router as mod

    requests = [
        req(extra=[(b"3gpp-sbi-target-apiroot", b"https://[::1]:9/p")]),
        req(b"/nudm-uecm/v1/x", extra=[(b"host", b"h"), (b"via", b"1.1 other")]),
        req(b"/nausf-auth/v1/x", method=b"POST",
            extra=[(b"3gpp-sbi-max-forward-hops", b"2; nodetype=scp")]),
        req(extra=[(b"3gpp-sbi-target-apiroot", b"bad")]),
        req(b"/none"),
    ]

    def run():
        r = router(table=table())
        return [r.route(list(h), {}) for h in requests]

    first = run()
    from nf_adapters import scp_model_c

    for module in (mod, scp_model_c):  # the pure router's base scans and rewrites too
        monkeypatch.setattr(module, "scan_request", sbi_rewrite.scan_request)
        monkeypatch.setattr(module, "rewrite_headers", sbi_rewrite.rewrite_headers)
    assert run() == first


# --------------------------------------------------------------------------- real peers
# curl (consumer) -> the proxy with ScpRouter -> nghttpd or the in-process origin (producer)

def _need(program: str) -> str:
    import shutil

    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian package curl / nghttp2-server)")
    return path


async def _curl(url: str, *headers: str, timeout: float = 15.0) -> tuple[int, str, bytes]:
    """(status, content-type, body) of an h2c prior-knowledge GET by curl."""
    import asyncio

    argv = [_need("curl"), "-s", "--http2-prior-knowledge", "--max-time", "10",
            "-o", "-", "-w", "\n%{http_code} %{content_type}"]
    for h in headers:
        argv += ["-H", h]
    proc = await asyncio.create_subprocess_exec(*argv, url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    body, _, tail = out.rpartition(b"\n")
    status, _, ctype = tail.decode().partition(" ")
    return int(status), ctype, body


@pytest.mark.interop
async def test_model_c_end_to_end_with_curl(backend) -> None:
    from nf_adapters.problem_details import problem_responder
    from tests.conftest import start_origin, start_proxy

    origin = await start_origin(backend)
    proxy = await start_proxy(backend, _IMPL[0](via_name="scp-e2e"),
                              error_responder=problem_responder)
    try:
        status, ctype, raw = await _curl(
            f"http://127.0.0.1:{proxy.port}/headers?x=1&y=%2F",
            f"3gpp-Sbi-Target-apiRoot: http://127.0.0.1:{origin.port}",
            "User-Agent: AMF-amf1", "3gpp-Sbi-Max-Forward-Hops: 5; nodetype=scp")
        assert (status, ctype) == (200, "application/json")
        seen = {k: v for k, v in json.loads(raw)}
        assert seen[":authority"] == f"127.0.0.1:{origin.port}"
        assert seen[":path"] == "/headers?x=1&y=%2F"
        assert seen["user-agent"] == "AMF-amf1"
        assert seen["via"] == "2.0 SCP-scp-e2e"
        assert seen["3gpp-sbi-max-forward-hops"] == "4; nodetype=scp"
        assert "3gpp-sbi-target-apiroot" not in seen

        status, ctype, raw = await _curl(f"http://127.0.0.1:{proxy.port}/x",
                                         "3gpp-Sbi-Target-apiRoot: ftp://nope")
        assert (status, ctype) == (400, "application/problem+json")
        assert json.loads(raw)["invalidParams"] == [
            {"param": "3gpp-Sbi-Target-apiRoot", "reason": "scheme must be http or https, got 'ftp'"}]
    finally:
        await proxy.stop()
        await origin.stop()


@pytest.mark.interop
async def test_model_c_loop_through_itself_ends_in_508(backend) -> None:
    """A static route sends the request back to the proxy itself: the second pass sees its
    own Via -> 508, which travels back through the first pass to curl.  No hang."""
    from nf_adapters.problem_details import problem_responder
    from tests.conftest import start_proxy

    class Late:  # the route table needs the proxy's port, known once it listens
        inner: ScpRouter

        def route(self, headers, peer):
            return self.inner.route(headers, peer)

    late = Late()
    proxy = await start_proxy(backend, late, error_responder=problem_responder)
    table = RouteTable([ClusterSpec("self", (Endpoint("127.0.0.1", proxy.port),))],
                       [RouteSpec("all", "/", "self")])
    late.inner = _IMPL[0](table, via_name="scp-loop")
    try:
        status, ctype, raw = await _curl(f"http://127.0.0.1:{proxy.port}/nudm-sdm/v2/x")
        assert (status, ctype) == (508, "application/problem+json")
        assert json.loads(raw)["cause"] == "LOOP_DETECTED"
    finally:
        await proxy.stop()


@pytest.mark.interop
async def test_model_c_api_prefix_with_nghttpd(backend, tmp_path) -> None:
    """nghttpd (an independent server) serves docroot/pre/fix/hello.txt only if the apiPrefix
    was joined to the path with exactly one slash."""
    import asyncio

    from nf_adapters.problem_details import problem_responder
    from tests.conftest import free_port, start_proxy

    exe = _need("nghttpd")
    docroot = tmp_path / "htdocs"
    (docroot / "pre" / "fix").mkdir(parents=True)
    (docroot / "pre" / "fix" / "hello.txt").write_bytes(b"hello via prefix\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        exe, "--no-tls", "-d", str(docroot), "--address=127.0.0.1", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    proxy = await start_proxy(backend, _IMPL[0](via_name="scp-pfx"),
                              error_responder=problem_responder)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                assert loop.time() < deadline, "nghttpd did not start"
                await asyncio.sleep(0.05)
        for root in (f"http://127.0.0.1:{port}/pre/fix", f"http://127.0.0.1:{port}/pre/fix/"):
            status, _, raw = await _curl(f"http://127.0.0.1:{proxy.port}/hello.txt",
                                         f"3gpp-Sbi-Target-apiRoot: {root}")
            assert (status, raw) == (200, b"hello via prefix\n")
    finally:
        await proxy.stop()
        proc.terminate()
        await proc.wait()


# --------------------------------------------------------------------------- pure vs compiled

_TARGETS = [b"http://10.0.0.1:8080", b"https://udm1.5gc:8443", b"http://[2001:db8::7]",
            b"https://ausf.5gc/pre/", b"http://smf.5gc:80/a", b"ftp://x", b"http://bad host",
            b"http://10.9.9.9:8081"]
_HEADER_EXTRAS = st.lists(st.sampled_from([
    (b"via", b"2.0 SCP-other"), (b"via", b"2.0 SCP-scp1.5gc"), (b"via", b"garbage ,,"),
    (b"3gpp-sbi-max-forward-hops", b"3"), (b"3gpp-sbi-max-forward-hops", b"0"),
    (b"3gpp-sbi-max-forward-hops", b"x"), (b"3gpp-sbi-max-rsp-time", b"2000"),
    (b"3gpp-sbi-max-rsp-time", b"-1"),
    (b"3gpp-sbi-sender-timestamp", b"Tue, 14 Nov 2023 22:13:20.000 GMT"),
    (b"3gpp-sbi-message-priority", b"5"), (b"content-type", b"application/json"),
]), max_size=3)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"]),
    st.one_of(st.none(), st.sampled_from(_TARGETS)),
    st.sampled_from([b"/nudm-sdm/v2/imsi-1/am-data", b"/nausf-auth/v1/ue-authentications",
                     b"/static/x?y=1", b"/", None]),
    _HEADER_EXTRAS), min_size=1, max_size=12),
    st.booleans(), st.sampled_from(["10.0.0.0/8", None]))
def test_compiled_router_decides_like_the_pure_one(requests, model_c, allowed) -> None:
    if FastScpRouter is None:
        pytest.skip("nf_adapters._scp_fast is not built (setup.py build_ext --inplace)")
    table = RouteTable([ClusterSpec("c", (Endpoint("10.1.1.1", 80), Endpoint("10.1.1.2", 80)))],
                       [RouteSpec("r", "/static", "c")])
    kw = dict(via_name="scp1.5gc", clock=lambda: NOW, model_c=model_c, default_timeout=3.0,
              allowed_targets=[allowed] if allowed else [])
    pure, fast = PureScpRouter(table, **kw), FastScpRouter(table, **kw)
    for method, target, path, extras in requests:
        headers = [(b":method", method), (b":scheme", b"http"), (b":authority", b"scp:80")]
        if path is not None:
            headers.append((b":path", path))
        if target is not None:
            headers.append((b"3gpp-sbi-target-apiroot", target))
        headers += extras
        for _ in range(2):  # the second time, the target is in both routers' caches
            want, got = pure.route(list(headers), {}), fast.route(list(headers), {})
            assert type(got) is type(want)
            assert got == want, (headers, got, want)
            # try_route: what a ChainRouter asks (registry on); None for "not mine"
            want, got = pure.try_route(list(headers), {}), fast.try_route(list(headers), {})
            assert type(got) is type(want)
            assert got == want, (headers, got, want)


def test_compiled_router_answers_a_cached_target_without_the_python_path() -> None:
    if FastScpRouter is None:
        pytest.skip("nf_adapters._scp_fast is not built (setup.py build_ext --inplace)")
    r = FastScpRouter(via_name="scp1.5gc", default_timeout=2.5)
    headers = req(method=b"POST", extra=[(b"3gpp-sbi-target-apiroot", b"http://10.0.0.1:8080")])
    first = r.route(headers, {})  # parses and caches the target on the pure path
    r._route_scanned = r._own = None  # the fast case must not reach them
    again = r.route(headers, {})
    assert again == first and again is not first
    assert r.try_route(headers, {}) == first  # a ChainRouter's question takes it too
    assert again.endpoint is first.endpoint and again.timeout == 2.5 and not again.retryable
    assert (b"3gpp-sbi-max-forward-hops", b"7; nodetype=scp") in again.headers
    # with a hop count on the request, the pure path runs again
    with pytest.raises(TypeError):
        r.route(headers + [(b"3gpp-sbi-max-forward-hops", b"3")], {})


def test_compiled_router_fills_forward_slots_directly_without_leaks() -> None:
    """The fast case writes Forward's slots in place (Forward is still the slots dataclass it
    was written against); every reference it stores is released with the Forward."""
    import gc
    import sys

    if FastScpRouter is None:
        pytest.skip("nf_adapters._scp_fast is not built (setup.py build_ext --inplace)")
    from nf_adapters import _scp_fast

    assert _scp_fast.DIRECT_SLOTS  # else: update scp_model_c._FIELDS to routing.Forward
    r = FastScpRouter(via_name="scp1.5gc", default_timeout=2.5)
    headers = req(extra=[(b"3gpp-sbi-target-apiroot", b"http://10.0.0.1:8080")])
    ep = r.route(headers, {}).endpoint
    timeout = r._o.default_timeout
    gc.collect()
    before = sys.getrefcount(ep), sys.getrefcount(timeout), sys.getrefcount(MODEL_C_CLUSTER)
    made = [r.route(headers, {}) for _ in range(1000)]
    assert sys.getrefcount(ep) == before[0] + 1000
    assert all(f == made[0] and f.alternates == [] and f.alternates is not made[0].alternates
               for f in made[1:])
    del made
    gc.collect()
    assert (sys.getrefcount(ep), sys.getrefcount(timeout),
            sys.getrefcount(MODEL_C_CLUSTER)) == before


def test_load_scp_router_choices_and_one_source(monkeypatch) -> None:
    """``pure`` is the class on the pure base; ``cython`` the same class on the compiled base
    (scp_model_c.py compiled, made once), ``auto`` that one unless NFMESH_SCP_ROUTER says."""
    from nf_adapters import scp_model_c

    monkeypatch.delenv("NFMESH_SCP_ROUTER", raising=False)
    assert load_scp_router("pure") is PureScpRouter
    assert PureScpRouter.route is scp_model_c.ModelCFastCase.route
    with pytest.raises(ValueError, match="unknown SCP router implementation"):
        load_scp_router("rust")
    if FastScpRouter is None:
        assert load_scp_router() is PureScpRouter and ScpRouter is PureScpRouter
        return
    from nf_adapters import _scp_fast

    assert load_scp_router("cython") is FastScpRouter is ScpRouter
    assert FastScpRouter.__mro__[1:3] == (_scp_fast.ModelCFastCase, PureScpRouter)
    assert _scp_fast.ModelCFastCase.try_route.__doc__ == scp_model_c.ModelCFastCase.try_route.__doc__
    assert _scp_fast._FIELDS == scp_model_c._FIELDS
    monkeypatch.setenv("NFMESH_SCP_ROUTER", "pure")
    assert load_scp_router() is PureScpRouter
    assert load_scp_router("cython") is FastScpRouter
