"""NRF answers that both Open5GS and the official TS 29.510 yaml accept (issue 13):

* GET nf-instances answers ``application/3gppHal+json`` with a UriList (``_links.item``,
  ``_links.self``, ``totalItemCount``), filtered and paged by the yaml's query parameters;
* every query parameter is checked: an unknown name, a repeated one, a value out of the yaml's
  range is 400 ProblemDetails naming it (discovery: a bad ``target-nf-type`` /
  ``requester-nf-type`` is MANDATORY_QUERY_PARAM_INCORRECT), and every parameter the yaml
  defines stays accepted;
* a malformed JSON Patch body is 400 ProblemDetails naming the operation, never a 500.

The yaml files are the repository's copy (specs/3gpp), so none of this skips on a fresh clone.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.nrf_api import LIST_PARAMS, NrfApi
from gateway.registry.memory_store import MemoryStore
from gateway.registry.notifier import Notifier
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from nf_adapters.discovery import QUERY_PARAMETERS
from tests.registry.conftest import COMMON, DISC, NFM, RecordingSender, make_profile, req

HAL = b"application/3gppHal+json"
LIST = "/nnrf-nfm/v1/nf-instances"
ROOT = "http://nrf.test:8000/nnrf-nfm/v1/nf-instances"
PATCH = "application/json-patch+json"


def _h(resp, name: bytes) -> bytes | None:
    for k, v in resp.headers:
        if k == name:
            return v
    return None


def _problem(resp, schemas, status: int = 400) -> dict:
    assert resp.status == status, resp.body
    assert _h(resp, b"content-type") == b"application/problem+json"
    body = json.loads(resp.body)
    schemas.check(body, COMMON, "ProblemDetails")
    assert body["status"] == status
    return body


async def _put(api: NrfApi, p: dict) -> None:
    r = await api.handle(req("PUT", f"{LIST}/{p['nfInstanceId']}", json.dumps(p).encode()))
    assert r.status == 201, r.body


async def _list(api: NrfApi, query: str = "") -> dict:
    r = await api.handle(req("GET", LIST + (f"?{query}" if query else ""), ctype=None))
    assert r.status == 200, r.body
    assert _h(r, b"content-type") == HAL
    assert _h(r, b"content-length") == str(len(r.body)).encode()
    return json.loads(r.body)


def _open5gs_links(body: dict) -> tuple[list[str], str]:
    """What Open5GS's UriList reader (lib/sbi ogs_sbi_links_parseFromJSON) takes from the answer:
    it fails without ``_links`` or ``_links.item``, then reads each item's ``href`` and
    ``_links.self.href``."""
    links = body["_links"]
    items = links["item"]
    assert isinstance(items, list)
    hrefs = [i["href"] for i in items]
    assert all(isinstance(h, str) for h in hrefs)
    return hrefs, links["self"]["href"]


# ---------------------------------------------------------------- GET nf-instances: UriList


async def test_list_is_a_hal_uri_list(api: NrfApi, schemas) -> None:
    amfs = [make_profile("AMF", services=("namf-comm",)) for _ in range(3)]
    udms = [make_profile("UDM") for _ in range(2)]
    for p in amfs + udms:
        await _put(api, p)
    body = await _list(api)
    schemas.check(body, NFM, "UriList")
    assert set(body) == {"_links", "totalItemCount"}
    assert set(body["_links"]) == {"item", "self"}  # TS 29.510: "two members, item and self"
    hrefs, self_href = _open5gs_links(body)
    assert hrefs == [f"{ROOT}/{i}" for i in sorted(p["nfInstanceId"] for p in amfs + udms)]
    assert self_href == ROOT
    assert body["totalItemCount"] == 5

    body = await _list(api, "nf-type=AMF")
    schemas.check(body, NFM, "UriList")
    hrefs, self_href = _open5gs_links(body)
    assert hrefs == [f"{ROOT}/{i}" for i in sorted(p["nfInstanceId"] for p in amfs)]
    assert self_href == f"{ROOT}?nf-type=AMF"
    assert body["totalItemCount"] == 3


async def test_list_pages_and_limit(api: NrfApi, schemas) -> None:
    amfs = [make_profile("AMF", services=("namf-comm",)) for _ in range(5)]
    for p in amfs:
        await _put(api, p)
    await _put(api, make_profile("UDM"))
    ids = [f"{ROOT}/{i}" for i in sorted(p["nfInstanceId"] for p in amfs)]

    async def hrefs(query: str) -> list[str]:
        body = await _list(api, query)
        assert body["totalItemCount"] == 5  # every AMF, before paging and limit
        if body["_links"]["item"]:
            schemas.check(body, NFM, "UriList")
        return _open5gs_links(body)[0]

    assert await hrefs("nf-type=AMF&limit=2") == ids[:2]
    assert await hrefs("nf-type=AMF&page-size=2") == ids[:2]
    assert await hrefs("nf-type=AMF&page-size=2&page-number=1") == ids[:2]
    assert await hrefs("nf-type=AMF&page-size=2&page-number=2") == ids[2:4]
    assert await hrefs("nf-type=AMF&page-size=2&page-number=3") == ids[4:]
    assert await hrefs("nf-type=AMF&page-size=2&page-number=4") == []
    assert await hrefs("page-number=2&nf-type=AMF&page-size=2&limit=1") == ids[2:3]
    assert await hrefs("nf-type=AMF&page-number=1") == ids  # no page-size: one page of all
    assert await hrefs("nf-type=AMF&page-number=2") == []
    assert await hrefs("nf-type=AMF&limit=" + "9" * 40) == ids  # no maximum in the yaml
    assert await hrefs("nf-type=AMF&limit=0005") == ids


async def test_empty_list_keeps_item_for_open5gs(api: NrfApi, schemas) -> None:
    body = await _list(api, "nf-type=SMF")
    assert body == {"_links": {"item": [], "self": {"href": f"{ROOT}?nf-type=SMF"}}, "totalItemCount": 0}
    assert _open5gs_links(body) == ([], f"{ROOT}?nf-type=SMF")
    # The one place the answer and the yaml part: LinksValueSchema wants at least one link,
    # while TS 29.510 names item as a member and Open5GS's reader fails without it.
    errors = schemas.errors(body, NFM, "UriList")
    assert [(list(e.absolute_path), e.instance) for e in errors] == [(["_links", "item"], [])]


def test_list_parameters_are_the_yamls(schemas) -> None:
    op = schemas.document(NFM)["paths"]["/nf-instances"]["get"]
    params = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}
    assert set(params) == set(LIST_PARAMS)
    for name in ("limit", "page-number", "page-size"):
        assert params[name] == {"type": "integer", "minimum": 1}


@pytest.mark.parametrize("query, param", [
    ("limit=0", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
    ("limit=1.5", "limit"), ("limit=%2B1", "limit"), ("limit=%C2%B2", "limit"),  # ²
    ("limit=%D9%A3", "limit"),  # ARABIC-INDIC DIGIT THREE
    ("page-size=0", "page-size"), ("page-number=0", "page-number"), ("page-number=x", "page-number"),
    ("nf-type=BOGUS", "nf-type"), ("nf-type=", "nf-type"), ("nf-type=amf", "nf-type"),
    ("nf-type=AMF&foo=1", "foo"), ("target-nf-type=AMF", "target-nf-type"),
    ("limit=1&limit=2", "limit"), ("nf-type=AMF&nf-type=SMF", "nf-type"),
    ("&".join(["limit=1"] * 20), "query"),
])
async def test_list_bad_queries(api: NrfApi, schemas, query: str, param: str) -> None:
    r = await api.handle(req("GET", f"{LIST}?{query}", ctype=None))
    pd = _problem(r, schemas)
    assert pd["cause"] == "INVALID_QUERY_PARAM"
    assert pd["invalidParams"][0]["param"] == param, pd


# ---------------------------------------------------------------- NFDiscovery query parameters

BASE = "/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF"


def test_discovery_parameters_are_the_yamls(schemas) -> None:
    op = schemas.document(DISC)["paths"]["/nf-instances"]["get"]
    names = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
    assert names == QUERY_PARAMETERS
    limit = next(p for p in op["parameters"] if p.get("name") == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1}


# values for the parameters nfmesh filters on; any other one is accepted and ignored
_PARSED = {
    "target-nf-type": "UDM", "requester-nf-type": "AMF", "service-names": "nudm-sdm",
    "snssais": '[{"sst":1}]', "requester-snssais": '[{"sst":1}]', "dnn": "internet",
    "tai": '{"plmnId":{"mcc":"001","mnc":"01"},"tac":"0001"}', "preferred-locality": "east",
    "requester-plmn-list": '[{"mcc":"001","mnc":"01"}]', "limit": "3", "max-payload-size": "100",
    "requester-nf-instance-fqdn": "amf.example.org",
    "requester-nf-instance-id": "6faf1bbc-6e4a-4454-a507-a14ef8e1bc5a",
}


async def test_every_yaml_parameter_is_accepted(api: NrfApi, schemas) -> None:
    await _put(api, make_profile("UDM"))
    ignored = sorted(QUERY_PARAMETERS - set(_PARSED) - {"target-nf-instance-id", "target-nf-set-id"})
    assert len(ignored) > 100
    base = "&".join(f"{k}={quote(v)}" for k, v in _PARSED.items())
    r = await api.handle(req("GET", f"/nnrf-disc/v1/nf-instances?{base}", ctype=None))
    assert r.status == 200, r.body
    assert len(json.loads(r.body)["nfInstances"]) == 1
    # each ignored parameter alone, then all of them at once
    for name in ignored:
        r = await api.handle(req("GET", f"{BASE}&{name}=x", ctype=None))
        assert r.status == 200, (name, r.body)
    r = await api.handle(req("GET", BASE + "".join(f"&{n}=x" for n in ignored), ctype=None))
    assert r.status == 200, r.body
    body = json.loads(r.body)
    schemas.check(body, DISC, "SearchResult")
    assert len(body["nfInstances"]) == 1


@pytest.mark.parametrize("query, cause, params", [
    ("&bogus=1", "INVALID_QUERY_PARAM", ["bogus"]),
    ("&nf-type=UDM&x-y=2", "INVALID_QUERY_PARAM", ["nf-type", "x-y"]),  # every unknown one named
    ("&Limit=3", "INVALID_QUERY_PARAM", ["Limit"]),  # names are case-sensitive
    ("&=3", "INVALID_QUERY_PARAM", [""]),
    ("&limit=0", "INVALID_QUERY_PARAM", ["limit"]),
    ("&limit=-1", "INVALID_QUERY_PARAM", ["limit"]),
    ("&limit=", "INVALID_QUERY_PARAM", ["limit"]),
    ("&limit=%C2%B2", "INVALID_QUERY_PARAM", ["limit"]),  # ²: isdigit() but not int()
    ("&limit=%D9%A3", "INVALID_QUERY_PARAM", ["limit"]),
    ("&max-payload-size=2001", "INVALID_QUERY_PARAM", ["max-payload-size"]),
    ("&max-payload-size=0", "INVALID_QUERY_PARAM", ["max-payload-size"]),
])
async def test_discovery_bad_optional_parameters(api: NrfApi, schemas, query: str, cause: str,
                                                 params: list[str]) -> None:
    r = await api.handle(req("GET", BASE + query, ctype=None))
    pd = _problem(r, schemas)
    assert pd["cause"] == cause
    assert [p["param"] for p in pd["invalidParams"]] == params, pd


@pytest.mark.parametrize("query, param", [
    ("target-nf-type=BOGUS&requester-nf-type=AMF", "target-nf-type"),
    ("target-nf-type=udm&requester-nf-type=AMF", "target-nf-type"),
    ("target-nf-type=UDM&requester-nf-type=BOGUS", "requester-nf-type"),
    ("target-nf-type=UDM&requester-nf-type=%C2%B2", "requester-nf-type"),
])
async def test_discovery_bad_nf_types(api: NrfApi, schemas, query: str, param: str) -> None:
    r = await api.handle(req("GET", f"/nnrf-disc/v1/nf-instances?{query}", ctype=None))
    pd = _problem(r, schemas)
    assert pd["cause"] == "MANDATORY_QUERY_PARAM_INCORRECT"
    assert pd["invalidParams"] == [{"param": param, "reason": pd["invalidParams"][0]["reason"]}]


async def test_discovery_large_limit_is_valid(api: NrfApi) -> None:
    await _put(api, make_profile("UDM"))
    for limit in ("1", "1048577", "9" * 30):
        r = await api.handle(req("GET", f"{BASE}&limit={limit}", ctype=None))
        assert r.status == 200 and len(json.loads(r.body)["nfInstances"]) == 1


# ---------------------------------------------------------------- JSON Patch bodies


async def test_patch_errors_are_problem_details(api: NrfApi, registry: Registry, schemas) -> None:
    p = make_profile(priority=1)
    await _put(api, p)
    sid = next(iter(p["nfServiceList"]))
    path = f"{LIST}/{p['nfInstanceId']}"
    bad = "INVALID_MSG_FORMAT"
    cases = [
        # a non-ASCII digit as an array index: once a ValueError, a 500 and a traceback
        ([{"op": "replace", "path": f"/nfServiceList/{sid}/ipEndPoints/\u00b2/port", "value": 1}], bad, "/0"),
        ([{"op": "replace", "path": f"/nfServiceList/{sid}/ipEndPoints/01/port", "value": 1}], bad, "/0"),
        ([{"op": "remove", "path": "/ipv4Addresses/-"}], bad, "/0"),
        ([{"op": "add", "path": "/a~2b", "value": 1}], bad, "/0/path"),
        ([{"op": "add", "path": "/a~", "value": 1}], bad, "/0/path"),
        ([{"op": "test", "path": "/priority", "value": True}], bad, "/0"),  # true is not 1
        ([{"op": "test", "path": "/priority", "value": "1"}], bad, "/0"),
        ([{"op": ["replace"], "path": "/nfStatus", "value": "REGISTERED"}], bad, "/0/op"),
        ([{"op": "add", "path": "/load", "value": 5}, {"op": "move", "path": "/x"}], bad, "/1/from"),
        # unhashable values where a set of names is expected: once a TypeError and a 500
        ([{"op": "replace", "path": "/nfStatus", "value": ["REGISTERED"]}], "MANDATORY_IE_INCORRECT", "/nfStatus"),
        ([{"op": "replace", "path": f"/nfServiceList/{sid}/scheme", "value": {"a": 1}}],
         "MANDATORY_IE_INCORRECT", f"/nfServiceList/{sid}/scheme"),
    ]
    for ops, cause, param in cases:
        r = await api.handle(req("PATCH", path, json.dumps(ops).encode(), PATCH))
        pd = _problem(r, schemas)
        assert pd["cause"] == cause and pd["invalidParams"][0]["param"] == param, (ops, pd)
    assert registry.get(p["nfInstanceId"]) == {**p, "heartBeatTimer": 2}  # nothing applied
    # the RFC's number equality: 1 == 1.0, and a passing test changes nothing
    r = await api.handle(req("PATCH", path, json.dumps(
        [{"op": "test", "path": "/priority", "value": 1.0}]).encode(), PATCH))
    assert r.status == 204
    assert registry.get(p["nfInstanceId"])["priority"] == 1


async def test_patch_bodies_json_would_let_through(api: NrfApi, schemas) -> None:
    p = make_profile()
    await _put(api, p)
    path = f"{LIST}/{p['nfInstanceId']}"
    for body in (
        b'[{"op":"replace","path":"/nfStatus","value":"REGISTERED","op":"remove"}]',  # RFC 6902 A.13
        b'[{"op":"replace","path":"/load","value":NaN}]',
        b"[" * 5000 + b"]" * 5000,
        b"[" * 100_000 + b"]" * 100_000,
    ):
        pd = _problem(await api.handle(req("PATCH", path, body, PATCH)), schemas)
        assert pd["cause"] == "INVALID_MSG_FORMAT"
    # a PUT nested past the decoder's recursion limit: 400, not a RecursionError
    deep = b'{"nfInstanceId":"' + p["nfInstanceId"].encode() + b'","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    pd = _problem(await api.handle(req("PUT", path, deep)), schemas)
    assert pd["cause"] == "INVALID_MSG_FORMAT"


async def test_subscription_patch_errors(api: NrfApi, schemas) -> None:
    r = await api.handle(req("POST", "/nnrf-nfm/v1/subscriptions", json.dumps(
        {"nfStatusNotificationUri": "http://127.0.0.1:9/n", "reqNotifEvents": ["NF_REGISTERED"]}).encode()))
    sid = json.loads(r.body)["subscriptionId"]
    path = f"/nnrf-nfm/v1/subscriptions/{sid}"
    for ops in ([{"op": "replace", "path": "/reqNotifEvents/\u00b2", "value": "NF_DEREGISTERED"}],
                [{"op": "replace", "path": "/validityTime~2", "value": "x"}]):
        pd = _problem(await api.handle(req("PATCH", path, json.dumps(ops).encode(), PATCH)), schemas)
        assert pd["cause"] == "INVALID_MSG_FORMAT" and pd["invalidParams"][0]["param"].startswith("/0")


# random patch bodies through the whole API: an answer below 500, and a ProblemDetails for 4xx

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 200) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["REGISTERED", "SUSPENDED", "UDM", "http", "TCP", "nudm-sdm", "127.0.0.1", "x", "", "01"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "sst", "op"]), c, max_size=2),
    max_leaves=6,
)
_tokens = st.sampled_from([
    "nfStatus", "nfType", "nfInstanceId", "load", "priority", "heartBeatTimer", "ipv4Addresses", "fqdn",
    "sNssais", "sst", "sd", "allowedNfTypes", "allowedNfDomains", "allowedPlmns", "mcc", "nfServiceList",
    "nudm-sdm-0", "serviceName", "scheme", "versions", "apiVersionInUri", "nfServiceStatus", "ipEndPoints",
    "ipv4Address", "port", "transport", "0", "1", "-", "01", "\u00b2", "\u0663", "~0", "~1", "~2", "~", "", "x",
])
_pointers = st.lists(_tokens, max_size=4).map(lambda t: "".join("/" + x for x in t))
_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]) | _json,
     "path": _pointers | _json},
    optional={"value": _json, "from": _pointers},
)


def _fresh_api_run(body: bytes) -> tuple[int, bytes]:
    async def run() -> tuple[int, bytes]:
        reg = Registry(RegistrySettings(heartbeat_timer_s=2, api_root="http://nrf.test:8000"),
                       MemoryStore(None), Notifier(RecordingSender(), backoff_s=0.01))
        await reg.start()
        try:
            api = NrfApi(reg)
            nf_id = str(uuid.UUID(int=7))
            p = make_profile(nf_id=nf_id, priority=1, sNssais=[{"sst": 1}])
            r = await api.handle(req("PUT", f"{LIST}/{nf_id}", json.dumps(p).encode()))
            assert r.status == 201
            r = await api.handle(req("PATCH", f"{LIST}/{nf_id}", body, PATCH))
            return r.status, r.body
        finally:
            await reg.close()

    return asyncio.run(run())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_ops, min_size=1, max_size=3))
def test_random_patches_through_the_api(ops: list, schemas) -> None:
    status, body = _fresh_api_run(json.dumps(ops).encode())
    assert status in (200, 204) or 400 <= status < 500, (status, body)
    if status >= 400:
        schemas.check(json.loads(body), COMMON, "ProblemDetails")


# ---------------------------------------------------------------- stored profiles, any shape

_WEIRD = [None, True, 0, 1.5, "", "x", [], [1], [None], [[]], {}, {"a": 1}, [{}], [{"a": []}]]
_ODD_MEMBERS = (
    [{"smfInfo": {"sNssaiSmfInfoList": w}} for w in _WEIRD]
    + [{"smfInfo": {"sNssaiSmfInfoList": [{"dnnSmfInfoList": w}]}} for w in _WEIRD]
    + [{"smfInfo": {"taiList": w}} for w in _WEIRD]
    + [{"smfInfo": {"taiList": [{"plmnId": w, "tac": w}]}} for w in _WEIRD]
    + [{"amfInfoList": {"1": {"taiList": w}}} for w in _WEIRD]
    + [{"sNssais": [{"sst": 1, "sdRanges": w}]} for w in _WEIRD]
    + [{"sNssais": [{"sst": 1, "sdRanges": [{"start": w, "end": "ffffff"}]}]} for w in _WEIRD]
)


async def test_odd_profile_members_never_break_discovery(api: NrfApi, schemas) -> None:
    """Members the registration keeps as sent (smfInfo, taiList, sdRanges...) with the wrong
    JSON type: discovery once raised on them (a 500 for every consumer while the profile
    stayed registered); now such a member matches nothing."""
    queries = [
        "", "&dnn=internet", '&tai={"plmnId":{"mcc":"001","mnc":"01"},"tac":"0001"}',
        '&snssais=[{"sst":1,"sd":"000001"}]&requester-snssais=[{"sst":1,"sd":"000001"}]',
    ]
    for extra in _ODD_MEMBERS:
        p = make_profile("SMF", services=("nsmf-pdusession",), **extra)
        path = f"{LIST}/{p['nfInstanceId']}"
        r = await api.handle(req("PUT", path, json.dumps(p).encode()))
        assert r.status in (201, 400), (extra, r.body)
        for q in queries:
            r2 = await api.handle(req("GET", f"/nnrf-disc/v1/nf-instances?target-nf-type=SMF"
                                             f"&requester-nf-type=AMF{q}", ctype=None))
            assert r2.status == 200, (extra, q, r2.body)
        await api.handle(req("DELETE", path, ctype=None))
