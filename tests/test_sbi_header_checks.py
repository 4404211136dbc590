"""3gpp-Sbi headers checked against the TS 29.500 ABNF before forwarding, and model D discovery
parameters against their TS 29.510 schema (issue 13, item 4): an invalid one gets 400
ProblemDetails with a cause and invalidParams and is never forwarded, on both router twins
(pure and compiled), on model C (first sight and cached target), static routes and model D."""

from __future__ import annotations

import json
import random

import pytest

from dataplane.routing import Endpoint, Forward, LocalResponse
from nf_adapters import sbi_headers as sh
from nf_adapters.model_d import ModelDRouter, build_snapshot
from nf_adapters.scp_router import (
    ClusterSpec,
    PureScpRouter,
    RouteSpec,
    RouteTable,
    load_scp_router,
)
from tests.registry.conftest import make_profile

try:  # the router on the compiled base (nf_adapters._scp_fast: scp_model_c.py compiled)
    FastScpRouter = load_scp_router("cython")
except ImportError:  # pragma: no cover - depends on the build
    FastScpRouter = None

UUID = "54804518-4191-46b3-955c-ac631f953ed8"

VALID = [
    (b"3gpp-sbi-routing-binding", f"bl=nf-instance; nfinst={UUID}".encode()),
    (b"3gpp-sbi-routing-binding", b"bl=nfservice-set; nfset=set1.udmset.5gc; servname=nudm-sdm"),
    (b"3gpp-sbi-target-nf-id", f"nfinst={UUID}".encode()),
    (b"3gpp-sbi-target-nf-id", f"nfinst={UUID}; nfservinst=sdm-1".encode()),
    (b"3gpp-sbi-originating-network-id", b"001-01"),
    (b"3gpp-sbi-originating-network-id", b"310-410-0123456789a; src: SEPP-sepp1.example.org"),
]
INVALID = [
    (b"3gpp-sbi-routing-binding", b""),  # empty
    (b"3gpp-sbi-routing-binding", b"bl=; nfinst=" + UUID.encode()),  # empty binding level
    (b"3gpp-sbi-routing-binding", b"bl=nf-cluster; nfinst=" + UUID.encode()),  # bad level
    (b"3gpp-sbi-routing-binding", b"bl=nf-instance"),  # no parameter
    (b"3gpp-sbi-routing-binding", b"bl=nf-set; nfset=a b"),  # not a token
    (b"3gpp-sbi-routing-binding", b"bl=nf-set; colour=blue"),  # unknown parameter
    (b"3gpp-sbi-target-nf-id", b"nfinst=not-a-uuid"),
    (b"3gpp-sbi-target-nf-id", b"nfservinst=x"),
    (b"3gpp-sbi-target-nf-id", f"nfinst={UUID}; nfset=x".encode()),
    (b"3gpp-sbi-originating-network-id", b"001-1"),
    (b"3gpp-sbi-originating-network-id", b"01-001"),
    (b"3gpp-sbi-originating-network-id", b"001-01-12"),
    (b"3gpp-sbi-originating-network-id", b"001-01; src: NRF-nrf1.example.org"),
    (b"3gpp-sbi-originating-network-id", "001-0١".encode()),  # a non-ASCII digit
]
NAMES = {b"3gpp-sbi-routing-binding": "3gpp-Sbi-Routing-Binding",
         b"3gpp-sbi-target-nf-id": "3gpp-Sbi-Target-Nf-Id",
         b"3gpp-sbi-originating-network-id": "3gpp-Sbi-Originating-Network-Id"}


@pytest.mark.parametrize("field", VALID)
def test_valid_values_parse(field):
    assert sh.first_invalid_header([field]) is None


@pytest.mark.parametrize("field", INVALID)
def test_invalid_values_are_named(field):
    err = sh.first_invalid_header([(b"accept", b"*/*"), field])
    assert err is not None and err.header == NAMES[field[0]]


def test_a_repeated_checked_header_is_invalid():
    field = VALID[2]
    assert sh.first_invalid_header([field, field]).reason == "header repeated"


def test_originating_network_id_fields():
    v = sh.parse_originating_network_id(b" 310-410-0123456789a; src: SCP-scp1.example.org ")
    assert (v.mcc, v.mnc, v.nid, v.src_type, v.src_fqdn) == (
        "310", "410", "0123456789a", "SCP", "scp1.example.org")


# ------------------------------------------------------------------------- the SCP router twins

@pytest.fixture(params=["pure", "cython"])
def scp_cls(request):
    cls = PureScpRouter if request.param == "pure" else FastScpRouter
    if cls is None:
        pytest.skip("nf_adapters._scp_fast is not built")
    return cls


def _req(extra=(), path=b"/nudm-sdm/v2/imsi-001010000000001/am-data") -> list:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"scp.5gc:80"),
            (b":path", path), (b"user-agent", b"AMF-amf1"), *extra]


def _problem(resp, header: str) -> None:
    assert isinstance(resp, LocalResponse) and resp.status == 400
    assert dict(resp.headers)[b"content-type"] == b"application/problem+json"
    body = json.loads(resp.body)
    assert body["cause"] == "OPTIONAL_IE_INCORRECT"
    assert [p["param"] for p in body["invalidParams"]] == [header]


TARGET = (b"3gpp-sbi-target-apiroot", b"http://10.0.0.9:8080")


@pytest.mark.parametrize("field", INVALID)
def test_model_c_refuses_invalid_header_first_sight_and_cached(scp_cls, field):
    r = scp_cls(RouteTable(), via_name="scp1")
    _problem(r.route(_req([TARGET, field]), {}), NAMES[field[0]])
    # the target is cached now (the compiled twin's fast case): still refused
    assert isinstance(r.route(_req([TARGET]), {}), Forward)
    _problem(r.route(_req([TARGET, field]), {}), NAMES[field[0]])
    _problem(r.route(_req([TARGET, field]), {}), NAMES[field[0]])


@pytest.mark.parametrize("field", VALID)
def test_model_c_forwards_valid_header_unchanged(scp_cls, field):
    r = scp_cls(RouteTable(), via_name="scp1")
    for _ in range(2):  # first sight, then the cached target
        d = r.route(_req([TARGET, field]), {})
        assert isinstance(d, Forward) and field in d.headers


@pytest.mark.parametrize("field", INVALID[:4] + INVALID[6:7] + INVALID[9:10])
def test_static_route_refuses_invalid_header(scp_cls, field):
    table = RouteTable([ClusterSpec("udm", (Endpoint("10.0.0.1", 80),))],
                       [RouteSpec("udm", "/nudm-", "udm")])
    r = scp_cls(table, via_name="scp1")
    assert isinstance(r.route(_req(), {}), Forward)
    _problem(r.route(_req([field]), {}), NAMES[field[0]])


def test_twins_agree_on_every_case():
    if FastScpRouter is None:
        pytest.skip("nf_adapters._scp_fast is not built")
    pure, fast = PureScpRouter(RouteTable(), via_name="s"), FastScpRouter(RouteTable(), via_name="s")
    for field in VALID + INVALID:
        for _ in range(2):
            a, b = pure.route(_req([TARGET, field]), {}), fast.route(_req([TARGET, field]), {})
            assert type(a) is type(b)
            if isinstance(a, LocalResponse):
                assert (a.status, a.body) == (b.status, b.body)
            else:
                assert a.headers == b.headers


# ------------------------------------------------------------------------- model D

def _model_d() -> ModelDRouter:
    p = make_profile("UDM", ip="10.0.0.7")
    return ModelDRouter(build_snapshot([(p, p["nfStatus"])]), rng=random.Random(1))


DISC = (b"3gpp-sbi-discovery-target-nf-type", b"UDM")


@pytest.mark.parametrize("field", INVALID)
def test_model_d_refuses_invalid_header(field):
    _problem(_model_d().route(_req([DISC, field]), {}), NAMES[field[0]])


@pytest.mark.parametrize("name, value", [
    ("snssais", '{"sst": 1}'),  # an object, not an array
    ("snssais", "[]"),
    ("requester-snssais", '{"sst": 1, "sd": "000001"}'),
    ("service-names", ","),  # comma only
    ("service-names", ""),
    ("service-names", "nudm-sdm,,nudm-uecm"),  # an empty item
    ("guami", '{"plmnId": {"mcc": "001", "mnc": "01"}, "amfId": "xyz"}'),
    ("guami", '{"plmnId": {"mcc": "1", "mnc": "01"}, "amfId": "010203"}'),
    ("guami", '{"amfId": "010203"}'),
    ("guami", '["010203"]'),
    ("requester-plmn-list", '[{"mcc": "001", "mnc": "1"}]'),
    ("requester-plmn-list", '[{"mcc": "0011", "mnc": "01"}]'),
    ("requester-plmn-list", '{"mcc": "001", "mnc": "01"}'),
    ("requester-plmn-list", "[]"),
    ("tai", '{"plmnId": {"mcc": "00a", "mnc": "01"}, "tac": "0001"}'),
])
def test_model_d_refuses_discovery_params_breaking_their_schema(name, value):
    resp = _model_d().route(_req([DISC, (b"3gpp-sbi-discovery-" + name.encode(),
                                         value.encode())]), {})
    assert isinstance(resp, LocalResponse) and resp.status == 400
    body = json.loads(resp.body)
    assert body["cause"] == "INVALID_DISCOVERY_PARAM"
    assert [p["param"] for p in body["invalidParams"]] == [f"3gpp-Sbi-Discovery-{name}"]


@pytest.mark.parametrize("name, value", [
    ("snssais", '[{"sst": 1}]'),
    ("service-names", "nudm-sdm"),
    ("guami", '{"plmnId": {"mcc": "001", "mnc": "01"}, "amfId": "0a0b0c"}'),
    ("requester-plmn-list", '[{"mcc": "001", "mnc": "01"}, {"mcc": "310", "mnc": "410"}]'),
])
def test_model_d_accepts_valid_discovery_params(name, value):
    d = _model_d().route(_req([DISC, (b"3gpp-sbi-discovery-" + name.encode(),
                                      value.encode())]), {})
    assert isinstance(d, Forward), getattr(d, "body", d)
