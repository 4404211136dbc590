"""The typed config: defaults, the annotated example, and every error path with its exact
path and reason (all errors in one report)."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dataplane.engine import H2Settings
from gateway.config import (
    Config,
    ConfigError,
    ConfigIssue,
    check_config_file,
    load_config,
    parse_config,
    to_dict,
)
from nf_adapters.scp_router import RouteTable, ScpRouter

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "config", "example.yaml")


def issues(data, **kw) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return [(e.path, e.reason) for e in info.value.errors]


def write_pem_pair(folder, name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    crt, pem = folder / f"{name}.crt", folder / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


# --------------------------------------------------------------------------- defaults

def test_default_config_is_one_h2c_listener_routing_model_c() -> None:
    cfg = Config()
    assert [(lst.name, lst.host, lst.port, lst.protocol) for lst in cfg.listeners] == [
        ("sbi", "127.0.0.1", 8080, "h2c")]
    assert cfg.scp.model_c is True
    assert cfg.http2.to_h2_settings() == H2Settings()
    assert parse_config({}) == cfg
    assert parse_config(None) == cfg
    router = ScpRouter.from_config(cfg)
    d = router.route([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"),
                      (b":path", b"/a"), (b"3gpp-sbi-target-apiroot", b"http://10.0.0.1:81")], {})
    assert (d.endpoint.host, d.endpoint.port) == ("10.0.0.1", 81)
    assert dict(d.headers)[b"via"] == b"2.0 SCP-nfmesh"
    assert d.timeout == 30.0


def test_http2_section_maps_to_engine_settings() -> None:
    cfg = parse_config({"http2": {"max_concurrent_streams": 10, "max_frame_size": 32768}})
    s = cfg.http2.to_h2_settings()
    assert (s.max_concurrent_streams, s.max_frame_size) == (10, 32768)
    assert s.initial_window_size == H2Settings().initial_window_size


def test_http2_abuse_budgets_map_and_are_checked() -> None:
    cfg = parse_config({"http2": {"max_header_bytes_per_second": 1 << 20,
                                  "max_refused_streams_per_second": 5}})
    s = cfg.http2.to_h2_settings()
    assert (s.max_header_bytes_per_second, s.max_refused_streams_per_second) == (1 << 20, 5)
    assert s.hard_header_list_size == 4 * s.max_header_list_size
    assert [p for p, _ in issues({"http2": {"max_refused_streams_per_second": 0,
                                            "max_header_bytes_per_second": -1}})] == [
        "http2.max_header_bytes_per_second", "http2.max_refused_streams_per_second"]


def test_http2_relay_buffers_map_and_are_checked() -> None:
    """The bounds on what a non-reading client can make the gateway hold reach the engine,
    and a stream buffer under one 16 KiB window is refused with its field path."""
    cfg = parse_config({"http2": {"relay_stream_buffer": 32768, "relay_connection_buffer": 0}})
    s = cfg.http2.to_h2_settings()
    assert (s.relay_stream_buffer, s.relay_connection_buffer) == (32768, 0)
    assert Config().http2.to_h2_settings().relay_stream_buffer == H2Settings().relay_stream_buffer
    assert [p for p, _ in issues({"http2": {"relay_stream_buffer": 1000,
                                            "relay_connection_buffer": -1}})] == [
        "http2.relay_stream_buffer", "http2.relay_connection_buffer"]


# --------------------------------------------------------------------------- the example

def test_example_validates_with_its_certificates(tmp_path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "example.yaml")
    (tmp_path / "certs").mkdir()
    crt, key = write_pem_pair(tmp_path / "certs", "gateway")
    ca, _ = write_pem_pair(tmp_path / "certs", "mesh-ca")
    cfg = load_config(str(tmp_path / "example.yaml"))
    tls = cfg.listeners[1].tls
    assert (tls.cert, tls.key, tls.client_ca) == (crt, key, ca)  # resolved to absolute paths
    assert cfg.gateway.name == "scp1.5gc.mnc001.mcc001"
    assert cfg.via_name == "scp1.5gc.mnc001.mcc001"
    assert [c.name for c in cfg.clusters] == ["ausf", "udm"]
    assert cfg.registry.store == "etcd" and cfg.registry.etcd.endpoints == ["127.0.0.1:2379"]
    assert cfg.ngap.amf_pools[0].endpoints[0].addresses == ["10.30.0.11", "10.31.0.11"]
    assert cfg.ngap.amf_pools[0].endpoints[1].port == 38412
    # every section of the model appears in the example
    import yaml

    with open(EXAMPLE) as fh:
        raw = yaml.safe_load(fh)
    assert set(raw) == set(Config.__struct_fields__)
    ok, report = check_config_file(str(tmp_path / "example.yaml"))
    assert ok and report.splitlines()[0].endswith("example.yaml: OK")
    assert "listener sbi-tls: tls mTLS [::]:8443" in report
    table = RouteTable.from_config(cfg)
    assert [r.name for r in table.routes] == ["ausf-auth", "udm-by-host"]
    assert table.clusters["udm"].weights == (3, 1)
    assert table.clusters["udm"].endpoints[1].server_name is None  # IP literal: no SNI
    assert table.clusters["ausf"].request_timeout_s == 5.0


def test_example_without_certificates_reports_only_them(tmp_path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "example.yaml")
    ok, report = check_config_file(str(tmp_path / "example.yaml"))
    assert not ok
    lines = report.splitlines()
    assert lines[0].endswith("example.yaml: 3 error(s)")
    assert [ln.split(": ")[1] for ln in lines[1:]] == [
        "listeners[1].tls.cert", "listeners[1].tls.key", "listeners[1].tls.client_ca"]
    assert all("file not found" in ln for ln in lines[1:])


def test_example_in_place() -> None:
    """In the checkout: valid once `nfmesh ca example --dir config/certs` made its certificates
    (git never holds them), else exactly those three files are reported missing."""
    certs = os.path.join(os.path.dirname(EXAMPLE), "certs")
    have = all(os.path.exists(os.path.join(certs, f))
               for f in ("gateway.crt", "gateway.key", "mesh-ca.crt"))
    ok, report = check_config_file(EXAMPLE)
    if have:
        assert ok, report
    else:
        assert not ok and report.splitlines()[0].endswith("example.yaml: 3 error(s)")


# --------------------------------------------------------------------------- structural errors

def test_all_errors_reported_at_once() -> None:
    got = issues({
        "gateway": {"workers": 0, "backend": "quic"},
        "listeners": [{"name": "a", "port": "80", "protcol": "h2c"}],
        "http2": {"max_frame_size": 100, "initial_window_size": 1.5},
        "clusters": [{"name": "c", "endpoints": []}],
        "routes": [{"name": "r", "match": {"path_prefix": "/x"}, "cluster": "nope"}],
        "scp": {"max_forward_hops": 100, "model_c": "yes"},
        "metrics": {"port": 70000},
        "logging": {"format": "xml"},
        "extra": {},
    })
    assert got == [
        ("extra", "unknown field"),
        ("gateway.workers", "must be >= 1"),
        ("gateway.backend", "expected one of auto, h2, nghttp2, got 'quic'"),
        ("listeners[0].protcol", "unknown field"),
        ("listeners[0].port", "expected int, got str"),
        ("http2.initial_window_size", "expected int, got float"),
        ("http2.max_frame_size", "must be 16384..16777215"),
        ("clusters[0].endpoints", "must have at least 1 item(s)"),
        ("scp.model_c", "expected bool, got str"),
        ("scp.max_forward_hops", "must be 1..99"),
        ("metrics.port", "must be 0..65535"),
        ("logging.format", "expected one of json, text, got 'xml'"),
    ]


@pytest.mark.parametrize(("data", "expected"), [
    ({"listeners": [{"port": 1}]}, [("listeners[0].name", "missing required field")]),
    ({"listeners": {"name": "a"}}, [("listeners", "expected list, got mapping")]),
    ({"listeners": []}, [("listeners", "must have at least 1 item(s)")]),
    ({"gateway": []}, [("gateway", "expected mapping, got list")]),
    ({"gateway": {"workers": True}}, [("gateway.workers", "expected int, got bool")]),
    ({"gateway": {"drain_timeout_s": -1}}, [("gateway.drain_timeout_s", "must be >= 0")]),
    ({"gateway": {"drain_timeout_s": "5s"}}, [("gateway.drain_timeout_s", "expected number, got str")]),
    ({"gateway": {"name": None}}, [("gateway.name", "expected str, got null")]),
    ({"gateway": {"drain_timeout_s": float("nan")}}, [("gateway.drain_timeout_s", "must be a finite number")]),
    ({"scp": {"request_timeout_s": float("inf")}}, [("scp.request_timeout_s", "must be a finite number")]),
    ({"gateway": {"name": "a b"}},
     [("gateway.name", "must be a token (letters, digits, -._~ and the like)")]),
    ({"clusters": [{"name": "c", "endpoints": [{"host": "h", "port": 0}]}]},
     [("clusters[0].endpoints[0].port", "must be 1..65535")]),
    ({"clusters": [{"name": "c", "endpoints": [{"host": "h", "port": 1, "weight": 0}]}]},
     [("clusters[0].endpoints[0].weight", "must be >= 1")]),
    ({"clusters": [{"name": "c", "connect_timeout_s": 0, "endpoints": [{"host": "h", "port": 1}]}]},
     [("clusters[0].connect_timeout_s", "must be > 0")]),
    ({"ngap": {"amf_pools": [{"name": "p", "plmn": 1234, "endpoints": [{"addresses": ["1.1.1.1"]}]}]}},
     [("ngap.amf_pools[0].plmn", "expected str, got int")]),
    ({"ngap": {"amf_pools": [{"name": "p", "plmn": "12a45", "endpoints": [{"addresses": ["1.1.1.1"]}]}]}},
     [("ngap.amf_pools[0].plmn", "must match ^[0-9]{5,6}$")]),
    ({"ngap": {"streams": 1}}, [("ngap.streams", "must be 2..65535")]),
    ({"scp": {"allowed_targets": ["10.0.0.0/8", "bad host"]}},
     [("scp.allowed_targets[1]", "allowed target must be a CIDR, .domain or host name: 'bad host'")]),
    ({"registry": {"store": "redis"}}, [("registry.store", "expected one of etcd, memory, got 'redis'")]),
    ([], [("", "expected mapping, got list")]),
])
def test_structural_errors(data, expected) -> None:
    assert issues(data) == expected


# --------------------------------------------------------------------------- cross-field

def test_cross_field_checks() -> None:
    got = issues({
        "listeners": [
            {"name": "a", "port": 8080},
            {"name": "a", "port": 8080},
            {"name": "t", "port": 8443, "protocol": "tls"},
            {"name": "h", "port": 8081, "host": "300.1.1.1"},
        ],
        "clusters": [
            {"name": "c", "endpoints": [{"host": "bad host", "port": 80, "server_name": "x"}]},
            {"name": "c", "endpoints": [{"host": "h", "port": 80, "weight": 2}]},
        ],
        "routes": [
            {"name": "r", "match": {"path_prefix": "x"}, "cluster": "missing"},
            {"name": "r", "match": {"path_prefix": "x"}, "cluster": "c",},
            {"name": "r3", "match": {"authority": "h:99999"}, "cluster": "c"},
        ],
        "registry": {"etcd": {"endpoints": ["localhost", "h:2379"]}},
        "ngap": {"enabled": True, "listen": ["eth0"], "rto_min_ms": 5, "rto_max_ms": 4},
        "metrics": {"enabled": True, "port": 8081, "host": "0.0.0.0"},
    })
    assert got == [
        ("listeners[1].name", "duplicate listener name 'a' (first at listeners[0].name)"),
        ("listeners[1].port", "duplicate listener address ('127.0.0.1', 8080) (first at listeners[0].port)"),
        ("listeners[2].tls", "required when protocol is tls"),
        ("listeners[3].host", "not an IP address or host name: '300.1.1.1'"),
        ("clusters[1].name", "duplicate cluster name 'c' (first at clusters[0].name)"),
        ("clusters[0].endpoints[0].host", "not an IP address or host name: 'bad host'"),
        ("clusters[0].endpoints[0].server_name", "only used when tls is true"),
        ("clusters[1].lb", "endpoint weights are set: use lb: weighted"),
        ("routes[1].name", "duplicate route name 'r' (first at routes[0].name)"),
        ("routes[1].match", "duplicate route match (None, 'x') (first at routes[0].match)"),
        ("routes[0].cluster", "unknown cluster 'missing' (defined: c)"),
        ("routes[0].match.path_prefix", "must start with '/'"),
        ("routes[1].match.path_prefix", "must start with '/'"),
        ("routes[2].match.authority", "not host or host:port: 'h:99999'"),
        ("registry.etcd.endpoints[0]", "expected host:port, got 'localhost'"),
        ("ngap.listen[0]", "not an IP address: 'eth0'"),
        ("ngap.amf_pools", "at least one AMF pool needed when ngap is enabled"),
        ("ngap.rto_min_ms", "must be <= rto_max_ms (4)"),
        ("metrics.port", "same address as listeners[3] (h)"),
    ]


def test_structural_and_cross_errors_together_skip_failed_sections() -> None:
    got = issues({"clusters": [{"name": 1, "endpoints": []}],
                  "routes": [{"name": "r", "match": {}, "cluster": "c"}],
                  "listeners": [{"name": "x", "protocol": "tls"}]})
    # routes->clusters is not checked against a clusters section that failed to decode
    assert got == [
        ("clusters[0].name", "expected str, got int"),
        ("clusters[0].endpoints", "must have at least 1 item(s)"),
        ("listeners[0].tls", "required when protocol is tls"),
    ]


def test_tls_files(tmp_path) -> None:
    crt, key = write_pem_pair(tmp_path, "gw")
    other_crt, other_key = write_pem_pair(tmp_path, "other")
    (tmp_path / "junk.pem").write_text("not pem")
    ok = parse_config({"listeners": [{"name": "t", "protocol": "tls",
                                      "tls": {"cert": "gw.crt", "key": "gw.key"}}]},
                      base_dir=str(tmp_path))
    assert ok.listeners[0].tls.cert == crt
    got = issues({"listeners": [
        {"name": "a", "port": 1, "protocol": "tls",
         "tls": {"cert": "nope.crt", "key": str(tmp_path), "require_client_cert": True}},
        {"name": "b", "port": 2, "protocol": "tls",
         "tls": {"cert": "junk.pem", "key": key, "client_ca": "junk.pem"}},
        {"name": "c", "port": 3, "protocol": "tls", "tls": {"cert": other_crt, "key": key}},
        {"name": "d", "port": 4, "tls": {"cert": crt, "key": key}},
    ]}, base_dir=str(tmp_path))
    assert [p for p, _ in got] == [
        "listeners[0].tls.cert", "listeners[0].tls.key", "listeners[0].tls.require_client_cert",
        "listeners[1].tls.cert", "listeners[1].tls.client_ca", "listeners[2].tls.key",
        "listeners[3].tls"]
    reasons = [r for _, r in got]
    assert reasons[0] == f"file not found: {tmp_path / 'nope.crt'}"
    assert reasons[1] == f"not a regular file: {tmp_path}"
    assert reasons[2] == "needs tls.client_ca to verify clients"
    assert reasons[3].startswith(f"not a PEM certificate: {tmp_path / 'junk.pem'}")
    assert reasons[5] == "private key does not match the certificate"
    assert reasons[6] == "only allowed when protocol is tls"


def test_registry_checks(tmp_path) -> None:
    cfg = parse_config({"registry": {"enabled": True, "snapshot_file": "snap.json"}},
                       base_dir=str(tmp_path))
    assert cfg.registry.snapshot_file == str(tmp_path / "snap.json")
    assert issues({"registry": {"snapshot_file": "no/such/dir/s.json"}}, base_dir=str(tmp_path)) \
        == [("registry.snapshot_file", f"directory not found: {tmp_path / 'no/such/dir'}")]
    # several workers share one memory registry through the control plane (gateway.runner)
    cfg = parse_config({"gateway": {"workers": 2}, "registry": {"enabled": True}})
    assert cfg.gateway.workers == 2 and cfg.registry.store == "memory"


# --------------------------------------------------------------------------- YAML specifics

def test_yaml_errors_with_lines(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("gateway:\n  name: a\n  name: b\nlisteners:\n  - name: x\n    port: nope\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(f))
    assert info.value.errors == [
        ConfigIssue("gateway.name", "duplicate key", 3),
        ConfigIssue("listeners[0].port", "expected int, got str", 6),
    ]
    assert str(info.value).splitlines() == [
        f"{f}: 2 error(s)",
        "  line 3: gateway.name: duplicate key",
        "  line 6: listeners[0].port: expected int, got str",
    ]
    f.write_text("gateway: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(f))
    [issue] = info.value.errors
    assert issue.path == "" and issue.reason.startswith("invalid YAML: ") and issue.line == 2


def test_yaml_alias_bomb_is_bounded(tmp_path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(f))
    assert info.value.errors[0].reason == \
        "document too large (over 200000 nodes after alias expansion)"


def test_empty_file_and_unreadable(tmp_path) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("# nothing\n")
    assert load_config(str(f)) == Config()
    with pytest.raises(OSError):
        load_config(str(tmp_path / "missing.yaml"))
    ok, report = check_config_file(str(tmp_path / "missing.yaml"))
    assert not ok and report == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"
    f.write_bytes(b"gateway:\n  name: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(f))
    assert info.value.errors[0].reason == "not UTF-8 text (byte 17)"


def test_to_dict_round_trips() -> None:
    cfg = parse_config({"clusters": [{"name": "c", "endpoints": [{"host": "h", "port": 1}]}]})
    assert parse_config(to_dict(cfg)) == cfg


# --------------------------------------------------------------------------- robustness

def _shaped():
    from hypothesis import strategies as st

    keys = st.sampled_from(["gateway", "listeners", "clusters", "routes", "name", "port", "host",
                            "endpoints", "match", "path_prefix", "cluster", "tls", "cert", "lb",
                            "weight", "registry", "etcd", "ngap", "amf_pools", "addresses",
                            "enabled", "protocol", "scp", "metrics", "x"])
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(-1, 1e6),
                       st.sampled_from(["", "a", "/x", "h2c", "tls", "weighted", "1.2.3.4",
                                        "::1", "h:1", "etcd", "00101"]))
    return st.recursive(leaves, lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(keys, kids, max_size=4)), max_leaves=12)


def test_random_documents_give_config_or_config_error() -> None:
    from hypothesis import given, settings

    @settings(max_examples=300, deadline=None)
    @given(_shaped())
    def check(data) -> None:
        try:
            parse_config(data)
        except ConfigError as exc:
            assert exc.errors and all(e.reason for e in exc.errors)

    check()
