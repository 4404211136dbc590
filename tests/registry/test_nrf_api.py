"""The NRF API handlers (TS 29.510) called directly with Request objects; every body the tests
see is also checked against the official OpenAPI schemas."""

from __future__ import annotations

import json
import uuid

from gateway.nrf_api import NrfApi, NrfRouter
from gateway.registry.registry import Registry
from tests.registry.conftest import COMMON, DISC, NFM, make_profile, req


def _h(resp, name: bytes) -> bytes | None:
    for k, v in resp.headers:
        if k == name:
            return v
    return None


async def _put(api: NrfApi, p: dict):
    return await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}",
                                json.dumps(p).encode()))


def _problem(resp, schemas) -> dict:
    assert _h(resp, b"content-type") == b"application/problem+json"
    body = json.loads(resp.body)
    schemas.check(body, COMMON, "ProblemDetails")
    assert body["status"] == resp.status
    return body


async def test_register_201_then_200_with_location_and_heartbeat_timer(api: NrfApi, schemas) -> None:
    p = make_profile("UDM", heartBeatTimer=99)
    r = await _put(api, p)
    assert r.status == 201
    assert _h(r, b"location") == f"http://nrf.test:8000/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}".encode()
    body = json.loads(r.body)
    schemas.check(body, NFM, "NFProfile")
    assert body["heartBeatTimer"] == 2  # the NRF's choice, not the NF's 99
    assert body["nfInstanceId"] == p["nfInstanceId"]
    r2 = await _put(api, p)
    assert r2.status == 200 and _h(r2, b"location") is None
    schemas.check(json.loads(r2.body), NFM, "NFProfile")


async def test_get_list_delete(api: NrfApi, schemas) -> None:
    a, b = make_profile("UDM"), make_profile("AMF", services=("namf-comm",))
    for p in (a, b):
        assert (await _put(api, p)).status == 201
    r = await api.handle(req("GET", f"/nnrf-nfm/v1/nf-instances/{a['nfInstanceId']}", ctype=None))
    assert r.status == 200
    schemas.check(json.loads(r.body), NFM, "NFProfile")
    r = await api.handle(req("GET", "/nnrf-nfm/v1/nf-instances?nf-type=AMF&limit=5", ctype=None))
    assert r.status == 200 and _h(r, b"content-type") == b"application/3gppHal+json"
    body = json.loads(r.body)
    schemas.check(body, NFM, "UriList")
    assert [i["href"] for i in body["_links"]["item"]] == [
        f"http://nrf.test:8000/nnrf-nfm/v1/nf-instances/{b['nfInstanceId']}"]
    r = await api.handle(req("GET", "/nnrf-nfm/v1/nf-instances?limit=1", ctype=None))
    body = json.loads(r.body)
    assert len(body["_links"]["item"]) == 1 and body["totalItemCount"] == 2
    r = await api.handle(req("DELETE", f"/nnrf-nfm/v1/nf-instances/{a['nfInstanceId']}", ctype=None))
    assert r.status == 204 and r.body == b""
    r = await api.handle(req("GET", f"/nnrf-nfm/v1/nf-instances/{a['nfInstanceId']}", ctype=None))
    assert r.status == 404
    assert _problem(r, schemas)["cause"] == "RESOURCE_CONTEXT_NOT_FOUND"
    r = await api.handle(req("DELETE", f"/nnrf-nfm/v1/nf-instances/{a['nfInstanceId']}", ctype=None))
    assert r.status == 404


async def test_heartbeat_patch_204_and_200_when_nrf_changes(api: NrfApi, registry: Registry, schemas) -> None:
    p = make_profile()
    await _put(api, p)
    path = f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}"
    hb = json.dumps([{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]).encode()
    r = await api.handle(req("PATCH", path, hb, "application/json-patch+json"))
    assert r.status == 204 and r.body == b""
    # the NF tries to change its heartBeatTimer: the NRF keeps its own and says so with 200
    r = await api.handle(req("PATCH", path, json.dumps(
        [{"op": "replace", "path": "/heartBeatTimer", "value": 50}]).encode(), "application/json-patch+json"))
    assert r.status == 200
    body = json.loads(r.body)
    schemas.check(body, NFM, "NFProfile")
    assert body["heartBeatTimer"] == 2
    # an update of a real field is applied
    r = await api.handle(req("PATCH", path, json.dumps(
        [{"op": "add", "path": "/priority", "value": 7}]).encode(), "application/json-patch+json"))
    assert r.status == 204
    assert registry.get(p["nfInstanceId"])["priority"] == 7


async def test_bad_profiles_exact_problem_details(api: NrfApi, registry: Registry, schemas) -> None:
    nid = str(uuid.uuid4())
    path = f"/nnrf-nfm/v1/nf-instances/{nid}"
    cases = [
        ({k: v for k, v in make_profile(nf_id=nid).items() if k != "nfType"},
         "MANDATORY_IE_MISSING", "/nfType"),
        ({k: v for k, v in make_profile(nf_id=nid).items() if k != "nfStatus"},
         "MANDATORY_IE_MISSING", "/nfStatus"),
        (make_profile("NOT_AN_NF", nf_id=nid), "MANDATORY_IE_INCORRECT", "/nfType"),
        (make_profile(nf_id=nid, nfStatus="SLEEPING"), "MANDATORY_IE_INCORRECT", "/nfStatus"),
        (make_profile(nf_id=str(uuid.uuid4())), "MANDATORY_IE_INCORRECT", "/nfInstanceId"),
        (make_profile(nf_id=nid, priority="high"), "OPTIONAL_IE_INCORRECT", "/priority"),
        (make_profile(nf_id=nid, ipv4Addresses=["300.1.1.1"]), "OPTIONAL_IE_INCORRECT", "/ipv4Addresses/0"),
        (make_profile(nf_id=nid, fqdn="not a fqdn"), "MANDATORY_IE_INCORRECT", "/fqdn"),
        ({k: v for k, v in make_profile(nf_id=nid).items() if k != "ipv4Addresses"},
         "MANDATORY_IE_MISSING", "/fqdn"),
    ]
    for body, cause, param in cases:
        r = await api.handle(req("PUT", path, json.dumps(body).encode()))
        assert r.status == 400, (cause, param)
        pd = _problem(r, schemas)
        assert pd["cause"] == cause, pd
        assert pd["invalidParams"][0]["param"] == param, pd
    # a broken service entry
    bad = make_profile(nf_id=nid)
    svc = next(iter(bad["nfServiceList"].values()))
    del svc["versions"]
    svc["scheme"] = "ftp"
    r = await api.handle(req("PUT", path, json.dumps(bad).encode()))
    pd = _problem(r, schemas)
    params = {i["param"] for i in pd["invalidParams"]}
    assert pd["cause"] == "MANDATORY_IE_MISSING"
    assert {f"/nfServiceList/{svc['serviceInstanceId']}/versions",
            f"/nfServiceList/{svc['serviceInstanceId']}/scheme"} <= params
    assert len(registry) == 0  # nothing stored on error


async def test_wrong_content_type_and_malformed_json(api: NrfApi, registry: Registry, schemas) -> None:
    p = make_profile()
    path = f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}"
    r = await api.handle(req("PUT", path, json.dumps(p).encode(), "text/plain"))
    assert r.status == 415
    assert _problem(r, schemas)["cause"] == "INVALID_MSG_FORMAT"
    r = await api.handle(req("PUT", path, b"{not json", "application/json"))
    assert r.status == 400 and _problem(r, schemas)["cause"] == "INVALID_MSG_FORMAT"
    r = await api.handle(req("PUT", path, b"[1,2]", "application/json"))
    assert r.status == 400 and _problem(r, schemas)["cause"] == "INVALID_MSG_FORMAT"
    assert len(registry) == 0
    await _put(api, p)
    # PATCH must be json-patch+json
    r = await api.handle(req("PATCH", path, b"[]", "application/json"))
    assert r.status == 415
    # malformed JSON patches
    for ops in ([], [{"op": "frobnicate", "path": "/x"}], [{"op": "replace", "path": "nfStatus", "value": 1}],
                [{"op": "remove", "path": "/doesNotExist"}], [{"op": "replace", "path": "/nfStatus"}], {"op": "x"}):
        r = await api.handle(req("PATCH", path, json.dumps(ops).encode(), "application/json-patch+json"))
        assert r.status == 400, ops
        assert _problem(r, schemas)["cause"] == "INVALID_MSG_FORMAT"
    # a patch producing an invalid profile is refused and nothing changes
    r = await api.handle(req("PATCH", path, json.dumps(
        [{"op": "replace", "path": "/nfStatus", "value": "BOGUS"}]).encode(), "application/json-patch+json"))
    assert r.status == 400 and _problem(r, schemas)["cause"] == "MANDATORY_IE_INCORRECT"
    r = await api.handle(req("PATCH", path, json.dumps(
        [{"op": "replace", "path": "/nfType", "value": "AMF"}]).encode(), "application/json-patch+json"))
    assert r.status == 403 and _problem(r, schemas)["cause"] == "MODIFICATION_NOT_ALLOWED"
    assert registry.get(p["nfInstanceId"])["nfStatus"] == "REGISTERED"
    assert registry.get(p["nfInstanceId"])["nfType"] == "UDM"
    r = await api.handle(req("PATCH", f"/nnrf-nfm/v1/nf-instances/{uuid.uuid4()}", json.dumps(
        [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]).encode(), "application/json-patch+json"))
    assert r.status == 404


async def test_discovery_filters_and_schema(api: NrfApi, schemas) -> None:
    slice1 = [{"sst": 1, "sd": "000001"}]
    udm1 = make_profile("UDM", services=("nudm-sdm", "nudm-uecm"), sNssais=slice1, priority=1, locality="east")
    udm2 = make_profile("UDM", services=("nudm-sdm",), sNssais=[{"sst": 2}], priority=2, locality="west")
    udm3 = make_profile("UDM", services=("nudm-sdm",), allowedNfTypes=["SMF"])  # not for AMFs
    udm4 = make_profile("UDM", services=("nudm-sdm",), nfStatus="UNDISCOVERABLE")
    for p in (udm1, udm2, udm3, udm4):
        assert (await _put(api, p)).status == 201

    async def disc(q: str) -> list[str]:
        r = await api.handle(req("GET", "/nnrf-disc/v1/nf-instances?" + q, ctype=None))
        assert r.status == 200, r.body
        body = json.loads(r.body)
        schemas.check(body, DISC, "SearchResult")
        assert body["validityPeriod"] == 60
        for inst in body["nfInstances"]:
            assert "allowedNfTypes" not in inst
        return [i["nfInstanceId"] for i in body["nfInstances"]]

    ids = await disc("target-nf-type=UDM&requester-nf-type=AMF")
    assert ids == [udm1["nfInstanceId"], udm2["nfInstanceId"]]  # priority order; udm3/udm4 excluded
    ids = await disc("target-nf-type=UDM&requester-nf-type=SMF")
    assert set(ids) == {udm1["nfInstanceId"], udm2["nfInstanceId"], udm3["nfInstanceId"]}
    assert await disc("target-nf-type=UDM&requester-nf-type=AMF&service-names=nudm-uecm") == [udm1["nfInstanceId"]]
    assert await disc('target-nf-type=UDM&requester-nf-type=AMF&snssais=[{"sst":2}]') == [udm2["nfInstanceId"]]
    assert await disc("target-nf-type=UDM&requester-nf-type=AMF&preferred-locality=west") == [
        udm2["nfInstanceId"], udm1["nfInstanceId"]]
    assert await disc("target-nf-type=UDM&requester-nf-type=AMF&limit=1") == [udm1["nfInstanceId"]]
    assert await disc(f"target-nf-type=UDM&requester-nf-type=AMF&target-nf-instance-id={udm2['nfInstanceId']}") == [
        udm2["nfInstanceId"]]
    assert await disc("target-nf-type=AUSF&requester-nf-type=AMF") == []


async def test_discovery_bad_queries(api: NrfApi, schemas) -> None:
    cases = [
        ("requester-nf-type=AMF", "MANDATORY_QUERY_PARAM_MISSING", "target-nf-type"),
        ("target-nf-type=UDM", "MANDATORY_QUERY_PARAM_MISSING", "requester-nf-type"),
        ("target-nf-type=XYZ&requester-nf-type=AMF", "MANDATORY_QUERY_PARAM_INCORRECT", "target-nf-type"),
        ("target-nf-type=UDM&requester-nf-type=amf", "MANDATORY_QUERY_PARAM_INCORRECT", "requester-nf-type"),
        ("target-nf-type=UDM&requester-nf-type=AMF&bogus=1", "INVALID_QUERY_PARAM", "bogus"),
        ("target-nf-type=UDM&requester-nf-type=AMF&limit=0", "INVALID_QUERY_PARAM", "limit"),
        ("target-nf-type=UDM&requester-nf-type=AMF&snssais=[{", "INVALID_QUERY_PARAM", "snssais"),
        ('target-nf-type=UDM&requester-nf-type=AMF&snssais=[{"sst":999}]', "INVALID_QUERY_PARAM", "snssais"),
        ("target-nf-type=UDM&requester-nf-type=AMF&limit=x", "INVALID_QUERY_PARAM", "limit"),
    ]
    for q, cause, param in cases:
        r = await api.handle(req("GET", "/nnrf-disc/v1/nf-instances?" + q, ctype=None))
        assert r.status == 400, q
        pd = _problem(r, schemas)
        assert pd["cause"] == cause and pd["invalidParams"][0]["param"] == param, (q, pd)


async def test_subscriptions_lifecycle_and_notification_bodies(api: NrfApi, sender, schemas) -> None:
    sub = {"nfStatusNotificationUri": "http://127.0.0.1:9/notify", "reqNotifEvents": ["NF_REGISTERED", "NF_DEREGISTERED"],
           "subscrCond": {"nfType": "AMF"}}
    r = await api.handle(req("POST", "/nnrf-nfm/v1/subscriptions", json.dumps(sub).encode()))
    assert r.status == 201
    data = json.loads(r.body)
    schemas.check(data, NFM, "SubscriptionData")
    sid = data["subscriptionId"]
    assert _h(r, b"location") == f"http://nrf.test:8000/nnrf-nfm/v1/subscriptions/{sid}".encode()
    assert "validityTime" in data
    # events: an UDM (not matched), an AMF registration and deregistration
    udm = make_profile("UDM")
    amf = make_profile("AMF", services=("namf-comm",), allowedNfTypes=["SMF"])
    await _put(api, udm)
    await _put(api, amf)
    await api.handle(req("DELETE", f"/nnrf-nfm/v1/nf-instances/{amf['nfInstanceId']}", ctype=None))
    for _ in range(100):
        if len(sender.sent) >= 2:
            break
        await sender.event.wait()
        sender.event.clear()
    bodies = [json.loads(b) for _, b in sender.sent]
    assert [b["event"] for b in bodies] == ["NF_REGISTERED", "NF_DEREGISTERED"]
    for b in bodies:
        schemas.check(b, NFM, "NotificationData")
        assert b["nfInstanceUri"] == f"http://nrf.test:8000/nnrf-nfm/v1/nf-instances/{amf['nfInstanceId']}"
    assert bodies[0]["nfProfile"]["nfInstanceId"] == amf["nfInstanceId"]
    assert all(u == "http://127.0.0.1:9/notify" for u, _ in sender.sent)
    # PATCH validity: a far-future time is clamped (200), a nearer one accepted (204)
    r = await api.handle(req("PATCH", f"/nnrf-nfm/v1/subscriptions/{sid}", json.dumps(
        [{"op": "replace", "path": "/validityTime", "value": "2999-01-01T00:00:00Z"}]).encode(),
        "application/json-patch+json"))
    assert r.status == 200
    schemas.check(json.loads(r.body), NFM, "SubscriptionData")
    assert json.loads(r.body)["validityTime"] < "2999"
    r = await api.handle(req("PATCH", f"/nnrf-nfm/v1/subscriptions/{sid}", json.dumps(
        [{"op": "replace", "path": "/nfStatusNotificationUri", "value": "http://x.example.com/"}]).encode(),
        "application/json-patch+json"))
    assert r.status == 403 and _problem(r, schemas)["cause"] == "MODIFICATION_NOT_ALLOWED"
    r = await api.handle(req("DELETE", f"/nnrf-nfm/v1/subscriptions/{sid}", ctype=None))
    assert r.status == 204
    r = await api.handle(req("DELETE", f"/nnrf-nfm/v1/subscriptions/{sid}", ctype=None))
    assert r.status == 404 and _problem(r, schemas)["cause"] == "SUBSCRIPTION_NOT_FOUND"


async def test_bad_subscriptions(api: NrfApi, schemas) -> None:
    cases = [
        ({}, "MANDATORY_IE_MISSING", "/nfStatusNotificationUri"),
        ({"nfStatusNotificationUri": "ftp://x"}, "MANDATORY_IE_INCORRECT", "/nfStatusNotificationUri"),
        ({"nfStatusNotificationUri": "http://a.example.com/", "reqNotifEvents": ["NF_EXPLODED"]},
         "OPTIONAL_IE_INCORRECT", "/reqNotifEvents/0"),
        ({"nfStatusNotificationUri": "http://a.example.com/", "validityTime": "yesterday"},
         "OPTIONAL_IE_INCORRECT", "/validityTime"),
        ({"nfStatusNotificationUri": "http://a.example.com/", "subscrCond": {"nfType": "BOGUS"}},
         "OPTIONAL_IE_INCORRECT", "/subscrCond/nfType"),
    ]
    for body, cause, param in cases:
        r = await api.handle(req("POST", "/nnrf-nfm/v1/subscriptions", json.dumps(body).encode()))
        assert r.status == 400, body
        pd = _problem(r, schemas)
        assert pd["cause"] == cause and pd["invalidParams"][0]["param"] == param, pd


async def test_unknown_resources_and_methods(api: NrfApi, schemas) -> None:
    r = await api.handle(req("GET", "/nnrf-nfm/v1/bogus", ctype=None))
    assert r.status == 404 and _problem(r, schemas)["cause"] == "RESOURCE_URI_STRUCTURE_NOT_FOUND"
    r = await api.handle(req("POST", "/nnrf-nfm/v1/nf-instances", ctype=None))
    assert r.status == 405
    r = await api.handle(req("GET", "/nnrf-nfm/v1/nf-instances/not-a-uuid", ctype=None))
    assert r.status == 400 and _problem(r, schemas)["cause"] == "MANDATORY_IE_INCORRECT"


def test_nrf_router_claims_only_nrf_requests(api: NrfApi) -> None:
    router = NrfRouter(api, own_api_roots=("http://nrf.test:8000",))

    def hdrs(path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        return [(b":method", b"GET"), (b":path", path), *extra]

    assert router.route(hdrs(b"/nnrf-disc/v1/nf-instances?x"), {}) is api.service
    assert router.route(hdrs(b"/nnrf-nfm/v1/nf-instances/x"), {}) is api.service
    assert router.route(hdrs(b"/nudm-sdm/v2/x"), {}) is None
    # indirect-mode NFs: target NF type NRF
    assert router.route(hdrs(b"/oauth2/token", (b"3gpp-sbi-discovery-target-nf-type", b"NRF")), {}) is api.service
    # a Target-apiRoot naming another NRF is model C's business
    assert router.route(hdrs(b"/nnrf-nfm/v1/nf-instances",
                             (b"3gpp-sbi-target-apiroot", b"http://other-nrf:80")), {}) is None
    assert router.route(hdrs(b"/nnrf-nfm/v1/nf-instances",
                             (b"3gpp-sbi-target-apiroot", b"http://nrf.test:8000")), {}) is api.service
