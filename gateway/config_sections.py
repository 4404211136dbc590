"""The typed model of nfmesh's configuration: one frozen msgspec Struct per YAML section.

Each Struct forbids unknown fields and declares its types, ranges and enums; ``Config`` is the
whole document, and ``Config()`` the no-file default (one h2c listener on 127.0.0.1:8080
routing SCP model C).  ``ConfigIssue``/``ConfigError`` are how every validation problem is
reported.  Loading and validating YAML into these classes is ``gateway.config``'s job
(``gateway.config_decode`` for the structural pass, ``gateway.config_checks`` for the
cross-field one); ``from gateway.config import X`` works for every name here.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from dataplane.engine import H2Settings

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
    # response bytes held for a spliced stream whose client does not read (zero window), and
    # for all of one downstream connection's streams beyond 16 KiB each
    relay_stream_buffer: Annotated[int, msgspec.Meta(ge=16384, le=2**31 - 1)] = 64 << 10
    relay_connection_buffer: NonNegInt = 1 << 20

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
    max_connections: PosInt = 16  # opened as needed; headroom over streams pinned by non-readers


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
    """W3C Trace Context on forwarded requests (``gateway.tracing``) and, with an
    ``otlp_endpoint``, one span per sampled request exported over OTLP/HTTP
    (``gateway.otlp_export``; needs the ``otel`` extra)."""

    enabled: bool = False
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0  # new traces sampled (flag 01)
    # OTLP/HTTP traces URL (http://collector:4318/v1/traces; /v1/traces added to a bare
    # host:port); empty: no spans.  The export settings below need a restart to change
    otlp_endpoint: str = ""
    otlp_timeout_s: PosFloat = 10.0  # one export POST
    service_name: str = "nfmesh"  # the spans' resource service.name
    otlp_queue_size: PosInt = 2048  # spans waiting for export; more are dropped and counted
    otlp_batch_size: PosInt = 512  # spans per export request (at most)
    otlp_flush_interval_ms: PosInt = 500  # a batch leaves at least this often


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
    # one consumer holds at most this share of a producer endpoint's in-flight slots (limit >= 4)
    max_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.75


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
            fair_share=self.consumer.fair_share, consumer_max_share=self.consumer.max_share,
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
