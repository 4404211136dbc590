"""Templates stamped by the fast path must equal pycrate's own encoding of the same values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.templates import NAS_LEN, UeTemplates, find_nas, nas_tag

PLMN = c.plmn_bytes("001", "01")
GUAMI = c.Guami(PLMN, 7, 9, 11)
T = UeTemplates(PLMN, GUAMI)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**40 - 1), st.integers(0, 10**9))
def test_stamped_messages_equal_pycrate_encodings(ran: int, amf: int, n: int) -> None:
    tag = nas_tag(f"gnb1/ue{n}")
    assert len(tag) == NAS_LEN
    pairs = [
        (T.initial_ue.stamp(ran, -1, tag), c.initial_ue_message(ran, tag, PLMN)),
        (T.downlink_nas.stamp(ran, amf, tag), c.downlink_nas(amf, ran, tag)),
        (T.uplink_nas.stamp(ran, amf, tag), c.uplink_nas(amf, ran, tag, PLMN)),
        (T.ics_request.stamp(ran, amf, tag), c.initial_context_setup_request(amf, ran, GUAMI, tag)),
        (T.ics_response.stamp(ran, amf), c.initial_context_setup_response(amf, ran)),
        (T.release_command.stamp(ran, amf), c.ue_context_release_command(amf, ran)),
        (T.release_complete.stamp(ran, amf), c.ue_context_release_complete(amf, ran)),
    ]
    for stamped, oracle in pairs:
        assert stamped == oracle
    assert find_nas(pairs[1][0]) == tag and find_nas(pairs[4][0]) is None
