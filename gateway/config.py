"""The one typed configuration of nfmesh, loaded from YAML and validated at the edge.

``load_config(path)`` / ``parse_config(data)`` return a frozen ``Config`` (msgspec Structs) or
raise ``ConfigError`` listing EVERY problem found, each a ``ConfigIssue`` with the field's path
(``listeners[0].tls.cert``), the YAML line when known, and the reason ("file not found",
"expected int, got str", "unknown field", "must be 1..65535").  Nothing is half-applied: a
config either validates whole or is refused (the gateway keeps its last good snapshot on a
reload).

Validation has two passes: a structural decode driven by the Struct definitions
(types, ranges, enums, unknown keys), then cross-field checks (route clusters exist, unique
listener names and ports, certificate files exist, consistent TLS settings...).  YAML duplicate
keys are errors (PyYAML would silently keep the last one), and alias expansion is bounded.

The model (every section's Struct, ``ConfigIssue``, ``ConfigError``) lives in
``gateway.config_sections``, the structural decode in ``gateway.config_decode`` and the
cross-field checks in ``gateway.config_checks``; this module is the entry points and re-exports
the model, so ``from gateway.config import Listener`` keeps working.

``Config()`` is the no-file default: one h2c listener on 127.0.0.1:8080 routing SCP model C.
``check_config_file(path)`` is the ``nfmesh config check FILE`` report.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import msgspec.inspect as mi

from gateway.config_checks import cross_check
from gateway.config_decode import BAD, MAX_NODES, Decoder, load_yaml, type_name
from gateway.config_sections import (
    AdminSection,
    AmfPool,
    AuthzSection,
    Cluster,
    Config,
    ConfigError,
    ConfigIssue,
    ConsumerRateSection,
    EndpointSection,
    EtcdSection,
    GatewaySection,
    Http2Section,
    Int31,
    Listener,
    ListenerTls,
    LoggingSection,
    MeshCaSection,
    MetricsSection,
    NgapEndpoint,
    NgapReplication,
    NgapSection,
    NonNegFloat,
    NonNegInt,
    OAuth2IssuerSection,
    OAuth2Section,
    OAuth2VerifySection,
    OutlierSection,
    OverloadLimitSection,
    OverloadQueueSection,
    OverloadSection,
    Port,
    PortOrAny,
    PosFloat,
    PosInt,
    Priority,
    RegistrySection,
    RetryBudgetSection,
    Route,
    RouteMatch,
    ScpSection,
    Share,
    TracingSection,
    UpstreamTlsSection,
)

MAX_CONFIG_BYTES = 4 << 20
__all__ = [
    "AdminSection",
    "AmfPool",
    "AuthzSection",
    "Cluster",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConsumerRateSection",
    "EndpointSection",
    "EtcdSection",
    "GatewaySection",
    "Http2Section",
    "Int31",
    "Listener",
    "ListenerTls",
    "LoggingSection",
    "MAX_CONFIG_BYTES",
    "MAX_NODES",
    "MeshCaSection",
    "MetricsSection",
    "NO_FILE",
    "NgapEndpoint",
    "NgapReplication",
    "NgapSection",
    "NonNegFloat",
    "NonNegInt",
    "OAuth2IssuerSection",
    "OAuth2Section",
    "OAuth2VerifySection",
    "OutlierSection",
    "OverloadLimitSection",
    "OverloadQueueSection",
    "OverloadSection",
    "Port",
    "PortOrAny",
    "PosFloat",
    "PosInt",
    "Priority",
    "RegistrySection",
    "RetryBudgetSection",
    "Route",
    "RouteMatch",
    "ScpSection",
    "Share",
    "TracingSection",
    "UpstreamTlsSection",
    "check_config_file",
    "load_config",
    "no_file_config",
    "parse_config",
    "to_dict",
]


_CONFIG_INFO = mi.type_info(Config)
_SECTIONS = {f.encode_name: f for f in _CONFIG_INFO.fields}


def parse_config(data: Any, source: str = "<dict>", *, base_dir: str | None = None,
                 _lines: dict[str, int] | None = None) -> Config:
    """Validate ``data`` (a dict as YAML would give) into a ``Config``.  Relative file paths
    are resolved against ``base_dir`` (default: the current directory)."""
    if data is None:
        data = {}
    d = Decoder(_lines or {})
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", f"expected mapping, got {type_name(data)}")], source)
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
            if v is BAD:
                failed.add(name)
            else:
                sections[name] = v
    cfg = cross_check(Config(**sections), d, base_dir or os.getcwd(), failed)
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
    data, lines, issues = load_yaml(text)
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
