"""The cross-field pass of config validation: checks that span fields and files.

``cross_check(cfg, decoder, base_dir, failed)`` runs after the structural decode: route
clusters exist, listener names and addresses are unique, certificate, key and CRL files exist,
hold PEM and match, TLS settings agree, ports do not collide, NF types and service names are
known; it records each problem on the decoder and returns the config with file paths made
absolute.  Sections in ``failed`` did not decode and are not checked.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from gateway.config_decode import Decoder
    from gateway.config_sections import Config, OAuth2Section

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


def _check_file(d: Decoder, path: str, value: str, base_dir: str, kind: str) -> str:
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


def _check_key_matches(d: Decoder, path: str, cert_file: str, key_file: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(cert_file, "rb") as fh:
        cert = x509.load_pem_x509_certificates(fh.read())[0]
    with open(key_file, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        d.issue(path, "private key does not match the certificate")


def _unique(d: Decoder, items: Iterable[tuple[str, object]], what: str) -> None:
    seen: dict[object, str] = {}
    for path, key in items:
        if key in seen:
            d.issue(path, f"duplicate {what} {key!r} (first at {seen[key]})")
        else:
            seen[key] = path


def cross_check(cfg: Config, d: Decoder, base_dir: str, failed: set[str]) -> Config:
    """Checks that span fields; returns the config with file paths made absolute.  Sections
    in ``failed`` did not decode (their defaults stand in) and are not checked."""
    if "gateway" not in failed and not _TOKEN_RE.match(cfg.gateway.name):
        d.issue("gateway.name", "must be a token (letters, digits, -._~ and the like)")
    if "scp" not in failed and cfg.scp.via_name is not None and not _TOKEN_RE.match(cfg.scp.via_name):
        d.issue("scp.via_name", "must be a token (letters, digits, -._~ and the like)")
    if "tracing" not in failed:
        from gateway.otlp_export import config_problems

        for path, reason in config_problems(cfg.tracing):
            d.issue(path, reason)
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


def _check_crl(d: Decoder, path: str, value: str, base_dir: str) -> str:
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


def _check_oauth2(cfg: Config, d: Decoder, base_dir: str) -> OAuth2Section:
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
