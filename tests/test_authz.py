"""Authorisation by NF type (nf_adapters/authz.py): service names from :path, the policy's
decisions, config validation, and the Router wrapper's 403 ProblemDetails.  The end-to-end case
over mTLS with curl is in tests/test_mtls.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.routing import Endpoint, Forward, LocalResponse
from gateway.identity import peer_nf_type, peer_nf_types
from nf_adapters.authz import CAUSE, NfTypeAuthzRouter, NfTypePolicy, service_of
from nf_adapters.problem_details import decode_problem

AMF_ID = "6b2f5a2e-0c1d-4a53-9d3e-8d3a7c1e9f01"


@pytest.mark.parametrize("path, service", [
    (b"/nudm-sdm/v2/imsi-001010000000001/am-data", "nudm-sdm"),
    (b"/nudm-sdm/v2?x=1", "nudm-sdm"),
    (b"/deployment-1/nudm-sdm/v2/imsi-1", "nudm-sdm"),  # apiRoot with a prefix
    (b"/npcf-smpolicycontrol/v1/sm-policies", "npcf-smpolicycontrol"),
    (b"/oauth2/token", "oauth2"),
    (b"/nnrf-disc/v1/nf-instances?target-nf-type=UDM", "nnrf-disc"),
    (b"/nudm-sdm/imsi-1", None),  # no version segment
    (b"/", None),
    (b"", None),
    (b"/a/b/c/d/e/f/g/h/i/nudm-sdm/v2", None),  # past the scanned segments
    (b"/NUDM-SDM/v2", None),
])
def test_service_of(path, service):
    assert service_of(path) == service


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_service_of_takes_any_bytes(path):
    result = service_of(path)
    assert result is None or result.encode() in path


def reference_service_of(path: bytes) -> str | None:
    """The rule, written plainly: first service-shaped segment (within 8) before a version."""
    import re

    segments = path.split(b"?", 1)[0].split(b"/")
    if not path.startswith(b"/"):
        return None
    segments = segments[1:]
    for i, seg in enumerate(segments[:8]):
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        if seg == b"oauth2" and nxt == b"token":
            return "oauth2"
        if re.fullmatch(rb"n[a-z0-9]+-[a-z0-9-]+", seg) and nxt is not None and \
                re.fullmatch(rb"v[0-9]+", nxt):
            return seg.decode()
    return None


_segment = st.sampled_from([b"nudm-sdm", b"v2", b"v", b"oauth2", b"token", b"imsi-1", b"",
                            b"npcf-am-policy-control", b"x?y", b"N-x", b"v1?a=b"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_segment, max_size=12))
def test_service_of_matches_the_plain_rule(segments):
    path = b"/" + b"/".join(segments)
    assert service_of(path) == reference_service_of(path)


POLICY = NfTypePolicy({
    "nudm-sdm": ["AMF", "SMF", "SMSF"],
    "nnrf-disc": ["*"],
    "oauth2": ["*"],
}, default_allow=False)


@pytest.mark.parametrize("nf_type, service, allowed", [
    ("AMF", "nudm-sdm", True),
    ("SMF", "nudm-sdm", True),
    ("PCF", "nudm-sdm", False),
    (None, "nudm-sdm", False),           # unidentified caller
    (None, "nnrf-disc", True),           # '*': anyone
    ("AUSF", "oauth2", True),
    ("AMF", "npcf-am-policy-control", False),  # no rule, default deny
    ("AMF", None, False),
])
def test_policy_decisions(nf_type, service, allowed):
    assert POLICY.allows(nf_type, service) is allowed


def test_several_certified_types_any_one_allowed_suffices():
    assert POLICY.allows(("PCF", "SMF"), "nudm-sdm")
    assert not POLICY.allows(("PCF", "UPF"), "nudm-sdm")
    assert not POLICY.allows((), "nudm-sdm")
    router = NfTypeAuthzRouter(Inner(), POLICY, lambda peer: ("PCF", "UPF"))
    denied = router.route(request(b"/nudm-sdm/v2/x"), {})
    assert decode_problem(denied.body).detail == "NF types PCF, UPF may not call service nudm-sdm"
    router = NfTypeAuthzRouter(Inner(), POLICY, peer_nf_types)
    assert isinstance(router.route(request(b"/nudm-sdm/v2/x"), peer("SMF")), Forward)
    assert router.route(request(b"/nudm-sdm/v2/x"), peer(None)).status == 403


def test_default_allow_only_applies_without_a_rule():
    policy = NfTypePolicy({"nudm-sdm": ["AMF"]}, default_allow=True)
    assert policy.allows(None, "nausf-auth") and policy.allows("PCF", None)
    assert not policy.allows("PCF", "nudm-sdm")


def test_from_mapping_reports_every_bad_entry():
    policy = NfTypePolicy.from_mapping({"default": "allow", "services": {"nudm-sdm": ["AMF"]}})
    assert policy.default_allow and policy.rules == {"nudm-sdm": frozenset({"AMF"})}
    assert NfTypePolicy.from_mapping({}).default_allow is False
    with pytest.raises(ValueError) as err:
        NfTypePolicy.from_mapping({"services": {"nudm-sdm": ["AMF", "WIFI"], "udm": ["AMF"],
                                                "nausf-auth": "AMF"}})
    text = str(err.value)
    assert "unknown NF type(s) WIFI" in text and "services.udm" in text
    assert "services.nausf-auth: must be a list" in text
    with pytest.raises(ValueError, match="allow or deny"):
        NfTypePolicy.from_mapping({"default": "maybe"})
    with pytest.raises(ValueError, match="unknown key"):
        NfTypePolicy.from_mapping({"rules": {}})


class Inner:
    """Forwards everything (or declines /other/... when asked with try_route)."""

    def __init__(self) -> None:
        self.calls = 0

    def try_route(self, headers, peer):
        self.calls += 1
        if dict(headers)[b":path"].startswith(b"/other"):
            return None
        return Forward(Endpoint("127.0.0.1", 1), list(headers))

    def route(self, headers, peer):
        return self.try_route(headers, peer) or LocalResponse(404)


def request(path: bytes):
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"scp"),
            (b":path", path), (b"user-agent", b"AMF-1")]


def peer(nf_type: str | None) -> dict:
    if nf_type is None:
        return {"peercert": {}}
    return {"peercert": {"subject": ((("organizationalUnitName", nf_type),),),
                         "subjectAltName": (("URI", f"urn:uuid:{AMF_ID}"),)}}


def test_router_wrapper_forwards_allowed_and_denies_with_problem_details():
    inner = Inner()
    router = NfTypeAuthzRouter(inner, POLICY, peer_nf_type)
    assert isinstance(router.route(request(b"/nudm-sdm/v2/imsi-1/am-data"), peer("AMF")), Forward)
    denied = router.route(request(b"/nudm-sdm/v2/imsi-1/am-data"), peer("PCF"))
    assert isinstance(denied, LocalResponse) and denied.status == 403
    assert dict(denied.headers)[b"content-type"] == b"application/problem+json"
    body = decode_problem(denied.body)
    assert body.status == 403 and body.cause == CAUSE
    assert "NF type PCF may not call service nudm-sdm" == body.detail
    assert inner.calls == 1  # a denied request never reached routing
    anon = router.route(request(b"/nudm-sdm/v2/x"), peer(None))
    assert anon.status == 403 and "without an NF identity" in decode_problem(anon.body).detail
    assert isinstance(router.route(request(b"/nnrf-disc/v1/nf-instances"), peer(None)), Forward)


def test_try_route_declines_what_inner_declines():
    router = NfTypeAuthzRouter(Inner(), POLICY, peer_nf_type)
    assert router.try_route(request(b"/other/nudm-sdm/v2"), peer("PCF")) is None
    assert router.try_route(request(b"/nudm-sdm/v2/x"), peer("PCF")).status == 403
    assert isinstance(router.try_route(request(b"/nudm-sdm/v2/x"), peer("SMF")), Forward)
