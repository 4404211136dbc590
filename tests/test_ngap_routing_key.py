"""The NGAP fast path (Cython and its pure twin) against pycrate, the independent oracle.

Messages are encoded by pycrate with hypothesis-chosen ids; both twins must read the same
routing key that pycrate's full decode gives, rewrite ids into messages pycrate decodes to the
new ids with everything else unchanged, and refuse damaged input with NgapDecodeError only.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nf_adapters.ngap import codec as c
from nf_adapters.ngap import routing_key as pure
from nf_adapters.ngap.routing_key import NONE, NgapDecodeError

try:
    from nf_adapters import _ngap_fast as fast
except ImportError:  # pragma: no cover - the build failed; the pure twin is still tested
    fast = None

TWINS = [pure] + ([fast] if fast else [])
TWIN_IDS = ["pure"] + (["cython"] if fast else [])

PLMN = c.plmn_bytes("001", "01")
ran_ids = st.integers(0, 2**32 - 1)
amf_ids = st.integers(0, 2**40 - 1)
HSET = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle_key(data: bytes) -> tuple:
    """The routing key from pycrate's full decode."""
    m = c.decode(data)
    ies = m.ies
    ran = ies.get(c.IE_RAN_UE_NGAP_ID, NONE)
    amf = ies.get(c.IE_AMF_UE_NGAP_ID, NONE)
    if c.IE_UE_NGAP_IDS in ies:
        kind, v = ies[c.IE_UE_NGAP_IDS]
        if kind == "uE-NGAP-ID-pair":
            amf, ran = v["aMF-UE-NGAP-ID"], v["rAN-UE-NGAP-ID"]
        else:
            amf = v
    set_id = pointer = tmsi = region = NONE
    if c.IE_FIVEG_S_TMSI in ies:
        t = ies[c.IE_FIVEG_S_TMSI]
        set_id, pointer = t["aMFSetID"][0], t["aMFPointer"][0]
        tmsi = int.from_bytes(t["fiveG-TMSI"], "big")
    if c.IE_GUAMI in ies:
        g = c.Guami.from_value(ies[c.IE_GUAMI])
        region = g.region_id
        if set_id == NONE:
            set_id, pointer = g.set_id, g.pointer
    if c.IE_AMF_SET_ID in ies and set_id == NONE:
        set_id = ies[c.IE_AMF_SET_ID][0]
    return (m.pdu_type, m.procedure_code, ran, amf, set_id, pointer, tmsi, region)


def message_mix(ran: int, amf: int, tmsi: int = 0xC0FFEE01, set_id: int = 5) -> list[bytes]:
    guami = c.Guami(PLMN, 0x80, set_id, 3)
    nas = bytes(range(40))
    return [
        c.initial_ue_message(ran, nas, PLMN),
        c.initial_ue_message(ran, nas, PLMN, s_tmsi=(set_id, 7, tmsi)),
        c.initial_ue_message(ran, nas, PLMN, amf_set_id=set_id),
        c.downlink_nas(amf, ran, nas),
        c.uplink_nas(amf, ran, nas * 3, PLMN),  # > 127 bytes: two-byte length
        c.initial_context_setup_request(amf, ran, guami, nas),
        c.initial_context_setup_response(amf, ran),
        c.ue_context_release_command(amf, ran),
        c.ue_context_release_command(amf, None),
        c.ue_context_release_complete(amf, ran),
        c.ue_context_release_request(amf, ran),
        c.error_indication(("radioNetwork", "unknown-local-UE-NGAP-ID"), amf, ran),
        c.error_indication(("protocol", "transfer-syntax-error")),
        c.ng_setup_request(1, PLMN, name="gnb"),
        c.ng_setup_response("amf", [guami], 50, [PLMN]),
        c.ng_setup_failure(("misc", "unspecified")),
        c.overload_start(reduction_percent=30),
        c.overload_stop(),
    ]


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_fixed_mix_matches_pycrate(twin) -> None:
    for ran, amf in [(0, 0), (255, 256), (65536, 2**32), (2**32 - 1, 2**40 - 1)]:
        for msg in message_mix(ran, amf):
            assert twin.extract(msg) == oracle_key(msg), c.decode(msg).name


@HSET
@given(ran=ran_ids, amf=amf_ids, tmsi=st.integers(0, 2**32 - 1), set_id=st.integers(0, 1023))
def test_twins_agree_with_pycrate_on_generated_ids(ran: int, amf: int, tmsi: int,
                                                   set_id: int) -> None:
    for msg in message_mix(ran, amf, tmsi, set_id):
        want = oracle_key(msg)
        for twin in TWINS:
            assert twin.extract(msg) == want


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ran=ran_ids, amf=amf_ids, new_ran=ran_ids, new_amf=amf_ids)
def test_rewrite_ids_matches_pycrate(ran: int, amf: int, new_ran: int, new_amf: int) -> None:
    for msg in message_mix(ran, amf):
        before = c.decode(msg)
        for twin in TWINS:
            out = twin.rewrite_ue_ids(msg, new_ran, new_amf)
            after = c.decode(out)  # pycrate must accept the spliced encoding
            key = oracle_key(out)
            old = oracle_key(msg)
            assert key[:2] == old[:2]
            assert key[2] == (new_ran if old[2] != NONE else NONE)
            assert key[3] == (new_amf if old[3] != NONE else NONE)
            assert key[4:] == old[4:]
            # every other IE is untouched
            for ie, v in before.ies.items():
                if ie not in (c.IE_RAN_UE_NGAP_ID, c.IE_AMF_UE_NGAP_ID, c.IE_UE_NGAP_IDS):
                    assert after.ies[ie] == v
            assert twin.extract(out) == key


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_rewrite_leaves_one_id_alone(twin) -> None:
    msg = c.downlink_nas(77, 99, b"nas")
    assert oracle_key(twin.rewrite_ue_ids(msg, 5, -1))[2:4] == (5, 77)
    assert oracle_key(twin.rewrite_ue_ids(msg, -1, 2**40 - 1))[2:4] == (99, 2**40 - 1)
    assert twin.rewrite_ue_ids(msg, -1, -1) == msg
    with pytest.raises(ValueError):
        twin.rewrite_ue_ids(msg, 2**32, -1)


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_every_truncation_is_refused_cleanly(twin) -> None:
    for msg in message_mix(1234, 98765):
        for cut in range(len(msg)):
            with pytest.raises(NgapDecodeError):
                twin.extract(msg[:cut])
            with pytest.raises(NgapDecodeError):
                twin.rewrite_ue_ids(msg[:cut], 1, 1)


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_bad_headers_are_refused(twin) -> None:
    good = c.downlink_nas(1, 2, b"x")
    for bad in (b"", b"\x80" + good[1:], b"\x60" + good[1:], good[:2] + b"\xc0" + good[3:],
                good[:3] + b"\xc0\x00" + good[4:]):
        with pytest.raises(NgapDecodeError):
            twin.extract(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_twins_agree_on_arbitrary_bytes(data: bytes) -> None:
    results = []
    for twin in TWINS:
        try:
            results.append(("ok", twin.extract(data)))
        except NgapDecodeError as exc:
            results.append(("error", type(exc)))
    assert all(r == results[0] for r in results)


_MUTATION_BASE = [m for ids in ((0, 1), (300, 70000), (2**32 - 1, 2**40 - 1))
                  for m in message_mix(*ids)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_twins_agree_on_mutated_messages(data) -> None:
    msgs = _MUTATION_BASE
    msg = bytearray(data.draw(st.sampled_from(msgs)))
    i = data.draw(st.integers(0, len(msg) - 1))
    msg[i] = data.draw(st.integers(0, 255))
    results = []
    for twin in TWINS:
        try:
            results.append(("ok", twin.extract(bytes(msg)), twin.rewrite_ue_ids(bytes(msg), 7, 9)))
        except NgapDecodeError:
            results.append(("error",))
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_out_of_range_ids_are_refused_whatever_the_message(twin) -> None:
    """An id beyond its range is the caller's error even where the message does not carry that
    id (the compiled twin refused it up front, the pure one only when encoding it)."""
    setup = c.ng_setup_request(1, PLMN, name="gnb")  # no UE ids at all
    for ran, amf in ((2**32, -1), (-1, 2**40), (2**32, 2**40)):
        with pytest.raises(ValueError, match="out of range"):
            twin.rewrite_ue_ids(setup, ran, amf)
    assert twin.rewrite_ue_ids(setup, 2**32 - 1, 2**40 - 1) is setup  # nothing to replace


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_only_bytes_are_read(twin) -> None:
    msg = c.downlink_nas(77, 99, b"nas")
    for other in (bytearray(msg), memoryview(msg), None):
        with pytest.raises(TypeError):
            twin.extract(other)
        with pytest.raises(TypeError):
            twin.rewrite_ue_ids(other, 1, 2)


def test_loader_choices_and_one_source(monkeypatch) -> None:
    import nf_adapters.ngap as ngap

    monkeypatch.delenv("NFMESH_NGAP_KEYS", raising=False)
    assert ngap.load_routing_keys("pure") == (pure.extract, pure.rewrite_ue_ids)
    with pytest.raises(ValueError, match="unknown NGAP routing key implementation"):
        ngap.load_routing_keys("rust")
    if fast is None:
        assert not ngap.FAST and ngap.extract is pure.extract
        return
    assert ngap.FAST and (ngap.extract, ngap.rewrite_ue_ids) == fast.FUNCTIONS
    assert ngap.load_routing_keys("cython") == (fast.extract, fast.rewrite_ue_ids)
    monkeypatch.setenv("NFMESH_NGAP_KEYS", "pure")
    assert ngap.load_routing_keys()[0] is pure.extract
    # the compiled twin is routing_key.py compiled: same docs, the same error class
    assert fast.__file__.endswith(".so")
    assert fast.extract.__doc__ == pure.extract.__doc__
    assert fast.NgapDecodeError is NgapDecodeError
