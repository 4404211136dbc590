"""The 3GPP side of overload protection (nf_adapters.overload_control) and what the routers
hand to admission: Message-Priority (valid and not, on both router twins), deadline
re-stamping, OCI per scope (valid, malformed, newer/older, validity 0, expiry), LCI."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

import pytest

from dataplane.admission import GO, AdmissionController, AdmissionSettings
from dataplane.routing import Forward, LocalResponse
from nf_adapters import sbi_headers as sh
from nf_adapters.overload_control import (
    OverloadResponses,
    Restamp,
    consumer_key,
    message_priority,
    scope_keys,
    scp_oci,
)
from nf_adapters.scp_router import PureScpRouter, ScpRouter

INST = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64"
OTHER = "c0a8a7f5-3a2f-4f4e-9c1d-0a4c7e1b9d11"
NOW = 1_800_000_000.0


def oci(scope: str, pct: int = 50, validity: int = 60, ts: float = NOW) -> bytes:
    when = format_datetime(dt.datetime.fromtimestamp(ts, dt.UTC), usegmt=True)
    return (f'Timestamp: "{when}"; Period-of-Validity: {validity}s; '
            f"Overload-Reduction-Metric: {pct}%; {scope}").encode()


@pytest.mark.parametrize("raw, want", [(b"0", 0), (b"7", 7), (b"31", 31)])
def test_message_priority_valid(raw: bytes, want: int) -> None:
    assert message_priority(raw) == want


@pytest.mark.parametrize("raw", [b"32", b"-1", b"07", b"", b"high", b"1.5", b"\xb2", b"\x00"])
def test_message_priority_invalid_is_a_400_problem(raw: bytes) -> None:
    resp = message_priority(raw)
    assert isinstance(resp, LocalResponse) and resp.status == 400
    assert b"OPTIONAL_IE_INCORRECT" in resp.body and b"3gpp-Sbi-Message-Priority" in resp.body


def request(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"scp"),
            (b":path", b"/nausf-auth/v1/ue-authentications"),
            (b"3gpp-sbi-target-apiroot", b"http://127.0.0.1:9000"),
            (b"user-agent", b"AMF-" + INST.encode()), *extra]


@pytest.mark.parametrize("router_cls", [ScpRouter, PureScpRouter], ids=["compiled", "pure"])
def test_routers_hand_priority_consumer_and_restamp_to_admission(router_cls) -> None:
    router = router_cls(clock=lambda: NOW)
    plain = router.route(request(), {})
    assert isinstance(plain, Forward)
    assert plain.priority == -1 and plain.consumer == b"AMF-" + INST.encode()
    assert plain.restamp is False
    ranked = router.route(request((b"3gpp-sbi-message-priority", b"3"),
                                  (b"3gpp-sbi-max-rsp-time", b"500")), {})
    assert isinstance(ranked, Forward)
    assert ranked.priority == 3 and ranked.restamp is True
    assert ranked.timeout == pytest.approx(0.5)
    bad = router.route(request((b"3gpp-sbi-message-priority", b"40")), {})
    assert isinstance(bad, LocalResponse) and bad.status == 400
    twice = router.route(request((b"3gpp-sbi-message-priority", b"3"),
                                 (b"3gpp-sbi-message-priority", b"4")), {})
    assert isinstance(twice, LocalResponse) and twice.status == 400


def test_consumer_is_the_mtls_instance_when_known() -> None:
    class Ident:
        instance_id = OTHER

    assert consumer_key({"nf_identity": Ident()}, b"AMF-x") == OTHER
    assert consumer_key({"nf_identity": None}, b"AMF-x") == b"AMF-x"
    assert consumer_key({}, None) is None


def test_anonymous_consumers_are_their_addresses() -> None:
    """Neither a mesh identity nor a User-Agent: the downstream address is the consumer, so
    a client's connections (and its reconnections) are one consumer, and two addresses two."""
    one = {"peername": ("127.0.0.1", 40001)}
    again = {"peername": ("127.0.0.1", 40002)}
    other = {"peername": ("127.0.0.2", 40001)}
    assert consumer_key(one, None) == "127.0.0.1"
    assert consumer_key(one, None) == consumer_key(again, None)
    assert consumer_key(one, None) != consumer_key(other, None)
    assert consumer_key({"nf_identity": None, "peername": ("::1", 5, 0, 0)}, None) == "::1"
    assert consumer_key(one, b"AMF-x") == b"AMF-x"  # a User-Agent still names the consumer
    assert consumer_key(None, None) is None


def test_restamp_carries_the_time_left() -> None:
    stamp = Restamp(clock=lambda: NOW + 0.25)
    headers = [(b":method", b"GET"), (b"3gpp-sbi-max-rsp-time", b"500"),
               (b"3gpp-sbi-sender-timestamp", b"Tue, 04 Feb 2020 08:49:37.845 GMT"),
               (b"x-other", b"1")]
    out = stamp(headers, 0.2494)
    assert out[:2] == [(b":method", b"GET"), (b"x-other", b"1")]
    got = dict(out[2:])
    assert sh.parse_max_rsp_time(got[b"3gpp-sbi-max-rsp-time"]) == 249
    when = sh.parse_sender_timestamp(got[b"3gpp-sbi-sender-timestamp"])
    assert when.timestamp() == pytest.approx(NOW + 0.25, abs=0.001)
    assert stamp(headers, -1.0)[-1] == (b"3gpp-sbi-max-rsp-time", b"1")


class Ex:
    def __init__(self, endpoint: str = "p1", priority: int = 20, scopes: tuple = ()) -> None:
        self.endpoint = endpoint
        self.priority = priority
        self.due = 0.0
        self.consumer = None
        self.cluster = "c"
        self.scopes = scopes
        self.done = False
        self.gate = None
        self.sent_at = -1.0


@pytest.fixture
def setup():
    clock = {"mono": 100.0, "wall": NOW}
    ctl = AdmissionController(AdmissionSettings(consumer_rate_per_s=0),
                              clock=lambda: clock["mono"])
    resp = OverloadResponses(ctl, clock=lambda: clock["wall"], monotonic=lambda: clock["mono"])
    ex = Ex()
    assert ctl.admit(ex) == GO
    return clock, ctl, resp, ex


@pytest.mark.parametrize("scope, key", [
    (f"NF-Instance: {INST}", f"nfinst:{INST}"),
    ("NF-Set: set1.region48.amfset.5gc.mnc012.mcc345", "nfset:set1.region48.amfset.5gc.mnc012.mcc345"),
    (f"NF-Service-Instance: svc1; NF-Inst: {INST}", f"nfsvcinst:{INST}/svc1"),
    ("NF-Service-Set: set2.sn.nausf-auth.nfi.ausf.5gc", "nfsvcset:set2.sn.nausf-auth.nfi.ausf.5gc"),
    ("SCP-FQDN: scp1.example.com", "scp:scp1.example.com"),
    ("SEPP-FQDN: sepp1.example.com", "sepp:sepp1.example.com"),
])
def test_oci_every_scope_is_kept_relayed_and_applied(setup, scope: str, key: str) -> None:
    clock, ctl, resp, ex = setup
    value = oci(scope, pct=40, validity=30)
    relayed = resp(ex, 200, [(b"3gpp-sbi-oci", value)])
    assert relayed == [(b"3gpp-sbi-oci", value)]
    assert resp.active() == {key: 40}
    assert ctl.scope_sheds[key][0] == pytest.approx(0.4)
    gate = ctl.gates["p1"]
    assert gate.shed_fraction == pytest.approx(0.4) and gate.shed_until == pytest.approx(130.0)
    clock["mono"] += 31
    assert resp.active() == {}


def test_consumer_side_oci_scopes_are_relayed_not_applied(setup) -> None:
    _clock, ctl, resp, ex = setup
    value = oci(f"NFC-Instance: {INST}")
    assert resp(ex, 200, [(b"3gpp-sbi-oci", value)]) == [(b"3gpp-sbi-oci", value)]
    assert resp.active() == {} and ctl.gates["p1"].shed_fraction == 0


@pytest.mark.parametrize("value", [
    b"",
    b"garbage",
    b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 60s; '
    b"Overload-Reduction-Metric: 150%; NF-Instance: " + INST.encode(),
    b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 60; '
    b"Overload-Reduction-Metric: 50%; NF-Instance: " + INST.encode(),
    b'Timestamp: "not a date"; Period-of-Validity: 60s; '
    b"Overload-Reduction-Metric: 50%; NF-Instance: " + INST.encode(),
    b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 60s; '
    b"Overload-Reduction-Metric: 50%; NF-Instance: not-a-uuid",
    b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 60s; '
    b"Overload-Reduction-Metric: 50%; Bogus-Scope: x",
    b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 60s; '
    b"Overload-Reduction-Metric: 50%",
])
def test_malformed_oci_is_dropped_and_counted(setup, value: bytes) -> None:
    _clock, ctl, resp, ex = setup
    relayed = resp(ex, 200, [(b"3gpp-sbi-oci", value), (b"x-keep", b"1")])
    assert relayed == [(b"x-keep", b"1")]
    assert resp.malformed["oci"] == 1 and resp.active() == {}
    assert ctl.gates["p1"].shed_fraction == 0


def test_newer_oci_replaces_older_is_ignored_zero_validity_ends(setup) -> None:
    clock, ctl, resp, ex = setup
    scope = f"NF-Instance: {INST}"
    resp(ex, 200, [(b"3gpp-sbi-oci", oci(scope, 30, 60, ts=NOW - 10))])
    resp(ex, 200, [(b"3gpp-sbi-oci", oci(scope, 70, 60, ts=NOW - 20))])  # older: ignored
    assert resp.active() == {f"nfinst:{INST}": 30}
    resp(ex, 200, [(b"3gpp-sbi-oci", oci(scope, 60, 60, ts=NOW - 5))])  # newer: replaces
    assert resp.active() == {f"nfinst:{INST}": 60}
    resp(ex, 200, [(b"3gpp-sbi-oci", oci(scope, 60, 0, ts=NOW - 1))])  # validity 0: over
    assert resp.active() == {} and ctl.gates["p1"].shed_fraction == 0


def test_oci_validity_counts_from_its_timestamp(setup) -> None:
    clock, _ctl, resp, ex = setup
    resp(ex, 200, [(b"3gpp-sbi-oci", oci(f"NF-Instance: {INST}", 50, 60, ts=NOW - 50))])
    clock["mono"] += 9
    assert resp.active()
    clock["mono"] += 2  # 61 s after its timestamp
    assert resp.active() == {}


def test_lci_updates_loads_and_malformed_lci_is_dropped(setup) -> None:
    _clock, _ctl, resp, ex = setup
    when = format_datetime(dt.datetime.fromtimestamp(NOW, dt.UTC), usegmt=True)
    good = f'Timestamp: "{when}"; Load-Metric: 70%; NF-Instance: {INST}'.encode()
    relayed = resp(ex, 200, [(b"3gpp-sbi-lci", good), (b"3gpp-sbi-lci", b"Load-Metric: 5%")])
    assert relayed == [(b"3gpp-sbi-lci", good)]
    assert resp.loads[INST][0] == 70 and resp.malformed["lci"] == 1
    version = resp.loads_version
    assert version >= 1


def test_scope_keys_match_what_the_oci_scopes_become() -> None:
    keys = scope_keys(INST.upper(), ("set1",), "svc1", ("sset",))
    assert keys == (f"nfinst:{INST}", "nfset:set1", f"nfsvcinst:{INST}/svc1", "nfsvcset:sset")


def test_own_oci_parses_per_the_abnf() -> None:
    parsed = sh.parse_oci(scp_oci("scp.example.com", 40, 5, clock=lambda: NOW))
    assert len(parsed) == 1
    e = parsed[0]
    assert e.reduction_pct == 40 and e.validity_s == 5
    assert e.scope.kind == "SCP-FQDN" and e.scope.value == "scp.example.com"
