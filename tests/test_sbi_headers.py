"""TS 29.500 custom header codecs: fixed vectors from the ABNF and spec examples, every error
path with its exact reason, and format -> parse round trips with hypothesis."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nf_adapters import sbi_headers as sh
from nf_adapters.sbi_headers import (
    ApiRoot,
    Binding,
    Callback,
    ControlScope,
    LoadControl,
    OverloadControl,
    ProducerId,
    SbiHeaderError,
    ViaEntry,
)

UUID = "5a7bd676-ceeb-44bb-95e0-f6a55a328b03"


def _err(fn, value) -> tuple[str, str]:
    with pytest.raises(SbiHeaderError) as info:
        fn(value)
    return info.value.header, info.value.reason


# --------------------------------------------------------------------------- Target-apiRoot

@pytest.mark.parametrize(("value", "expected"), [
    (b"http://udm1.5gc.mnc001.mcc001.3gppnetwork.org",
     ApiRoot("http", "udm1.5gc.mnc001.mcc001.3gppnetwork.org")),
    (b"https://10.0.0.1:8443", ApiRoot("https", "10.0.0.1", 8443)),
    (b"http://[2001:db8::1]:80/prefix/a", ApiRoot("http", "2001:db8::1", 80, "/prefix/a")),
    (b"HTTPS://AUSF.example:443/", ApiRoot("https", "ausf.example", 443, "/")),
    (b"  http://h:1/p/  ", ApiRoot("http", "h", 1, "/p/")),
    (b"http://h:/x", ApiRoot("http", "h", None, "/x")),
    ("http://[::1]", ApiRoot("http", "::1")),
    (b"http://a_b.c~d-e", ApiRoot("http", "a_b.c~d-e")),
    (b"http://h/a%20b/c;v=1", ApiRoot("http", "h", None, "/a%20b/c;v=1")),
])
def test_target_apiroot_vectors(value, expected: ApiRoot) -> None:
    assert sh.parse_target_apiroot(value) == expected


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty value"),
    (b"   ", "empty value"),
    (b"udm.example", "missing '://' after the scheme"),
    (b"ftp://h", "scheme must be http or https, got 'ftp'"),
    (b"http://", "empty authority"),
    (b"http:///x", "empty authority"),
    (b"http://h?x=1", "a query is not allowed in an apiRoot"),
    (b"http://h/p#f", "a fragment is not allowed in an apiRoot"),
    (b"http://user@h", "userinfo is not allowed in the authority"),
    (b"http://[2001:db8::1", "unterminated IPv6 literal (missing ']')"),
    (b"http://[2001:db8::zz]", "invalid IPv6 address '2001:db8::zz'"),
    (b"http://[fe80::1%25eth0]", "IPv6 zone identifiers are not allowed"),
    (b"http://[v1.x]", "IPvFuture literals are not supported"),
    (b"http://2001:db8::1", "IPv6 address must be in brackets"),
    (b"http://256.1.1.1", "invalid IPv4 address '256.1.1.1'"),
    (b"http://h,x", "invalid character in host 'h,x'"),
    (b"http://h:0", "port must be 1..65535, got 0"),
    (b"http://h:65536", "port must be 1..65535, got 65536"),
    (b"http://h:8o", "port must be digits, got '8o'"),
    (b"http://[::1]x", "unexpected 'x' after host"),
    (b"http://h//x", "apiPrefix is not a valid absolute path: '//x'"),
    (b"http://h a/x", "whitespace inside the authority"),
    (b"http://h/a b", "apiPrefix is not a valid absolute path: '/a b'"),
    (b"http://h/a\x01", "control or non-ASCII character in value"),
    ("http://h/\u00e9".encode(), "non-ASCII byte in value"),
    (b"http://" + b"a" * 9000, "value longer than 8192 bytes"),
])
def test_target_apiroot_errors(value: bytes, reason: str) -> None:
    assert _err(sh.parse_target_apiroot, value) == ("3gpp-Sbi-Target-apiRoot", reason)


def test_apiroot_properties() -> None:
    r = sh.parse_target_apiroot(b"https://[2001:db8::1]/p")
    assert (r.tls, r.is_ip, r.effective_port, r.authority) == (True, True, 443, "[2001:db8::1]")
    r = sh.parse_target_apiroot(b"http://nrf.example:8080")
    assert (r.tls, r.is_ip, r.effective_port, r.authority) == (False, False, 8080, "nrf.example:8080")
    assert sh.format_target_apiroot(r) == b"http://nrf.example:8080"


@pytest.mark.parametrize(("prefix", "path", "joined"), [
    ("", "/nudm-sdm/v2/imsi-1?dataset-names=AM", "/nudm-sdm/v2/imsi-1?dataset-names=AM"),
    ("/", "/a", "/a"),
    ("/pre", "/a/b?x=1", "/pre/a/b?x=1"),
    ("/pre/", "/a/b?x=1", "/pre/a/b?x=1"),
    ("/pre/", "a", "/pre/a"),
    ("/pre", "a", "/pre/a"),
    ("/pre", "?q", "/pre?q"),
    ("/pre", "*", "/pre"),
    ("", "*", "*"),
    ("/", "*", "/"),
])
def test_join_prefix(prefix: str, path: str, joined: str) -> None:
    assert sh.join_prefix(prefix, path) == joined


_label = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=4).map(".".join).filter(
    lambda h: not all(c.isdigit() or c == "." for c in h))
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: a.compressed)
_segment = st.from_regex(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]{1,8}", fullmatch=True)
_prefix = st.one_of(st.just(""), st.just("/"),
                    st.lists(_segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s)),
                    st.lists(_segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s) + "/"))
_apiroots = st.builds(ApiRoot, st.sampled_from(["http", "https"]),
                      st.one_of(_hostname, _ipv4, _ipv6),
                      st.one_of(st.none(), st.integers(1, 65535)), _prefix)


@settings(max_examples=100, deadline=None)
@given(_apiroots)
def test_target_apiroot_round_trip(root: ApiRoot) -> None:
    assert sh.parse_target_apiroot(sh.format_target_apiroot(root)) == root


@settings(max_examples=100, deadline=None)
@given(_prefix, st.lists(_segment, max_size=3).map(lambda s: "/" + "/".join(s)),
       st.one_of(st.just(""), st.just("?a=1&b=2")))
def test_join_prefix_never_doubles_or_drops_a_slash(prefix: str, path: str, query: str) -> None:
    joined = sh.join_prefix(prefix, path + query)
    assert "//" not in joined
    assert joined.startswith("/")
    assert joined.endswith(query)
    assert joined.startswith(prefix.rstrip("/") or "/")
    assert joined[: len(joined) - len(query)].endswith(path.strip("/")) or path == "/"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_target_apiroot_random_bytes_never_crash(data: bytes) -> None:
    try:
        root = sh.parse_target_apiroot(data)
    except SbiHeaderError as exc:
        assert exc.header == "3gpp-Sbi-Target-apiRoot" and exc.reason
    else:
        assert root.scheme in ("http", "https")


# --------------------------------------------------------------------------- numbers

@pytest.mark.parametrize(("value", "n"), [(b"0", 0), (b"31", 31), (b" 7 ", 7), (b"10", 10)])
def test_message_priority_ok(value: bytes, n: int) -> None:
    assert sh.parse_message_priority(value) == n


@pytest.mark.parametrize(("value", "reason"), [
    (b"32", "must be an integer 0..31, got '32'"),
    (b"07", "must be an integer 0..31 without leading zero, got '07'"),
    (b"-1", "must be an integer 0..31, got '-1'"),
    (b"100", "must be an integer 0..31, got '100'"),
    (b"a", "must be an integer 0..31, got 'a'"),
    (b"\xd9\xa1", "non-ASCII byte in value"),
])
def test_message_priority_errors(value: bytes, reason: str) -> None:
    assert _err(sh.parse_message_priority, value) == ("3gpp-Sbi-Message-Priority", reason)


@given(st.integers(0, 31))
def test_message_priority_round_trip(n: int) -> None:
    assert sh.parse_message_priority(sh.format_message_priority(n)) == n


def test_max_rsp_time() -> None:
    assert sh.parse_max_rsp_time(b"10000") == 10000
    assert _err(sh.parse_max_rsp_time, b"100000") == (
        "3gpp-Sbi-Max-Rsp-Time", "must be 1 to 5 digits (milliseconds), got '100000'")
    assert _err(sh.parse_max_rsp_time, b"1.5")[1] == \
        "must be 1 to 5 digits (milliseconds), got '1.5'"


@given(st.integers(0, 99999))
def test_max_rsp_time_round_trip(n: int) -> None:
    assert sh.parse_max_rsp_time(sh.format_max_rsp_time(n)) == n


@pytest.mark.parametrize(("value", "n"), [
    (b"3; nodetype=scp", 3), (b"10;nodetype=scp", 10), (b"0", 0), (b"99 ; nodetype=SCP", 99)])
def test_max_forward_hops_ok(value: bytes, n: int) -> None:
    assert sh.parse_max_forward_hops(value) == n


@pytest.mark.parametrize(("value", "reason"), [
    (b"100; nodetype=scp", "hop count must be 0..99, got '100'"),
    (b"05; nodetype=scp", "hop count must be 0..99, got '05'"),
    (b"-1", "hop count must be 0..99, got '-1'"),
    (b"3; nodetype=sepp", "expected 'nodetype=scp' after ';', got 'nodetype=sepp'"),
])
def test_max_forward_hops_errors(value: bytes, reason: str) -> None:
    assert _err(sh.parse_max_forward_hops, value) == ("3gpp-Sbi-Max-Forward-Hops", reason)


@given(st.integers(0, 99))
def test_max_forward_hops_round_trip(n: int) -> None:
    assert sh.format_max_forward_hops(n) == f"{n}; nodetype=scp".encode()
    assert sh.parse_max_forward_hops(sh.format_max_forward_hops(n)) == n


# --------------------------------------------------------------------------- timestamps

def test_sender_timestamp_spec_example() -> None:
    when = sh.parse_sender_timestamp(b"Tue, 04 Feb 2020 08:49:37.845 GMT")
    assert when == dt.datetime(2020, 2, 4, 8, 49, 37, 845000, tzinfo=dt.UTC)


@pytest.mark.parametrize(("value", "reason"), [
    (b"Wed, 04 Feb 2020 08:49:37.845 GMT", "day name Wed does not match the date"),
    (b"Tue, 31 Feb 2020 08:49:37.845 GMT", "invalid date or time: day is out of range for month"),
    (b"Tue, 04 Feb 2020 08:49:37 GMT",
     "expected 'Day, DD Mon YYYY HH:MM:SS.mmm GMT', got 'Tue, 04 Feb 2020 08:49:37 GMT'"),
    (b"Tue, 04 Feb 2020 25:49:37.845 GMT",
     "invalid date or time: hour must be in 0..23"),
])
def test_sender_timestamp_errors(value: bytes, reason: str) -> None:
    assert _err(sh.parse_sender_timestamp, value) == ("3gpp-Sbi-Sender-Timestamp", reason)


_times = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 12, 31),
                      timezones=st.just(dt.UTC)).map(lambda t: t.replace(
                          microsecond=t.microsecond // 1000 * 1000))


@settings(max_examples=100, deadline=None)
@given(_times)
def test_sender_timestamp_round_trip(when: dt.datetime) -> None:
    assert sh.parse_sender_timestamp(sh.format_sender_timestamp(when)) == when


# --------------------------------------------------------------------------- OCI / LCI

OCI_EXAMPLE = (b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 75s; '
               b'Overload-Reduction-Metric: 50%; NF-Instance: ' + UUID.encode())


def test_oci_spec_like_example() -> None:
    [oci] = sh.parse_oci(OCI_EXAMPLE)
    assert oci.timestamp == dt.datetime(2020, 2, 4, 8, 49, 37, tzinfo=dt.UTC)
    assert (oci.validity_s, oci.reduction_pct) == (75, 50)
    assert oci.scope == ControlScope("NF-Instance", UUID)


def test_oci_two_elements_and_set_scope_with_slices() -> None:
    value = (OCI_EXAMPLE + b', Timestamp: "Tue, 04 Feb 2020 08:49:38 GMT"; Period-of-Validity: '
             b'10s; Overload-Reduction-Metric: 0%; NF-Set: set1.udmset.5gc; '
             b'S-NSSAI: 1-000001 & 2; DNN: internet & ims')
    first, second = sh.parse_oci(value)
    assert second.scope == ControlScope("NF-Set", "set1.udmset.5gc",
                                        (("S-NSSAI", "1-000001 & 2"), ("DNN", "internet & ims")))
    assert second.reduction_pct == 0


@pytest.mark.parametrize(("value", "reason"), [
    (b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Period-of-Validity: 75s',
     "element needs Timestamp; Period-of-Validity; Overload-Reduction-Metric; scope"),
    (OCI_EXAMPLE.replace(b"50%", b"101%"), "Overload-Reduction-Metric must be 0..100, got '101%'"),
    (OCI_EXAMPLE.replace(b"50%", b"50"),
     "Overload-Reduction-Metric must be 0..100 followed by '%', got '50'"),
    (OCI_EXAMPLE.replace(b"75s", b"75"), "Period-of-Validity must be digits then 's', got '75'"),
    (OCI_EXAMPLE.replace(b"NF-Instance: ", b"NF-Instance:"),
     "expected whitespace and a value after 'NF-Instance:'"),
    (OCI_EXAMPLE.replace(UUID.encode(), b"xyz"),
     "NF-Instance must be a UUID (8-4-4-4-12 hex), got 'xyz'"),
    (OCI_EXAMPLE.replace(b"NF-Instance", b"Bogus"), "unknown scope element 'Bogus: " + UUID[:33] + "'"),
    (OCI_EXAMPLE.replace(b'"Tue, 04 Feb 2020 08:49:37 GMT"', b'"yesterday"'),
     "invalid RFC 5322 date-time 'yesterday'"),
    (OCI_EXAMPLE.replace(b'"Tue, 04 Feb 2020 08:49:37 GMT"', b"Tue"),
     "Timestamp must be a quoted date-time"),
    (OCI_EXAMPLE + b",", "empty element between ',' separators"),
])
def test_oci_errors(value: bytes, reason: str) -> None:
    assert _err(sh.parse_oci, value) == ("3gpp-Sbi-Oci", reason)


def test_lci_example_and_errors() -> None:
    value = (b'Timestamp: "Tue, 04 Feb 2020 08:49:37 GMT"; Load-Metric: 30%; '
             b'NF-Set: set1; S-NSSAI: 1; DNN: internet; Relative-Capacity: 40%')
    [lci] = sh.parse_lci(value)
    assert lci.load_pct == 30
    assert lci.scope.extra[-1] == ("Relative-Capacity", "40%")
    assert _err(sh.parse_lci, value.replace(b"NF-Set", b"NFC-Set")) == (
        "3gpp-Sbi-Lci", "scope cannot start with 'NFC-Set'")
    assert _err(sh.parse_lci, value.replace(b"40%", b"400%")) == (
        "3gpp-Sbi-Lci", "Relative-Capacity must be 0..100, got '400%'")


_tok = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=12)
_sec_times = _times.map(lambda t: t.replace(microsecond=0, year=max(t.year, 1900)))
_scopes = st.one_of(
    st.builds(ControlScope, st.just("NF-Instance"), st.uuids().map(str)),
    st.builds(ControlScope, st.just("NF-Set"), _tok,
              st.tuples(st.tuples(st.just("S-NSSAI"), _tok), st.tuples(st.just("DNN"), _tok))),
    st.builds(ControlScope, st.just("SCP-FQDN"), _tok))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.builds(OverloadControl, _sec_times, st.integers(0, 10**6),
                          st.integers(0, 100), _scopes), min_size=1, max_size=4))
def test_oci_round_trip(items: list[OverloadControl]) -> None:
    assert sh.parse_oci(sh.format_oci(items)) == items


@settings(max_examples=100, deadline=None)
@given(st.lists(st.builds(LoadControl, _sec_times, st.integers(0, 100), _scopes),
                min_size=1, max_size=4))
def test_lci_round_trip(items: list[LoadControl]) -> None:
    assert sh.parse_lci(sh.format_lci(items)) == items


# --------------------------------------------------------------------------- bindings

def test_routing_binding_example() -> None:
    b = sh.parse_routing_binding(b"bl=nf-set; nfset=set1.udmset.5gc.mnc012.mcc345; servname=nudm-uecm")
    assert b.level == "nf-set"
    assert b.get("nfset") == "set1.udmset.5gc.mnc012.mcc345"
    assert b.get("servname") == "nudm-uecm"
    assert b.get("nfinst") is None


def test_binding_with_recoverytime_nr_and_several_elements() -> None:
    value = (b'bl=nf-instance; nfinst=' + UUID.encode() + b'; scope=other-service; '
             b'recoverytime="Tue, 04 Feb 2020 08:49:37 GMT"; nr=http://a.b/c,d; '
             b'callback-uri-prefix="/cb/v1", bl=nf-set; nfset=s1')
    first, second = sh.parse_binding(value)
    assert first.get("nr") == "http://a.b/c,d"
    assert first.callback_uri_prefix == "/cb/v1"
    assert first.get("recoverytime") == '"Tue, 04 Feb 2020 08:49:37 GMT"'
    assert second == Binding("nf-set", (("nfset", "s1"),))


@pytest.mark.parametrize(("fn", "header", "value", "reason"), [
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"nfset=x",
     "must start with 'bl=', got 'nfset=x'"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"bl=nf-group; nfset=x",
     "bl must be one of nf-instance, nf-set, nfservice-instance, nfservice-set, got 'nf-group'"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"bl=nf-set",
     "at least one binding parameter (nfinst, nfset, ...) needed"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"bl=nf-set; scope=x",
     "unknown parameter 'scope'"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"bl=nf-instance; nfinst=abc",
     "nfinst must be a UUID (8-4-4-4-12 hex), got 'abc'"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"bl=nf-set; nfset=a b",
     "nfset must be a token, got 'a b'"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding", b"bl=nf-set; nfset",
     "expected name=value, got 'nfset'"),
    (sh.parse_routing_binding, "3gpp-Sbi-Routing-Binding",
     b'bl=nf-set; callback-uri-prefix="/x"; nfset=a',
     "callback-uri-prefix must be the last parameter"),
    (sh.parse_binding, "3gpp-Sbi-Binding", b"bl=nf-set; nfset=a; group=maybe",
     "group must be true or false"),
    (sh.parse_binding, "3gpp-Sbi-Binding", b"bl=nf-set; nfset=a; recoverytime=now",
     "recoverytime must be a quoted date-time"),
])
def test_binding_errors(fn, header: str, value: bytes, reason: str) -> None:
    assert _err(fn, value) == (header, reason)


_bparams = st.lists(st.tuples(st.sampled_from(["nfset", "nfservinst", "servname", "nfserviceset"]),
                              _tok), min_size=1, max_size=4).map(tuple)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.builds(Binding, st.sampled_from(sh.BINDING_LEVELS), _bparams,
                          st.one_of(st.none(), st.just("/cb/x"))), min_size=1, max_size=3))
def test_binding_round_trip(items: list[Binding]) -> None:
    assert sh.parse_binding(sh.format_bindings(items)) == items
    assert sh.parse_routing_binding(sh.format_binding(items[0])) == items[0]


# --------------------------------------------------------------------------- producer id etc.

def test_producer_id() -> None:
    pid = sh.parse_producer_id(f"nfinst={UUID}; nfservinst=svc1; nfset=set1".encode())
    assert pid == ProducerId(UUID, "svc1", "set1")
    assert sh.format_producer_id(pid) == f"nfinst={UUID}; nfservinst=svc1; nfset=set1".encode()
    assert _err(sh.parse_producer_id, f"nfinst={UUID}; nfset=a; nfservinst=b".encode()) == (
        "3gpp-Sbi-Producer-Id", "nfservinst out of order or repeated")
    assert _err(sh.parse_producer_id, b"nfset=a") == (
        "3gpp-Sbi-Producer-Id", "must start with 'nfinst='")


@given(st.builds(ProducerId, st.uuids().map(str), st.one_of(st.none(), _tok),
                 st.one_of(st.none(), _tok), st.one_of(st.none(), _tok)))
def test_producer_id_round_trip(pid: ProducerId) -> None:
    assert sh.parse_producer_id(sh.format_producer_id(pid)) == pid


def test_target_nf_id() -> None:
    assert sh.parse_target_nf_id(f"nfinst={UUID}; nfservinst=s".encode()) == (UUID, "s")
    assert sh.parse_target_nf_id(f"nfinst={UUID}".encode()) == (UUID, None)


def test_callback() -> None:
    assert sh.parse_callback(b"Nudm_SDM_Notification; apiversion=2") == Callback(
        "Nudm_SDM_Notification", 2)
    assert sh.parse_callback(b"Namf_EventExposure_Notify") == Callback("Namf_EventExposure_Notify")
    assert _err(sh.parse_callback, b"a b") == (
        "3gpp-Sbi-Callback", "callback type must be letters, digits, '-', '_': 'a b'")
    assert _err(sh.parse_callback, b"x; version=2") == (
        "3gpp-Sbi-Callback", "expected 'apiversion=' after ';', got 'version=2'")


@given(st.builds(Callback, st.from_regex(r"[A-Za-z0-9_\-]{1,20}", fullmatch=True),
                 st.one_of(st.none(), st.integers(0, 9999))))
def test_callback_round_trip(cb: Callback) -> None:
    assert sh.parse_callback(sh.format_callback(cb)) == cb


def test_correlation_info() -> None:
    assert sh.parse_correlation_info(b"imsi-345012123123123; msisdn-1234@x") == [
        ("imsi", "345012123123123"), ("msisdn", "1234@x")]
    assert _err(sh.parse_correlation_info, b"imsi") == (
        "3gpp-Sbi-Correlation-Info", "expected ctype-cvalue, got 'imsi'")


@given(st.lists(st.tuples(st.sampled_from(["imsi", "suci", "gci", "x.y"]),
                          st.from_regex(r"[A-Za-z0-9@.\-]{1,16}", fullmatch=True)),
                min_size=1, max_size=5))
def test_correlation_round_trip(items: list[tuple[str, str]]) -> None:
    assert sh.parse_correlation_info(sh.format_correlation_info(items)) == items


# --------------------------------------------------------------------------- Via

def test_via_parse() -> None:
    assert sh.parse_via(b"2.0 SCP-scp1.operator.com, HTTP/2.0 proxy:8080 (nghttpx)") == [
        ViaEntry("2.0", "SCP-scp1.operator.com"),
        ViaEntry("HTTP/2.0", "proxy:8080", "nghttpx"),
    ]
    assert _err(sh.parse_via, b"2.0") == ("Via", "expected 'protocol received-by', got '2.0'")
    assert _err(sh.parse_via, b"2.0 a (x") == ("Via", "comment must be in parentheses")
    assert sh.scp_via_pseudonym("gw1") == "SCP-gw1"
    assert sh.scp_via_pseudonym("SCP-gw1") == "SCP-gw1"
    assert sh.scp_via_pseudonym("scp-gw1") == "SCP-scp-gw1"


@given(st.lists(st.builds(ViaEntry, st.sampled_from(["2.0", "HTTP/2.0", "1.1"]),
                          _tok.map(lambda t: "SCP-" + t),
                          st.one_of(st.none(), st.from_regex(r"[a-z ]{1,10}[a-z]", fullmatch=True))),
                min_size=1, max_size=5))
def test_via_round_trip(entries: list[ViaEntry]) -> None:
    assert sh.parse_via(sh.format_via(entries)) == entries


# --------------------------------------------------------------------------- discovery

def test_discovery_headers_decoded() -> None:
    headers = [
        (b":method", b"GET"),
        (b"3gpp-sbi-discovery-target-nf-type", b"UDM"),
        (b"3gpp-sbi-discovery-service-names", b"nudm-sdm,nudm-uecm"),
        (b"3gpp-sbi-discovery-snssais", b"%5B%7B%22sst%22%3A1%2C%22sd%22%3A%22000001%22%7D%5D"),
        (b"3gpp-sbi-discovery-requester-nf-instance-fqdn", b"amf1.example%2Ecom"),
        (b"3gpp-sbi-discovery-tai", b'{"plmnId":{"mcc":"001","mnc":"01"},"tac":"000001"}'),
    ]
    assert sh.parse_discovery_headers(headers) == {
        "target-nf-type": "UDM",
        "service-names": ["nudm-sdm", "nudm-uecm"],
        "snssais": [{"sst": 1, "sd": "000001"}],
        "requester-nf-instance-fqdn": "amf1.example.com",
        "tai": {"plmnId": {"mcc": "001", "mnc": "01"}, "tac": "000001"},
    }


def test_discovery_errors() -> None:
    with pytest.raises(SbiHeaderError) as info:
        sh.parse_discovery_headers([(b"3gpp-sbi-discovery-snssais", b"[{sst:1}]")])
    assert info.value.header == "3gpp-Sbi-Discovery-snssais"
    assert info.value.reason.startswith("invalid JSON: ")
    with pytest.raises(SbiHeaderError) as info:
        sh.parse_discovery_headers([(b"3gpp-sbi-discovery-dnn", b"a"),
                                    (b"3gpp-sbi-discovery-dnn", b"b")])
    assert (info.value.header, info.value.reason) == ("3gpp-Sbi-Discovery-dnn", "header repeated")
    with pytest.raises(SbiHeaderError) as info:
        sh.parse_discovery_headers([(b"3gpp-sbi-discovery-service-names", b"a,,b")])
    assert info.value.reason == "empty or too many comma-separated items"


_json_vals = st.recursive(
    st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8), st.booleans(), st.none()),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.text(max_size=5), kids, max_size=3)),
    max_leaves=8)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["snssais", "tai", "guami", "target-plmn-list"]), _json_vals)
def test_discovery_json_round_trip(param: str, value: object) -> None:
    name = sh.discovery_header_name(param)
    got = sh.parse_discovery_header(name, sh.format_discovery_value(param, value))
    assert (got.name, got.value) == (param, value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=5),
       st.text(min_size=1, max_size=20).filter(lambda s: s.strip(" \t") == s))
def test_discovery_list_and_string_round_trip(items: list[str], text: str) -> None:
    got = sh.parse_discovery_header(b"3gpp-sbi-discovery-service-names",
                                    sh.format_discovery_value("service-names", items))
    assert got.value == items
    got = sh.parse_discovery_header(b"3gpp-sbi-discovery-dnn", sh.format_discovery_value("dnn", text))
    assert got.value == text


# --------------------------------------------------------------------------- robustness

_PARSERS = [sh.parse_target_apiroot, sh.parse_message_priority, sh.parse_max_rsp_time,
            sh.parse_max_forward_hops, sh.parse_sender_timestamp, sh.parse_oci, sh.parse_lci,
            sh.parse_routing_binding, sh.parse_binding, sh.parse_producer_id,
            sh.parse_target_nf_id, sh.parse_callback, sh.parse_correlation_info, sh.parse_via]
_ALPHABET = ' \t;,="%:/[]@-_.0123456789abcdefnsrtxAZGMT()&?#\\\x00\x7f\xff'


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60), st.sampled_from(_PARSERS))
def test_parsers_raise_only_sbi_header_error(text: str, parser) -> None:
    """Garbage in: a parsed value or SbiHeaderError with a reason, never another exception."""
    for value in (text, text.encode("latin-1")):
        try:
            parser(value)
        except SbiHeaderError as exc:
            assert exc.reason and exc.header


def test_parsers_bound_element_count() -> None:
    many = ", ".join(["2.0 SCP-a"] * (sh.MAX_ELEMENTS + 1))
    assert _err(sh.parse_via, many) == ("Via", f"more than {sh.MAX_ELEMENTS} elements")
