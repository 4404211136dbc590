"""SCP model D selection, rewriting, binding and the route snapshot published from the registry."""

from __future__ import annotations

import json
import random
from collections import Counter

from dataplane.routing import Forward, LocalResponse, RouterSlot
from gateway.registry.registry import Registry
from gateway.route_snapshot import RouteSnapshotPublisher
from nf_adapters.model_d import ModelDRouter, build_snapshot, parse_routing_binding
from tests.registry.conftest import make_profile
from tests.waiting import wait_until


def _req(path: bytes = b"/nudm-sdm/v2/imsi-001010000000001/am-data", method: bytes = b"GET",
         **disc: str) -> list[tuple[bytes, bytes]]:
    h = [(b":method", method), (b":scheme", b"http"), (b":authority", b"scp.mesh:8000"), (b":path", path),
         (b"user-agent", b"AMF-amf1")]
    for k, v in disc.items():
        h.append((b"3gpp-sbi-discovery-" + k.replace("_", "-").encode(), v.encode()))
    h.append((b"accept", b"application/json"))
    return h


def _h(headers, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


def _router(*profiles: dict, seed: int = 1) -> ModelDRouter:
    return ModelDRouter(build_snapshot([(p, p["nfStatus"]) for p in profiles]), rng=random.Random(seed))


def test_not_model_d_returns_none() -> None:
    r = _router(make_profile())
    assert r.route(_req(), {}) is None  # no discovery header
    assert r.route(_req(target_nf_type="NRF"), {}) is None  # the NRF router's
    h = _req(target_nf_type="UDM") + [(b"3gpp-sbi-target-apiroot", b"http://udm:80")]
    assert r.route(h, {}) is None  # model C's


def test_rewrite_to_api_root_and_producer_id() -> None:
    p = make_profile("UDM", ip="10.0.0.7", port=8443)
    svc = next(iter(p["nfServiceList"].values()))
    svc["apiPrefix"] = "/site-a"
    d = _router(p).route(_req(target_nf_type="UDM", service_names="nudm-sdm"), {})
    assert isinstance(d, Forward)
    assert (d.endpoint.host, d.endpoint.port, d.endpoint.tls) == ("10.0.0.7", 8443, False)
    assert d.headers[:4] == [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"10.0.0.7:8443"),
                             (b":path", b"/site-a/nudm-sdm/v2/imsi-001010000000001/am-data")]
    assert not any(k.startswith(b"3gpp-sbi-discovery-") for k, _ in d.headers)
    assert _h(d.headers, b"accept") == b"application/json"
    assert d.extra_response_headers == [
        (b"3gpp-sbi-producer-id", f"nfinst={p['nfInstanceId']}; nfservinst=nudm-sdm-0".encode())]
    assert d.retryable is True
    post = _router(p).route(_req(method=b"POST", target_nf_type="UDM"), {})
    assert isinstance(post, Forward) and post.retryable is False


def test_https_fqdn_service_uses_sni_and_default_port() -> None:
    p = make_profile("AUSF", services=("nausf-auth",), fqdn="ausf1.5gc.example.org")
    svc = next(iter(p["nfServiceList"].values()))
    svc["scheme"] = "https"
    del svc["ipEndPoints"]
    d = _router(p).route(_req(b"/nausf-auth/v1/ue-authentications", b"POST", target_nf_type="AUSF"), {})
    assert isinstance(d, Forward)
    assert d.endpoint.host == "ausf1.5gc.example.org" and d.endpoint.port == 443
    assert d.endpoint.tls and d.endpoint.server_name == "ausf1.5gc.example.org"
    assert _h(d.headers, b":authority") == b"ausf1.5gc.example.org"
    assert _h(d.headers, b":scheme") == b"https"


def test_filters_service_status_snssai_dnn_and_access() -> None:
    sdm = make_profile("UDM", ip="10.0.0.1")
    uecm = make_profile("UDM", services=("nudm-uecm",), ip="10.0.0.2")
    suspended = make_profile("UDM", ip="10.0.0.3", nfStatus="SUSPENDED")
    svc_down = make_profile("UDM", ip="10.0.0.4")
    next(iter(svc_down["nfServiceList"].values()))["nfServiceStatus"] = "SUSPENDED"
    smf_only = make_profile("UDM", ip="10.0.0.5", allowedNfTypes=["SMF"])
    r = _router(sdm, uecm, suspended, svc_down, smf_only)
    hosts = {r.route(_req(target_nf_type="UDM"), {}).endpoint.host for _ in range(50)}
    assert hosts == {"10.0.0.1"}  # service from the path, REGISTERED, access allowed for AMF
    hosts = {r.route(_req(target_nf_type="UDM", requester_nf_type="SMF"), {}).endpoint.host for _ in range(50)}
    assert hosts == {"10.0.0.1", "10.0.0.5"}

    smf1 = make_profile("SMF", services=("nsmf-pdusession",), ip="10.1.0.1", sNssais=[{"sst": 1, "sd": "000001"}],
                        smfInfo={"sNssaiSmfInfoList": [{"sNssai": {"sst": 1, "sd": "000001"},
                                                        "dnnSmfInfoList": [{"dnn": "internet"}]}]})
    smf2 = make_profile("SMF", services=("nsmf-pdusession",), ip="10.1.0.2", sNssais=[{"sst": 2}],
                        smfInfo={"sNssaiSmfInfoList": [{"sNssai": {"sst": 2}, "dnnSmfInfoList": [{"dnn": "ims"}]}]})
    r = _router(smf1, smf2)
    path = b"/nsmf-pdusession/v1/sm-contexts"
    d = r.route(_req(path, b"POST", target_nf_type="SMF", snssais='[{"sst":1,"sd":"000001"}]'), {})
    assert d.endpoint.host == "10.1.0.1"
    d = r.route(_req(path, b"POST", target_nf_type="SMF", dnn="ims"), {})
    assert d.endpoint.host == "10.1.0.2"
    d = r.route(_req(path, b"POST", target_nf_type="SMF", dnn="nothing"), {})
    assert isinstance(d, LocalResponse) and d.status == 504
    assert json.loads(d.body)["cause"] == "NF_DISCOVERY_FAILURE"


def test_bad_discovery_header_is_400() -> None:
    d = _router(make_profile()).route(_req(target_nf_type="UDM", snssais="[{"), {})
    assert isinstance(d, LocalResponse) and d.status == 400
    body = json.loads(d.body)
    assert body["cause"] == "INVALID_DISCOVERY_PARAM"
    assert body["invalidParams"][0]["param"] == "3gpp-Sbi-Discovery-snssais"
    d = _router(make_profile()).route(_req(target_nf_type="NOPE"), {})
    assert isinstance(d, LocalResponse) and d.status == 400


def test_priority_first_then_weighted_by_capacity_and_load() -> None:
    low = make_profile("UDM", ip="10.0.0.1", priority=1, capacity=100)
    high_prio_number = make_profile("UDM", ip="10.0.0.9", priority=5, capacity=60000)
    r = _router(low, high_prio_number)
    for _ in range(20):
        d = r.route(_req(target_nf_type="UDM"), {})
        assert d.endpoint.host == "10.0.0.1"
        assert [a[0].host for a in d.alternates] == ["10.0.0.9"]  # reselection target
    a = make_profile("UDM", ip="10.0.0.1", priority=1, capacity=300)
    b = make_profile("UDM", ip="10.0.0.2", priority=1, capacity=100)
    r = _router(a, b, seed=7)
    n = Counter(r.route(_req(target_nf_type="UDM"), {}).endpoint.host for _ in range(4000))
    assert 2.6 < n["10.0.0.1"] / n["10.0.0.2"] < 3.4  # 3:1 by capacity
    # the same capacity but a reported load of 75 %: a quarter of the weight
    a = make_profile("UDM", ip="10.0.0.1", priority=1, capacity=100, load=75)
    b = make_profile("UDM", ip="10.0.0.2", priority=1, capacity=100, load=0)
    r = _router(a, b, seed=7)
    n = Counter(r.route(_req(target_nf_type="UDM"), {}).endpoint.host for _ in range(4000))
    assert 3.4 < n["10.0.0.2"] / n["10.0.0.1"] < 4.6


def test_routing_binding_instance_then_set() -> None:
    a = make_profile("UDM", ip="10.0.0.1", nfSetIdList=["set1"])
    b = make_profile("UDM", ip="10.0.0.2", nfSetIdList=["set1"])
    c = make_profile("UDM", ip="10.0.0.3", nfSetIdList=["set2"])
    r = _router(a, b, c)
    bind = f"bl=nf-instance; nfinst={b['nfInstanceId']}; nfset=set1".encode()
    for _ in range(10):
        d = r.route(_req(target_nf_type="UDM") + [(b"3gpp-sbi-routing-binding", bind)], {})
        assert d.endpoint.host == "10.0.0.2"
    # the bound instance is gone: fall back within its set only
    r = _router(a, c)
    for _ in range(10):
        d = r.route(_req(target_nf_type="UDM") + [(b"3gpp-sbi-routing-binding", bind)], {})
        assert d.endpoint.host == "10.0.0.1"
    # bl=nf-set with nothing left in the set: no producer
    d = _router(c).route(_req(target_nf_type="UDM") + [(b"3gpp-sbi-routing-binding", b"bl=nf-set; nfset=set1")], {})
    assert isinstance(d, LocalResponse) and d.status == 504
    assert parse_routing_binding(b'bl=nf-set; nfset=s; callback-uri-prefix="/x"') == {
        "bl": "nf-set", "nfset": "s", "callback-uri-prefix": "/x"}


def test_alternate_endpoints_of_the_same_service() -> None:
    p = make_profile("UDM")
    next(iter(p["nfServiceList"].values()))["ipEndPoints"] = [
        {"ipv4Address": "10.0.0.1", "port": 80}, {"ipv4Address": "10.0.0.2", "port": 81}]
    d = _router(p).route(_req(target_nf_type="UDM"), {})
    assert d.endpoint.host == "10.0.0.1"
    assert [(e.host, e.port) for e, _ in d.alternates] == [("10.0.0.2", 81)]
    assert _h(d.alternates[0][1], b":authority") == b"10.0.0.2:81"


async def test_snapshot_follows_the_registry(registry: Registry) -> None:
    slot = RouterSlot(ModelDRouter(build_snapshot([])))
    pub = RouteSnapshotPublisher(registry, slot)
    pub.publish()
    first = slot.current
    assert isinstance(first.route(_req(target_nf_type="UDM"), {}), LocalResponse)
    p = make_profile("UDM", ip="10.9.9.9")
    await registry.register(p["nfInstanceId"], p)
    await wait_until(lambda: slot.current is not first)  # the publisher coalesces changes
    assert slot.current.route(_req(target_nf_type="UDM"), {}).endpoint.host == "10.9.9.9"
    # the old router object is untouched: a request already routing on it is unaffected
    assert isinstance(first.route(_req(target_nf_type="UDM"), {}), LocalResponse)
    await registry.deregister(p["nfInstanceId"])
    # rebuilds are spaced by min_interval_s (50 ms): the next one comes after that
    await wait_until(lambda: isinstance(slot.current.route(_req(target_nf_type="UDM"), {}), LocalResponse))


def test_deadline_from_max_rsp_time_and_sender_timestamp() -> None:
    p = make_profile("UDM", ip="10.0.0.1")
    r = ModelDRouter(build_snapshot([(p, "REGISTERED")]), timeout=10.0,
                     clock=lambda: 1_700_000_000.5)  # Tue, 14 Nov 2023 22:13:20.500 GMT
    h = _req(target_nf_type="UDM") + [(b"3gpp-sbi-max-rsp-time", b"2000")]
    assert r.route(h, {}).timeout == 2.0
    sent = b"Tue, 14 Nov 2023 22:13:20.000 GMT"  # 0.5 s ago
    d = r.route(h + [(b"3gpp-sbi-sender-timestamp", sent)], {})
    assert isinstance(d, Forward) and abs(d.timeout - 1.5) < 1e-6
    late = _req(target_nf_type="UDM") + [(b"3gpp-sbi-max-rsp-time", b"300"),
                                          (b"3gpp-sbi-sender-timestamp", sent)]
    d = r.route(late, {})
    assert isinstance(d, LocalResponse) and d.status == 504
    assert json.loads(d.body)["cause"] == "TIMED_OUT_REQUEST"
    d = r.route(_req(target_nf_type="UDM") + [(b"3gpp-sbi-max-rsp-time", b"soon")], {})
    assert isinstance(d, LocalResponse) and d.status == 400
    assert r.route(_req(target_nf_type="UDM"), {}).timeout == 10.0


def test_loop_protection_with_the_scp_routers_hop_stamp() -> None:
    from nf_adapters.scp_router import ScpRouter

    scp = ScpRouter(via_name="gw1", max_forward_hops=5)
    p = make_profile("UDM", ip="10.0.0.1")
    r = ModelDRouter(build_snapshot([(p, "REGISTERED")]), hop_stamp=scp.hop_stamp)
    d = r.route(_req(target_nf_type="UDM") + [(b"3gpp-sbi-max-forward-hops", b"3")], {})
    assert isinstance(d, Forward)
    hops = [v for k, v in d.headers if k == b"3gpp-sbi-max-forward-hops"]
    assert len(hops) == 1 and hops[0].split(b";")[0] == b"2"
    via = [v for k, v in d.headers if k == b"via"]
    assert len(via) == 1 and b"gw1" in via[0]
    # the request comes back through us: 508
    d = r.route(_req(target_nf_type="UDM") + [(b"via", via[0])], {})
    assert isinstance(d, LocalResponse) and d.status == 508
    d = r.route(_req(target_nf_type="UDM") + [(b"3gpp-sbi-max-forward-hops", b"0")], {})
    assert isinstance(d, LocalResponse) and d.status == 508


def test_producer_lci_steers_selection_and_scopes_are_set() -> None:
    """A producer's 3gpp-Sbi-Lci (what OverloadResponses keeps) replaces its profile load in
    the weights; Forward.scopes name the chosen instance for OCI matching."""
    a, b = make_profile("UDM", ip="10.0.0.1"), make_profile("UDM", ip="10.0.0.2")

    class Loads:
        loads: dict = {}
        loads_version = 0

    live = Loads()
    router = ModelDRouter(build_snapshot([(p, p["nfStatus"]) for p in (a, b)]),
                          rng=random.Random(3), live_loads=live)

    def share_of_a(n: int = 400) -> float:
        picks = Counter(router.route(_req(target_nf_type="UDM"), {}).endpoint.host
                        for _ in range(n))
        return picks["10.0.0.1"] / n

    assert 0.35 < share_of_a() < 0.65
    live.loads = {a["nfInstanceId"].lower(): (95, 1.0)}
    live.loads_version = 1
    assert share_of_a() < 0.15
    d = router.route(_req(target_nf_type="UDM"), {})
    assert f"nfinst:{d.endpoint.host == '10.0.0.1' and a['nfInstanceId'].lower() or b['nfInstanceId'].lower()}" in d.scopes
