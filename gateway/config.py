"""The one typed configuration of nfmesh, loaded from YAML and validated at the edge.

``load_config(path)`` / ``parse_config(data)`` return a frozen ``Config`` (msgspec Structs) or
raise ``ConfigError`` listing EVERY problem found, each a ``ConfigIssue`` with the field's path
(``listeners[0].tls.cert``), the YAML line when known, and the reason ("file not found",
"expected int, got str", "unknown field", "must be 1..65535").  Nothing is half-applied: a
config either validates whole or is refused (the gateway keeps its last good snapshot on a
reload).

Validation has two passes: a structural decode driven by the Struct definitions below
(types, ranges, enums, unknown keys), then cross-field checks (route clusters exist, unique
listener names and ports, certificate files exist, consistent TLS settings...).  YAML duplicate
keys are errors (PyYAML would silently keep the last one), and alias expansion is bounded.

``Config()`` is the no-file default: one h2c listener on 127.0.0.1:8080 routing SCP model C.
``check_config_file(path)`` is the ``nfmesh config check FILE`` report.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect as mi
import yaml

from dataplane.engine import H2Settings

MAX_CONFIG_BYTES = 4 << 20
MAX_NODES = 200_000  # YAML nodes after alias expansion

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PortOrAny = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: an ephemeral port (tests)
PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
Int31 = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]

_STRUCT = {"forbid_unknown_fields": True, "frozen": True, "kw_only": True}


class ConfigIssue(msgspec.Struct, frozen=True):
    """One problem: where (dotted path, YAML line when known) and why."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(document)"
        return f"line {self.line}: {where}: {self.reason}" if self.line else f"{where}: {self.reason}"


class ConfigError(ValueError):
    """The config is invalid; ``errors`` lists every issue found."""

    def __init__(self, errors: list[ConfigIssue], source: str = "<config>") -> None:
        self.errors = list(errors)
        self.source = source
        lines = [f"{source}: {len(self.errors)} error(s)"] + [f"  {e}" for e in self.errors]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# the model

class GatewaySection(msgspec.Struct, **_STRUCT):
    name: str = "nfmesh"  # in Via (SCP-<name>) and producer ids
    workers: PosInt | None = None  # data-plane processes; null = number of cores
    backend: Literal["auto", "nghttp2", "h2"] = "auto"
    drain_timeout_s: NonNegFloat = 10.0


class ListenerTls(msgspec.Struct, **_STRUCT):
    cert: str
    key: str
    client_ca: str | None = None  # set: client certificates are verified (mTLS)
    require_client_cert: bool = False
    crl_file: str | None = None  # client certificates are checked against it (mesh-ca.crl)
    # cert, key, client_ca and crl_file are watched: a change applies to new handshakes
    # without dropping a connection, and a client certificate the CRL now revokes gets
    # GOAWAY on its open connections, both within this many seconds (0: only on SIGHUP)
    reload_interval_s: NonNegFloat = 1.0


class Listener(msgspec.Struct, **_STRUCT):
    name: str
    host: str = "127.0.0.1"
    port: PortOrAny = 8080
    protocol: Literal["h2c", "tls"] = "h2c"
    tls: ListenerTls | None = None


class Http2Section(msgspec.Struct, **_STRUCT):
    max_concurrent_streams: Int31 = 1000
    initial_window_size: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 1 << 20
    connection_window_size: Annotated[int, msgspec.Meta(ge=65535, le=2**31 - 1)] = 16 << 20
    max_frame_size: Annotated[int, msgspec.Meta(ge=16384, le=16777215)] = 16384
    max_header_list_size: Annotated[int, msgspec.Meta(ge=1024, le=2**31 - 1)] = 65536
    header_table_size: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 4096
    max_resets_per_second: PosInt = 1000
    max_control_frames_per_second: PosInt = 1000
    max_header_bytes_per_second: PosInt = 64 << 20
    max_refused_streams_per_second: PosInt = 100
    max_retained_body: NonNegInt = 65536

    def to_h2_settings(self) -> H2Settings:
        """The engine's settings object."""
        return H2Settings(**{f: getattr(self, f) for f in self.__struct_fields__})


class EndpointSection(msgspec.Struct, **_STRUCT):
    host: str
    port: Port
    weight: PosInt = 1
    tls: bool = False
    server_name: str | None = None  # SNI and certificate name; default: host when a name


class Cluster(msgspec.Struct, **_STRUCT):
    name: str
    endpoints: Annotated[list[EndpointSection], msgspec.Meta(min_length=1)]
    lb: Literal["round_robin", "weighted"] = "round_robin"
    connect_timeout_s: PosFloat = 2.0
    request_timeout_s: PosFloat | None = None  # null: scp.request_timeout_s
    max_connections: PosInt = 4


class RouteMatch(msgspec.Struct, **_STRUCT):
    path_prefix: str = "/"
    authority: str | None = None  # "host" (any port) or "host:port"; null = any


class Route(msgspec.Struct, **_STRUCT):
    name: str
    match: RouteMatch
    cluster: str
    timeout_s: PosFloat | None = None


class UpstreamTlsSection(msgspec.Struct, **_STRUCT):
    """TLS toward producers (endpoints with tls: true, model D producers with scheme https)."""

    ca_file: str | None = None  # producers' CA bundle (the mesh CA); null: the system store
    cert: str | None = None  # the gateway's client certificate (mTLS toward producers)
    key: str | None = None
    crl_file: str | None = None  # producers' certificates are checked against it
    reload_interval_s: NonNegFloat = 1.0  # the files are watched (0: only on SIGHUP)
    check_producer_identity: bool = True  # model D: the certificate must be the chosen
    # instance's (urn:uuid SAN, else a DNS SAN = its FQDN), else the next producer is tried


class ScpSection(msgspec.Struct, **_STRUCT):
    model_c: bool = True  # honour 3gpp-Sbi-Target-apiRoot
    max_forward_hops: Annotated[int, msgspec.Meta(ge=1, le=99)] = 8
    via_name: str | None = None  # Via pseudonym SCP-<via_name>; null = gateway.name
    request_timeout_s: PosFloat = 30.0  # when neither Max-Rsp-Time nor the route says
    allowed_targets: list[str] = msgspec.field(default_factory=list)  # model C targets: CIDR,
    # .domain suffix or host; empty = any (an open proxy: set it in production)


class EtcdSection(msgspec.Struct, **_STRUCT):
    endpoints: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["127.0.0.1:2379"])
    prefix: str = "/nfmesh/registry"
    timeout_s: PosFloat = 2.0


class RegistrySection(msgspec.Struct, **_STRUCT):
    enabled: bool = False
    store: Literal["memory", "etcd"] = "memory"
    snapshot_file: str | None = None
    etcd: EtcdSection = msgspec.field(default_factory=EtcdSection)
    heartbeat_timer_s: PosInt = 10
    heartbeat_grace_s: NonNegInt = 5
    suspended_removal_s: NonNegFloat = 3600.0
    nrf_api: bool = True
    api_root: str | None = None  # this NRF's apiRoot in notifications; null = first listener
    subscription_validity_s: PosInt = 86400
    discovery_validity_s: PosInt = 60
    notify_via: str | None = None  # "host:port" of the mesh listener notifications go through
    notify_attempts: PosInt = 4
    notify_queue: PosInt = 10000
    sweep_interval_s: PosFloat = 0.5


class NgapEndpoint(msgspec.Struct, **_STRUCT):
    addresses: Annotated[list[str], msgspec.Meta(min_length=1)]  # multi-homed: several IPs
    port: Port = 38412


class AmfPool(msgspec.Struct, **_STRUCT):
    name: str
    endpoints: Annotated[list[NgapEndpoint], msgspec.Meta(min_length=1)]
    plmn: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{5,6}$")] = "00101"  # MCC+MNC digits
    amf_set_id: Annotated[int, msgspec.Meta(ge=0, le=1023)] = 1
    relative_capacity: Annotated[int, msgspec.Meta(ge=0, le=255)] = 255
    # TACs this pool serves: a gNB none of whose TAs is served gets NG Setup Failure; [] = any
    tacs: list[Annotated[int, msgspec.Meta(ge=0, le=2**24 - 1)]] = msgspec.field(
        default_factory=list)


class NgapReplication(msgspec.Struct, **_STRUCT):
    """Established UEs' records shared by the N2 proxy replicas (gateway/n2_replica.py)."""

    etcd: list[str] = msgspec.field(default_factory=list)  # "host:port"; [] = not replicated
    prefix: str = "/nfmesh/n2"
    ttl_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30  # a dead replica's records last


class NgapSection(msgspec.Struct, **_STRUCT):
    enabled: bool = False
    listen: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["127.0.0.1"])
    port: PortOrAny = 38412
    streams: Annotated[int, msgspec.Meta(ge=2, le=65535)] = 16
    amf_pools: list[AmfPool] = msgspec.field(default_factory=list)
    heartbeat_interval_ms: PosInt = 30000
    rto_min_ms: PosInt = 1000
    rto_max_ms: PosInt = 60000
    ue_release_timeout_s: PosFloat = 10.0  # a UE context whose release never completes
    # this replica's number (its UE id range, 0..255); null: a single proxy
    replica: Annotated[int, msgspec.Meta(ge=0, le=255)] | None = None
    replication: NgapReplication = msgspec.field(default_factory=NgapReplication)


class MetricsSection(msgspec.Struct, **_STRUCT):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: PortOrAny = 9090


class AdminSection(msgspec.Struct, **_STRUCT):
    """The admin API (``gateway.admin``): health, readiness, config, routes, clusters, NF
    instances, metrics, drain and reload, for probes and ``nfmesh ctl``.  Loopback by default:
    drain and reload change the gateway, so expose it only where operators can reach it."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: PortOrAny = 9901


class TracingSection(msgspec.Struct, **_STRUCT):
    """W3C Trace Context on forwarded requests (``gateway.tracing``)."""

    enabled: bool = False
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0  # new traces sampled (flag 01)


class LoggingSection(msgspec.Struct, **_STRUCT):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    format: Literal["json", "text"] = "text"


class MeshCaSection(msgspec.Struct, **_STRUCT):
    """The mesh CA in the gateway (its directory, with the key): short-lived certificates
    renewed without operator action (``gateway.cert_renewal``)."""

    dir: str | None = None  # the mesh CA directory (nfmesh ca init); null: none of this
    csr_api: bool = False  # POST /nfmesh-ca/v1/certificate: an NF renews its certificate,
    # authenticated by its current one (same identity, the key of its CSR)
    renew_own: bool = False  # the TLS listeners' certificate is renewed after 2/3 of its lifetime
    cert_days: PosInt = 1  # validity of the certificates the gateway issues


class AuthzSection(msgspec.Struct, **_STRUCT):
    """Which NF type (from the caller's mesh certificate) may call which SBI service."""

    enabled: bool = False
    default: Literal["allow", "deny"] = "deny"  # for services not listed
    services: dict[str, list[str]] = msgspec.field(default_factory=dict)  # service -> NF types, "*"


class OAuth2IssuerSection(msgspec.Struct, **_STRUCT):
    """The NRF's ``POST /oauth2/token`` (needs the registry with its NRF API)."""

    enabled: bool = False
    ca_dir: str | None = None  # the mesh CA directory: it certifies the signing keys
    algorithm: Literal["ES256", "RS256"] = "ES256"
    lifetime_s: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 3600  # expires_in of tokens
    rotate_every_s: NonNegFloat = 86400.0  # a new signing key (kid) this often; 0 = never
    jwks_file: str | None = None  # where the public keys are published; null: <ca_dir>/nrf-token-keys.jwks
    instance_id: str | None = None  # iss; null = derived from gateway.name


class OAuth2VerifySection(msgspec.Struct, **_STRUCT):
    """Bearer token checks at the gateway, per SBI service (``nf_adapters.bearer``)."""

    enabled: bool = False
    default: Literal["required", "off"] = "off"  # for services not listed
    services: dict[str, Literal["required", "off"]] = msgspec.field(default_factory=dict)
    ca_file: str | None = None  # the mesh CA certificate: signing keys must chain to it
    jwks_file: str | None = None  # the issuer's JWKS; null = oauth2.issuer's
    forward_token: bool = True  # false: the Authorization header is stripped before producers
    clock_skew_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 5.0
    cache_size: PosInt = 10000  # verified tokens kept
    realm: str = "nfmesh"


class OAuth2Section(msgspec.Struct, **_STRUCT):
    """OAuth2 access tokens (TS 29.510 Nnrf_AccessToken, TS 33.501 §13.4.1)."""

    issuer: OAuth2IssuerSection = msgspec.field(default_factory=OAuth2IssuerSection)
    verify: OAuth2VerifySection = msgspec.field(default_factory=OAuth2VerifySection)


Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=31)]


class OverloadLimitSection(msgspec.Struct, **_STRUCT):
    """The adaptive concurrency limit per producer endpoint (a gradient on latency)."""

    initial: PosInt = 16
    min: PosInt = 2
    max: PosInt = 1000
    window_s: PosFloat = 0.05
    tolerance: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.5
    min_rtt_ms: NonNegFloat = 5.0  # the no-load response time is taken as at least this
    probe_interval_s: PosFloat = 5.0
    probe_samples: PosInt = 16


class OverloadQueueSection(msgspec.Struct, **_STRUCT):
    """The wait queue per producer: priority then deadline; queue delay is the signal."""

    max_length: PosInt = 1024
    target_delay_ms: PosFloat = 50.0  # the least a request may wait in a standing queue
    wait_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1  # ... or this share of its
    max_wait_ms: PosFloat = 1000.0  # budget (deadline), up to this
    interval_ms: PosFloat = 100.0


class OutlierSection(msgspec.Struct, **_STRUCT):
    consecutive_failures: PosInt = 5
    base_ejection_s: PosFloat = 2.0
    max_ejection_s: PosFloat = 60.0
    max_ejected_share: Share = 0.5


class RetryBudgetSection(msgspec.Struct, **_STRUCT):
    share: Share = 0.2  # reselections + retries in flight, as a share of requests in flight
    min: NonNegInt = 3


class ConsumerRateSection(msgspec.Struct, **_STRUCT):
    rate_per_s: NonNegFloat = 0.0  # per consumer and worker; 0 = no per-consumer bucket
    burst: PosFloat = 2000.0
    fair_share: bool = True  # under overload no consumer holds more than its share of a queue


class OverloadSection(msgspec.Struct, **_STRUCT):
    """Overload protection of the SBI path (on by default; see dataplane/admission.py)."""

    enabled: bool = True
    default_priority: Priority = 24  # for requests without 3gpp-Sbi-Message-Priority
    top_band: Priority = 7  # 0..top_band (MPS, emergency): shed last, may use the reserve
    reserved_share: Annotated[float, msgspec.Meta(ge=0, le=0.9)] = 0.1
    limit: OverloadLimitSection = msgspec.field(default_factory=OverloadLimitSection)
    queue: OverloadQueueSection = msgspec.field(default_factory=OverloadQueueSection)
    outlier: OutlierSection = msgspec.field(default_factory=OutlierSection)
    retry_budget: RetryBudgetSection = msgspec.field(default_factory=RetryBudgetSection)
    consumer: ConsumerRateSection = msgspec.field(default_factory=ConsumerRateSection)
    honour_oci: bool = True  # shed toward producers that send 3gpp-Sbi-Oci; use their Lci
    self_lag_target_ms: PosFloat = 50.0  # event-loop lag that means the gateway is overloaded
    own_oci_validity_s: PosInt = 5  # the OCI (scope SCP-FQDN) sent while overloaded

    def to_settings(self):
        """The data plane's ``AdmissionSettings``."""
        from dataplane.admission import AdmissionSettings

        return AdmissionSettings(
            enabled=self.enabled, default_priority=self.default_priority,
            top_band=self.top_band, reserved_share=self.reserved_share,
            initial_limit=self.limit.initial, min_limit=self.limit.min,
            max_limit=self.limit.max, window_s=self.limit.window_s,
            tolerance=self.limit.tolerance, rtt_floor_s=self.limit.min_rtt_ms / 1000.0,
            probe_interval_s=self.limit.probe_interval_s,
            probe_samples=self.limit.probe_samples, queue_max=self.queue.max_length,
            queue_target_s=self.queue.target_delay_ms / 1000.0,
            queue_interval_s=self.queue.interval_ms / 1000.0,
            queue_wait_share=self.queue.wait_share,
            queue_max_wait_s=self.queue.max_wait_ms / 1000.0,
            consecutive_failures=self.outlier.consecutive_failures,
            base_ejection_s=self.outlier.base_ejection_s,
            max_ejection_s=self.outlier.max_ejection_s,
            max_ejected_share=self.outlier.max_ejected_share,
            retry_budget_share=self.retry_budget.share, retry_min=self.retry_budget.min,
            consumer_rate_per_s=self.consumer.rate_per_s, consumer_burst=self.consumer.burst,
            fair_share=self.consumer.fair_share,
            self_lag_target_s=self.self_lag_target_ms / 1000.0,
        )


def _default_listeners() -> list[Listener]:
    return [Listener(name="sbi", host="127.0.0.1", port=8080, protocol="h2c")]


class Config(msgspec.Struct, **_STRUCT):
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    listeners: Annotated[list[Listener], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=_default_listeners)
    http2: Http2Section = msgspec.field(default_factory=Http2Section)
    clusters: list[Cluster] = msgspec.field(default_factory=list)
    routes: list[Route] = msgspec.field(default_factory=list)
    scp: ScpSection = msgspec.field(default_factory=ScpSection)
    registry: RegistrySection = msgspec.field(default_factory=RegistrySection)
    upstream_tls: UpstreamTlsSection = msgspec.field(default_factory=UpstreamTlsSection)
    ngap: NgapSection = msgspec.field(default_factory=NgapSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    tracing: TracingSection = msgspec.field(default_factory=TracingSection)
    logging: LoggingSection = msgspec.field(default_factory=LoggingSection)
    authz: AuthzSection = msgspec.field(default_factory=AuthzSection)
    mesh_ca: MeshCaSection = msgspec.field(default_factory=MeshCaSection)
    oauth2: OAuth2Section = msgspec.field(default_factory=OAuth2Section)
    overload: OverloadSection = msgspec.field(default_factory=OverloadSection)

    @property
    def via_name(self) -> str:
        return self.scp.via_name or self.gateway.name


# ---------------------------------------------------------------------------------------------
# YAML with duplicate-key detection, line numbers and bounded alias expansion

class _Yaml:
    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self.issues: list[ConfigIssue] = []
        self.nodes = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, path: str) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = self.constructor.construct_object(knode, deep=True)
                if not isinstance(key, str):
                    self.issues.append(ConfigIssue(path, f"keys must be strings, got {key!r}",
                                                   knode.start_mark.line + 1))
                    continue
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.issues.append(ConfigIssue(sub, "duplicate key", knode.start_mark.line + 1))
                    continue
                out[key] = self.convert(vnode, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


class _TooBig(Exception):
    pass


def _load_yaml(text: str) -> tuple[Any, dict[str, int], list[ConfigIssue]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, {}, [ConfigIssue("", f"invalid YAML: {problem}",
                                      mark.line + 1 if mark else None)]
    if node is None:
        return {}, {}, []
    conv = _Yaml()
    try:
        data = conv.convert(node, "")
    except _TooBig:
        return None, {}, [ConfigIssue("", f"document too large (over {MAX_NODES} nodes "
                                          "after alias expansion)")]
    except yaml.YAMLError as exc:
        return None, {}, [ConfigIssue("", f"invalid YAML value: {exc}")]
    return data, conv.lines, conv.issues


# ---------------------------------------------------------------------------------------------
# structural decode: every error, with its path

_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping",
          type(None): "null"}


def _tname(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _describe(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.StrType):
        return "str"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.ListType):
        return "list"
    if isinstance(t, mi.StructType):
        return "mapping"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(x) for x in t.types)
    return "value"


def _range_reason(t: Any, value: float) -> str | None:
    lo = t.ge if t.ge is not None else t.gt
    hi = t.le if t.le is not None else t.lt
    bad = ((t.ge is not None and value < t.ge) or (t.gt is not None and value <= t.gt)
           or (t.le is not None and value > t.le) or (t.lt is not None and value >= t.lt))
    if not bad:
        return None
    if t.ge is not None and t.le is not None:
        return f"must be {t.ge}..{t.le}"
    if lo is not None and hi is None:
        return f"must be {'>=' if t.ge is not None else '>'} {lo}"
    return f"must be {'<=' if t.le is not None else '<'} {hi}"


class _Decoder:
    def __init__(self, lines: dict[str, int]) -> None:
        self.lines = lines
        self.issues: list[ConfigIssue] = []

    def issue(self, path: str, reason: str) -> None:
        line = self.lines.get(path)
        if line is None and "." in path:
            line = self.lines.get(path.rsplit(".", 1)[0])
        self.issues.append(ConfigIssue(path, reason, line))

    def decode(self, t: mi.Type, value: Any, path: str) -> Any:
        """The converted value, or ``_BAD`` after recording the issue."""
        if isinstance(t, mi.UnionType):
            if value is None and any(isinstance(x, mi.NoneType) for x in t.types):
                return None
            others = [x for x in t.types if not isinstance(x, mi.NoneType)]
            if len(others) == 1:
                if value is None:
                    self.issue(path, f"expected {_describe(others[0])}, got null")
                    return _BAD
                return self.decode(others[0], value, path)
            self.issue(path, f"expected {_describe(t)}, got {_tname(value)}")
            return _BAD
        if isinstance(t, mi.StructType):
            return self.struct(t, value, path)
        if isinstance(t, mi.ListType):
            if not isinstance(value, list):
                self.issue(path, f"expected list, got {_tname(value)}")
                return _BAD
            if t.min_length is not None and len(value) < t.min_length:
                self.issue(path, f"must have at least {t.min_length} item(s)")
                return _BAD
            out = [self.decode(t.item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return _BAD if any(v is _BAD for v in out) else out
        if isinstance(t, mi.DictType):
            if not isinstance(value, dict):
                self.issue(path, f"expected mapping, got {_tname(value)}")
                return _BAD
            out_d = {}
            for k, v in value.items():
                key = self.decode(t.key_type, k, f"{path}.{k}")
                out_d[key] = self.decode(t.value_type, v, f"{path}.{k}")
            bad = any(x is _BAD for x in (*out_d, *out_d.values()))
            return _BAD if bad else out_d
        if isinstance(t, mi.LiteralType):
            if value not in t.values or type(value) is bool:
                self.issue(path, f"expected one of {', '.join(map(str, t.values))}, got {value!r}")
                return _BAD
            return value
        if isinstance(t, mi.BoolType):
            if type(value) is not bool:
                self.issue(path, f"expected bool, got {_tname(value)}")
                return _BAD
            return value
        if isinstance(t, mi.IntType):
            if type(value) is not int:
                self.issue(path, f"expected int, got {_tname(value)}")
                return _BAD
            reason = _range_reason(t, value)
            if reason:
                self.issue(path, reason)
                return _BAD
            return value
        if isinstance(t, mi.FloatType):
            if type(value) not in (int, float):
                self.issue(path, f"expected number, got {_tname(value)}")
                return _BAD
            if not math.isfinite(value):
                self.issue(path, "must be a finite number")
                return _BAD
            reason = _range_reason(t, value)
            if reason:
                self.issue(path, reason)
                return _BAD
            return float(value)
        if isinstance(t, mi.StrType):
            if type(value) is not str:
                self.issue(path, f"expected str, got {_tname(value)}")
                return _BAD
            if t.min_length is not None and len(value) < t.min_length:
                self.issue(path, "must not be empty")
                return _BAD
            if t.pattern is not None and not re.search(t.pattern, value):
                self.issue(path, f"must match {t.pattern}")
                return _BAD
            return value
        if isinstance(t, mi.NoneType):
            if value is not None:
                self.issue(path, f"expected null, got {_tname(value)}")
                return _BAD
            return None
        raise TypeError(f"config model uses an unsupported type {t!r}")  # a bug in this file

    def struct(self, t: mi.StructType, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            self.issue(path, f"expected mapping, got {_tname(value)}")
            return _BAD
        known = {f.encode_name: f for f in t.fields}
        bad = False
        for key in value:
            if key not in known:
                sub = f"{path}.{key}" if path else str(key)
                self.issue(sub, "unknown field")
                bad = True
        kwargs = {}
        for f in t.fields:
            sub = f"{path}.{f.encode_name}" if path else f.encode_name
            if f.encode_name not in value:
                if f.required:
                    self.issue(sub, "missing required field")
                    bad = True
                continue
            v = self.decode(f.type, value[f.encode_name], sub)
            if v is _BAD:
                bad = True
            else:
                kwargs[f.name] = v
        if bad:
            return _BAD
        return t.cls(**kwargs)


_BAD = object()


# ---------------------------------------------------------------------------------------------
# cross-field checks

_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_\-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_\-]{0,62}))*\.?$")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        return False  # looks like IPv4 but is not one
    return bool(_HOSTNAME_RE.match(host))


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return _valid_host(host)


def _resolve(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _check_file(d: _Decoder, path: str, value: str, base_dir: str, kind: str) -> str:
    """Resolve, check the file exists and holds a PEM ``kind`` ("cert" or "key").  Returns
    the absolute path ('' when it is unusable)."""
    full = _resolve(value, base_dir)
    if not os.path.exists(full):
        d.issue(path, f"file not found: {full}")
        return ""
    if not os.path.isfile(full):
        d.issue(path, f"not a regular file: {full}")
        return ""
    try:
        with open(full, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        d.issue(path, f"file not readable: {full} ({exc.strerror})")
        return ""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        if kind == "cert":
            x509.load_pem_x509_certificates(data)
        else:
            serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        what = "PEM certificate" if kind == "cert" else "unencrypted PEM private key"
        d.issue(path, f"not a {what}: {full} ({str(exc).splitlines()[0][:80]})")
        return ""
    return full


def _check_key_matches(d: _Decoder, path: str, cert_file: str, key_file: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(cert_file, "rb") as fh:
        cert = x509.load_pem_x509_certificates(fh.read())[0]
    with open(key_file, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        d.issue(path, "private key does not match the certificate")


def _unique(d: _Decoder, items: Iterable[tuple[str, object]], what: str) -> None:
    seen: dict[object, str] = {}
    for path, key in items:
        if key in seen:
            d.issue(path, f"duplicate {what} {key!r} (first at {seen[key]})")
        else:
            seen[key] = path


def _cross_check(cfg: Config, d: _Decoder, base_dir: str, failed: set[str]) -> Config:
    """Checks that span fields; returns the config with file paths made absolute.  Sections
    in ``failed`` did not decode (their defaults stand in) and are not checked."""
    if "gateway" not in failed and not _TOKEN_RE.match(cfg.gateway.name):
        d.issue("gateway.name", "must be a token (letters, digits, -._~ and the like)")
    if "scp" not in failed and cfg.scp.via_name is not None and not _TOKEN_RE.match(cfg.scp.via_name):
        d.issue("scp.via_name", "must be a token (letters, digits, -._~ and the like)")
    if "scp" not in failed:
        from nf_adapters.scp_router import TargetPolicy

        for i, entry in enumerate(cfg.scp.allowed_targets):
            try:
                TargetPolicy([entry])
            except ValueError as exc:
                d.issue(f"scp.allowed_targets[{i}]", str(exc))

    listeners = []
    _unique(d, ((f"listeners[{i}].name", lst.name) for i, lst in enumerate(cfg.listeners)),
            "listener name")
    _unique(d, ((f"listeners[{i}].port", (lst.host, lst.port))
                for i, lst in enumerate(cfg.listeners) if lst.port), "listener address")
    for i, lst in enumerate(cfg.listeners):
        p = f"listeners[{i}]"
        if not lst.name:
            d.issue(f"{p}.name", "must not be empty")
        if not _valid_host(lst.host):
            d.issue(f"{p}.host", f"not an IP address or host name: {lst.host!r}")
        tls = lst.tls
        if lst.protocol == "tls" and tls is None:
            d.issue(f"{p}.tls", "required when protocol is tls")
        elif lst.protocol == "h2c" and tls is not None:
            d.issue(f"{p}.tls", "only allowed when protocol is tls")
        if tls is not None:
            cert = _check_file(d, f"{p}.tls.cert", tls.cert, base_dir, "cert")
            key = _check_file(d, f"{p}.tls.key", tls.key, base_dir, "key")
            ca = (_check_file(d, f"{p}.tls.client_ca", tls.client_ca, base_dir, "cert")
                  if tls.client_ca is not None else None)
            if cert and key:
                _check_key_matches(d, f"{p}.tls.key", cert, key)
            if tls.require_client_cert and tls.client_ca is None:
                d.issue(f"{p}.tls.require_client_cert", "needs tls.client_ca to verify clients")
            crl = tls.crl_file
            if crl is not None:
                if tls.client_ca is None:
                    d.issue(f"{p}.tls.crl_file", "needs tls.client_ca (CRLs check client certificates)")
                crl = _check_crl(d, f"{p}.tls.crl_file", crl, base_dir)
            tls = msgspec.structs.replace(tls, cert=cert or tls.cert, key=key or tls.key,
                                          client_ca=ca or tls.client_ca, crl_file=crl or tls.crl_file)
            lst = msgspec.structs.replace(lst, tls=tls)
        listeners.append(lst)

    _unique(d, ((f"clusters[{i}].name", c.name) for i, c in enumerate(cfg.clusters)),
            "cluster name")
    for i, c in enumerate(cfg.clusters):
        if not c.name:
            d.issue(f"clusters[{i}].name", "must not be empty")
        for j, ep in enumerate(c.endpoints):
            if not _valid_host(ep.host):
                d.issue(f"clusters[{i}].endpoints[{j}].host",
                        f"not an IP address or host name: {ep.host!r}")
            if ep.server_name is not None and not ep.tls:
                d.issue(f"clusters[{i}].endpoints[{j}].server_name", "only used when tls is true")
        if c.lb == "round_robin" and any(ep.weight != 1 for ep in c.endpoints):
            d.issue(f"clusters[{i}].lb", "endpoint weights are set: use lb: weighted")
    ov = cfg.overload
    if ov.limit.min > ov.limit.max:
        d.issue("overload.limit.min", f"must not exceed overload.limit.max ({ov.limit.max})")
    if not ov.limit.min <= ov.limit.initial <= ov.limit.max:
        d.issue("overload.limit.initial",
                f"must be within overload.limit.min..max ({ov.limit.min}..{ov.limit.max})")
    if ov.queue.target_delay_ms > ov.queue.max_wait_ms:
        d.issue("overload.queue.target_delay_ms",
                f"must not exceed overload.queue.max_wait_ms ({ov.queue.max_wait_ms:g})")
    if ov.queue.target_delay_ms > ov.queue.interval_ms:
        d.issue("overload.queue.target_delay_ms",
                f"must not exceed overload.queue.interval_ms ({ov.queue.interval_ms:g})")
    if ov.default_priority <= ov.top_band and ov.enabled:
        d.issue("overload.default_priority",
                f"is inside the top band (0..{ov.top_band}): requests without a priority would "
                "all be treated as MPS/emergency")
    names = {c.name for c in cfg.clusters}
    _unique(d, ((f"routes[{i}].name", r.name) for i, r in enumerate(cfg.routes)), "route name")
    _unique(d, ((f"routes[{i}].match", (r.match.authority, r.match.path_prefix))
                for i, r in enumerate(cfg.routes)), "route match")
    for i, r in enumerate(cfg.routes):
        if r.cluster not in names and "clusters" not in failed:
            d.issue(f"routes[{i}].cluster", f"unknown cluster {r.cluster!r}"
                    + (f" (defined: {', '.join(sorted(names))})" if names else " (none defined)"))
        if not r.match.path_prefix.startswith("/"):
            d.issue(f"routes[{i}].match.path_prefix", "must start with '/'")
        if r.match.authority is not None:
            a = r.match.authority
            host = a[1:a.find("]")] if a.startswith("[") else a.rsplit(":", 1)[0] if ":" in a else a
            if not _valid_host(host) or (":" in a and not a.startswith("[") and not _host_port(a)):
                d.issue(f"routes[{i}].match.authority", f"not host or host:port: {a!r}")

    reg = cfg.registry
    for j, ep in enumerate(reg.etcd.endpoints):
        if not _host_port(ep):
            d.issue(f"registry.etcd.endpoints[{j}]", f"expected host:port, got {ep!r}")
    if reg.snapshot_file is not None:
        full = _resolve(reg.snapshot_file, base_dir)
        if not os.path.isdir(os.path.dirname(full)):
            d.issue("registry.snapshot_file", f"directory not found: {os.path.dirname(full)}")
        reg = msgspec.structs.replace(reg, snapshot_file=full)

    from nf_adapters.discovery import NF_TYPES

    for svc, types in cfg.authz.services.items():
        for j, nf_type in enumerate(types):
            if nf_type != "*" and nf_type not in NF_TYPES:
                d.issue(f"authz.services.{svc}[{j}]", f"unknown NF type {nf_type!r} (TS 29.510 NFType, or *)")

    ng = cfg.ngap
    for j, addr in enumerate(ng.listen):
        if not _is_ip(addr):
            d.issue(f"ngap.listen[{j}]", f"not an IP address: {addr!r}")
    _unique(d, ((f"ngap.amf_pools[{i}].name", p.name) for i, p in enumerate(ng.amf_pools)),
            "AMF pool name")
    for i, pool in enumerate(ng.amf_pools):
        for j, ep in enumerate(pool.endpoints):
            for k, addr in enumerate(ep.addresses):
                if not _is_ip(addr):
                    d.issue(f"ngap.amf_pools[{i}].endpoints[{j}].addresses[{k}]",
                            f"not an IP address: {addr!r}")
    if ng.enabled and not ng.amf_pools:
        d.issue("ngap.amf_pools", "at least one AMF pool needed when ngap is enabled")
    if ng.rto_min_ms > ng.rto_max_ms:
        d.issue("ngap.rto_min_ms", f"must be <= rto_max_ms ({ng.rto_max_ms})")
    if ng.enabled and ng.replication.etcd and ng.replica is None:
        d.issue("ngap.replica", "needed with ngap.replication.etcd (each replica its own "
                "number, 0..255)")

    m = cfg.metrics
    if m.enabled and m.port and "listeners" not in failed:
        for i, lst in enumerate(cfg.listeners):
            if lst.port == m.port and (lst.host == m.host or "0.0.0.0" in (lst.host, m.host)
                                       or "::" in (lst.host, m.host)):
                d.issue("metrics.port", f"same address as listeners[{i}] ({lst.name})")
    a = cfg.admin
    if a.enabled and a.port and "listeners" not in failed:
        for i, lst in enumerate(cfg.listeners):
            if lst.port == a.port and (lst.host == a.host or "0.0.0.0" in (lst.host, a.host)
                                       or "::" in (lst.host, a.host)):
                d.issue("admin.port", f"same address as listeners[{i}] ({lst.name})")
        if m.enabled and m.port == a.port and (m.host == a.host or "0.0.0.0" in (m.host, a.host)
                                                or "::" in (m.host, a.host)):
            d.issue("admin.port", "same address as metrics.port")
    if ng.enabled and ng.port and "listeners" not in failed:
        for i, lst in enumerate(cfg.listeners):
            if lst.port == ng.port and lst.host in ng.listen:
                d.issue("ngap.port", f"same address as listeners[{i}] ({lst.name})")
    oauth2 = cfg.oauth2 if "oauth2" not in failed else None
    if oauth2 is not None:
        oauth2 = _check_oauth2(cfg, d, base_dir)
    up = cfg.upstream_tls
    if "upstream_tls" not in failed:
        if (up.cert is None) != (up.key is None):
            d.issue("upstream_tls.cert" if up.cert is None else "upstream_tls.key",
                    "cert and key go together")
        up = msgspec.structs.replace(up, **{
            name: _check_file(d, f"upstream_tls.{name}", getattr(up, name), base_dir,
                              "key" if name == "key" else "cert")
            for name in ("ca_file", "cert", "key") if getattr(up, name) is not None})
        if up.crl_file is not None:
            up = msgspec.structs.replace(
                up, crl_file=_check_crl(d, "upstream_tls.crl_file", up.crl_file, base_dir))
    mca = cfg.mesh_ca
    if "mesh_ca" not in failed:
        if mca.dir is not None:
            mca = msgspec.structs.replace(mca, dir=_resolve(mca.dir, base_dir))
            if not os.path.isfile(os.path.join(mca.dir, "mesh-ca.key")):
                d.issue("mesh_ca.dir", f"no mesh CA (mesh-ca.key) in {mca.dir}")
        elif mca.csr_api or mca.renew_own:
            d.issue("mesh_ca.dir", "needed by csr_api and renew_own")
    return msgspec.structs.replace(cfg, listeners=listeners, registry=reg,
                                   oauth2=oauth2 or cfg.oauth2, upstream_tls=up, mesh_ca=mca)


def _check_crl(d: _Decoder, path: str, value: str, base_dir: str) -> str:
    """Resolve and check a PEM CRL file; the absolute path ('' when unusable)."""
    full = _resolve(value, base_dir)
    try:
        with open(full, "rb") as fh:
            data = fh.read(16 << 20)
    except OSError as exc:
        d.issue(path, f"file not readable: {full} ({exc.strerror})")
        return ""
    from cryptography import x509

    try:
        x509.load_pem_x509_crl(data)
    except ValueError:
        d.issue(path, f"not a PEM CRL: {full}")
        return ""
    return full


def _check_oauth2(cfg: Config, d: _Decoder, base_dir: str) -> OAuth2Section:
    """oauth2: the issuer needs the registry and a mesh CA directory; the verifier a CA
    certificate and a JWKS (its own or the issuer's); service names like authz's."""
    iss, ver = cfg.oauth2.issuer, cfg.oauth2.verify
    if iss.enabled:
        if not cfg.registry.enabled:
            d.issue("oauth2.issuer.enabled", "needs registry.enabled (the NRF API serves /oauth2/token)")
        if iss.ca_dir is None:
            d.issue("oauth2.issuer.ca_dir", "needed: the mesh CA directory certifies the signing keys")
        else:
            full = _resolve(iss.ca_dir, base_dir)
            if not os.path.isfile(os.path.join(full, "mesh-ca.key")):
                d.issue("oauth2.issuer.ca_dir", f"no mesh CA (mesh-ca.key) in {full}")
            iss = msgspec.structs.replace(iss, ca_dir=full)
        if iss.instance_id is not None and not re.fullmatch(
                r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                iss.instance_id):
            d.issue("oauth2.issuer.instance_id", "must be a UUID (NfInstanceId)")
        if iss.jwks_file is not None:
            iss = msgspec.structs.replace(iss, jwks_file=_resolve(iss.jwks_file, base_dir))
    if ver.enabled:
        if ver.ca_file is None:
            d.issue("oauth2.verify.ca_file", "needed: the mesh CA certificate the signing keys chain to")
        else:
            ver = msgspec.structs.replace(
                ver, ca_file=_check_file(d, "oauth2.verify.ca_file", ver.ca_file, base_dir, "cert"))
        if ver.jwks_file is not None:
            ver = msgspec.structs.replace(ver, jwks_file=_resolve(ver.jwks_file, base_dir))
        elif not iss.enabled:
            d.issue("oauth2.verify.jwks_file", "needed when oauth2.issuer is off")
    from nf_adapters.bearer import valid_service_name

    for svc in ver.services:
        if not valid_service_name(svc):
            d.issue(f"oauth2.verify.services.{svc}", "not an SBI service name (like nudm-sdm)")
    return msgspec.structs.replace(cfg.oauth2, issuer=iss, verify=ver)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# entry points

_CONFIG_INFO = mi.type_info(Config)
_SECTIONS = {f.encode_name: f for f in _CONFIG_INFO.fields}


def parse_config(data: Any, source: str = "<dict>", *, base_dir: str | None = None,
                 _lines: dict[str, int] | None = None) -> Config:
    """Validate ``data`` (a dict as YAML would give) into a ``Config``.  Relative file paths
    are resolved against ``base_dir`` (default: the current directory)."""
    if data is None:
        data = {}
    d = _Decoder(_lines or {})
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", f"expected mapping, got {_tname(data)}")], source)
    # decode section by section so that cross-field checks still run on the sections that
    # decoded (every error in one report); a failed section is replaced by its default and the
    # checks that read it are skipped
    sections: dict[str, Any] = {}
    failed: set[str] = set()
    for key in data:
        if key not in _SECTIONS:
            d.issue(str(key), "unknown field")
    for name, f in _SECTIONS.items():
        if name in data:
            v = d.decode(f.type, data[name], name)
            if v is _BAD:
                failed.add(name)
            else:
                sections[name] = v
    cfg = _cross_check(Config(**sections), d, base_dir or os.getcwd(), failed)
    if d.issues:
        raise ConfigError(d.issues, source)
    return cfg


NO_FILE: dict = {"registry": {"enabled": True}}  # what `nfmesh run` serves without -c


def no_file_config() -> Config:
    """``nfmesh run`` without a file: the defaults (h2c on 127.0.0.1:8080, SCP model C) plus
    the NRF API of an in-memory registry, so that registering and discovering an NF (and
    model D on what registered) work on a first try."""
    return parse_config(NO_FILE, "<no file>")


def load_config(path: str) -> Config:
    """Read and validate a YAML file; raises ``ConfigError`` (invalid) or ``OSError``
    (unreadable).  Relative file names inside are relative to the file's directory."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigIssue("", f"file larger than {MAX_CONFIG_BYTES} bytes")], path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"not UTF-8 text (byte {exc.start})")], path) from None
    data, lines, issues = _load_yaml(text)
    if data is None:
        raise ConfigError(issues, path)
    base_dir = os.path.dirname(os.path.abspath(path))
    try:
        cfg = parse_config(data, path, base_dir=base_dir, _lines=lines)
    except ConfigError as exc:
        raise ConfigError(issues + exc.errors, path) from None
    if issues:  # duplicate keys: everything else was fine
        raise ConfigError(issues, path)
    return cfg


def check_config_file(path: str) -> tuple[bool, str]:
    """``nfmesh config check FILE``: (ok, a report for people)."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"{path}: cannot read: {exc.strerror or exc}"
    lines = [f"{path}: OK"]
    for lst in cfg.listeners:
        mtls = " mTLS" if lst.tls is not None and lst.tls.client_ca else ""
        host = f"[{lst.host}]" if ":" in lst.host else lst.host
        lines.append(f"  listener {lst.name}: {lst.protocol}{mtls} {host}:{lst.port}")
    lines.append(f"  scp: model C {'on' if cfg.scp.model_c else 'off'}, via SCP-{cfg.via_name}, "
                 f"max forward hops {cfg.scp.max_forward_hops}")
    lines.append(f"  clusters: {len(cfg.clusters)}, routes: {len(cfg.routes)}")
    lines.append(f"  registry: {'on (' + cfg.registry.store + ')' if cfg.registry.enabled else 'off'}")
    lines.append(f"  ngap: {'on, ' + str(len(cfg.ngap.amf_pools)) + ' AMF pool(s)' if cfg.ngap.enabled else 'off'}")
    lines.append(f"  metrics: {'on ' + cfg.metrics.host + ':' + str(cfg.metrics.port) if cfg.metrics.enabled else 'off'}")
    lines.append(f"  admin: {'on ' + cfg.admin.host + ':' + str(cfg.admin.port) if cfg.admin.enabled else 'off'}")
    return True, "\n".join(lines)


def to_dict(cfg: Config) -> dict:
    """The config as plain data (defaults included), e.g. to print the effective config."""
    return msgspec.to_builtins(cfg)
