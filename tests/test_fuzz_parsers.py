"""Bounded fuzzing (hypothesis) of what hostile peers feed the gateway: every 3gpp-Sbi header
parser, the discovery query and headers, JSON Patch bodies and operations, NGAP routing keys
and the producers' OCI/LCI.  Each must either give an answer or raise its own declared error
(which the caller turns into a 400 ProblemDetails or a dropped header), never anything else.
``HYPOTHESIS_PROFILE=ci`` (scripts/test.sh) keeps the draws the same every run; ``stress``
draws 2,000 examples per test."""

from __future__ import annotations

import inspect
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.registry import json_patch
from nf_adapters import discovery
from nf_adapters import sbi_headers as sh
from nf_adapters.ngap import routing_key
from nf_adapters.overload_control import OverloadResponses

# what header values are made of, weighted toward the grammar's own punctuation
_ALPHABET = st.sampled_from(list("0123456789abcdefABCDEF-;:=,. \t\"%&/@<>[]()GMTNFSetInstance")
                            + ["nf-instance", "nfinst=", "bl=", "Timestamp: ", "; ", "GMT",
                               "urn:uuid:", "http://", "https://", "\x00", "\u00b2", "é"])
_VALUES = st.one_of(st.binary(max_size=200),
                    st.lists(_ALPHABET, max_size=40).map("".join))
_PARSERS = sorted(
    (name, fn) for name, fn in vars(sh).items()
    if name.startswith("parse_") and callable(fn)
    and [p.name for p in inspect.signature(fn).parameters.values()
         if p.default is inspect.Parameter.empty] == ["value"])


def test_every_single_value_parser_is_fuzzed() -> None:
    names = {name for name, _ in _PARSERS}
    assert {"parse_message_priority", "parse_oci", "parse_lci", "parse_routing_binding",
            "parse_target_nf_id", "parse_sender_timestamp", "parse_target_apiroot"} <= names


@pytest.mark.parametrize("name, parser", _PARSERS, ids=[n for n, _ in _PARSERS])
@given(value=_VALUES)
def test_sbi_header_parsers_answer_or_refuse(name: str, parser, value) -> None:
    try:
        parser(value)
    except sh.SbiHeaderError:
        pass


@given(name=st.sampled_from([b"3gpp-sbi-discovery-target-nf-type", b"3gpp-sbi-discovery-snssais",
                             b"3gpp-sbi-discovery-service-names", b"3gpp-sbi-discovery-guami",
                             b"3gpp-sbi-discovery-requester-plmn-list", b"3gpp-sbi-discovery-x"]),
       value=_VALUES)
def test_discovery_headers_answer_or_refuse(name: bytes, value) -> None:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    try:
        discovery.parse_discovery_headers([(name, raw),
                                           (b"3gpp-sbi-discovery-target-nf-type", b"UDM")])
    except (discovery.DiscoveryError, sh.SbiHeaderError):
        pass


@given(query=st.lists(st.sampled_from(["target-nf-type=", "requester-nf-type=", "UDM", "AMF",
                                       "&", "=", "limit=", "-1", "99999999999", "%zz", "%C3%A9",
                                       "snssais=", "[", "{", "}", "]", '"sst"', ":", ",", "x"]),
                      max_size=20).map("".join))
def test_discovery_queries_answer_or_refuse(query: str) -> None:
    try:
        discovery.parse_query(query)
    except discovery.DiscoveryError:
        pass


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=6), children, max_size=4),
                     max_leaves=12)
_POINTERS = st.lists(st.sampled_from(["/", "a", "0", "01", "-", "~0", "~1", "~2", "~", "\u00b2",
                                      "nfServices", "9"]), max_size=6).map("".join)
_OPS = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus", 1]),
     "path": _POINTERS},
    optional={"value": _JSON, "from": _POINTERS}), max_size=5)


@given(doc=st.dictionaries(st.text(max_size=6), _JSON, max_size=5), ops=_OPS)
def test_json_patch_answers_or_refuses(doc: dict, ops: list) -> None:
    before = json.dumps(doc, sort_keys=True)
    try:
        json_patch.apply(doc, ops)
    except json_patch.PatchError:
        pass
    assert json.dumps(doc, sort_keys=True) == before  # the original is never half-patched


@given(body=st.binary(max_size=300))
def test_json_patch_bodies_answer_or_refuse(body: bytes) -> None:
    try:
        json_patch.decode_patch(body)
    except json_patch.PatchError:
        pass


@given(data=st.binary(max_size=300))
def test_ngap_routing_keys_answer_or_refuse(data: bytes) -> None:
    try:
        routing_key.extract(data)
    except routing_key.NgapDecodeError:
        pass


@given(values=st.lists(st.tuples(st.sampled_from([b"3gpp-sbi-oci", b"3gpp-sbi-lci"]),
                                 _VALUES.map(lambda v: v if isinstance(v, bytes) else
                                             v.encode("utf-8", "surrogatepass"))),
                       max_size=4))
def test_producer_overload_headers_never_break_a_response(values) -> None:
    from dataplane.admission import AdmissionController

    class Ex:
        endpoint = "p1"

    tap = OverloadResponses(AdmissionController())
    relayed = tap(Ex(), 200, list(values))
    for name, value in relayed:  # only what parses is relayed
        (sh.parse_oci if name == b"3gpp-sbi-oci" else sh.parse_lci)(value)
