"""Discovery parameters (query string and 3gpp-Sbi-Discovery-* headers) and profile matching."""

from __future__ import annotations

import json

import pytest

from gateway.nrf_api import NrfApi
from nf_adapters.discovery import (
    DiscoveryError,
    Snssai,
    Tai,
    parse_discovery_headers,
    parse_query,
    profile_matches,
)
from tests.registry.conftest import make_profile, req


def test_query_parsing_typed() -> None:
    q = parse_query('target-nf-type=SMF&requester-nf-type=AMF&service-names=nsmf-pdusession,nsmf-event'
                    '&snssais=%5B%7B%22sst%22%3A1%2C%22sd%22%3A%22ABCDEF%22%7D%5D&dnn=internet'
                    '&tai={"plmnId":{"mcc":"001","mnc":"01"},"tac":"00AB01"}&limit=3&max-payload-size=10')
    assert q.service_names == ("nsmf-pdusession", "nsmf-event")
    assert q.snssais == (Snssai(1, "abcdef"),)
    assert q.tai == Tai("001", "01", "00ab01")
    assert (q.dnn, q.limit, q.max_payload_size) == ("internet", 3, 10)
    q = parse_query("target-nf-type=UDM&requester-nf-type=AMF&service-names=a&service-names=b")
    assert q.service_names == ("a", "b")


@pytest.mark.parametrize("query, param", [
    ("target-nf-type=UDM&requester-nf-type=AMF&tai=[1]", "tai"),
    ('target-nf-type=UDM&requester-nf-type=AMF&snssais=[{"sst":1,"sd":"xyz"}]', "snssais"),
    ("target-nf-type=UDM&requester-nf-type=AMF&max-payload-size=5000", "max-payload-size"),
    ("target-nf-type=UDM&requester-nf-type=AMF&service-names=" + ",".join(f"s{i}" for i in range(65)),
     "service-names"),
    ("target-nf-type=UDM&requester-nf-type=AMF&dnn=" + "x" * 5000, "dnn"),
])
def test_bad_parameters_name_the_parameter(query: str, param: str) -> None:
    with pytest.raises(DiscoveryError) as ei:
        parse_query(query)
    assert ei.value.param == param


def test_headers_with_user_agent_requester() -> None:
    h = [(b":path", b"/x"), (b"user-agent", b"SMF-open5gs"), (b"3gpp-sbi-discovery-target-nf-type", b"UDM"),
         (b"3gpp-sbi-discovery-snssais", b'[{"sst": 1}]')]
    q = parse_discovery_headers(h)
    assert q is not None and q.requester_nf_type == "SMF" and q.snssais == (Snssai(1),)
    assert parse_discovery_headers([(b"user-agent", b"AMF")]) is None
    q = parse_discovery_headers([(b"3gpp-sbi-discovery-target-nf-type", b"SMF"),
                                 (b"3gpp-sbi-discovery-snssais", b"%5B%7B%22sst%22%3A2%7D%5D")])
    assert q is not None and q.snssais == (Snssai(2),) and q.requester_nf_type is None


def test_matching_slices_ranges_wildcards_tai_domains() -> None:
    p = make_profile("SMF", services=("nsmf-pdusession",), sNssais=[
        {"sst": 1, "sdRanges": [{"start": "000100", "end": "0001ff"}]}, {"sst": 2, "wildcardSd": True}],
        smfInfo={"sNssaiSmfInfoList": [{"sNssai": {"sst": 1}, "dnnSmfInfoList": [{"dnn": "internet"}]}],
                 "taiList": [{"plmnId": {"mcc": "001", "mnc": "01"}, "tac": "000001"}]},
        allowedNfDomains=[r".*\.operator\.com"])
    base = "target-nf-type=SMF&requester-nf-type=AMF&requester-nf-instance-fqdn=amf1.operator.com"
    assert profile_matches(p, parse_query(base + '&snssais=[{"sst":1,"sd":"000150"}]'))
    assert not profile_matches(p, parse_query(base + '&snssais=[{"sst":1,"sd":"000250"}]'))
    assert profile_matches(p, parse_query(base + '&snssais=[{"sst":2,"sd":"123456"}]'))
    assert profile_matches(p, parse_query(base + "&dnn=internet"))
    assert not profile_matches(p, parse_query(base + "&dnn=ims"))
    assert profile_matches(p, parse_query(base + '&tai={"plmnId":{"mcc":"001","mnc":"01"},"tac":"000001"}'))
    assert not profile_matches(p, parse_query(base + '&tai={"plmnId":{"mcc":"001","mnc":"01"},"tac":"000002"}'))
    assert not profile_matches(p, parse_query("target-nf-type=SMF&requester-nf-type=AMF"
                                              "&requester-nf-instance-fqdn=amf1.evil.org"))
    home = make_profile("UDM", allowedPlmns=[{"mcc": "001", "mnc": "01"}])
    assert profile_matches(home, parse_query('target-nf-type=UDM&requester-nf-type=AMF'
                                             '&requester-plmn-list=[{"mcc":"001","mnc":"01"}]'))
    assert not profile_matches(home, parse_query('target-nf-type=UDM&requester-nf-type=AMF'
                                                 '&requester-plmn-list=[{"mcc":"999","mnc":"99"}]'))


async def test_api_discovery_follows_changes_and_payload_limit(api: NrfApi) -> None:
    path = "/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF"

    async def ids(q: str = "") -> list[str]:
        r = await api.handle(req("GET", path + q, ctype=None))
        return [i["nfInstanceId"] for i in json.loads(r.body)["nfInstances"]]

    assert await ids() == []
    big = [make_profile("UDM", nfInstanceName="x" * 3000) for _ in range(5)]
    for p in big:
        await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
    assert len(await ids()) == 5  # the cached empty answer was dropped with the change
    assert 1 <= len(await ids("&max-payload-size=7")) < 5  # 7 kB holds two 3 kB profiles
    await api.handle(req("DELETE", f"/nnrf-nfm/v1/nf-instances/{big[0]['nfInstanceId']}", ctype=None))
    assert len(await ids()) == 4


async def test_heartbeat_with_load_updates_without_notifying(api: NrfApi, registry, sender) -> None:
    await registry.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n"})
    p = make_profile("AMF", services=("namf-comm",), load=10)
    await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
    n = len(sender.sent) + registry.notifier.pending
    r = await api.handle(req("PATCH", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(
        [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}, {"op": "replace", "path": "/load", "value": 70}]
    ).encode(), "application/json-patch+json"))
    assert r.status == 204
    assert registry.get(p["nfInstanceId"])["load"] == 70
    assert len(sender.sent) + registry.notifier.pending == n  # load reports are not profile changes
    # a load outside 0..100 is refused by the full validation
    r = await api.handle(req("PATCH", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(
        [{"op": "replace", "path": "/load", "value": 170}]).encode(), "application/json-patch+json"))
    assert r.status == 400 and json.loads(r.body)["invalidParams"][0]["param"] == "/load"
