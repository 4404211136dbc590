"""Prometheus series of the zero-trust features (issue 14): token checks, TLS reloads,
revocation cuts, certificates issued by the gateway.  Read from the live objects at scrape
time (``gateway.token_checks``, ``gateway.tls_reload``, ``gateway.cert_renewal``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily


class SecurityCollector:
    """``collect()`` for the metrics registry of one gateway (worker)."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    def collect(self) -> Iterable:
        gw = self.gateway
        verifier = getattr(gw, "_token_verifier", None)
        if verifier is not None:
            v = verifier[1]
            yield CounterMetricFamily("nfmesh_oauth2_tokens_verified",
                                      "Access tokens whose signature was checked (once per token)",
                                      value=v.verified)
            yield CounterMetricFamily("nfmesh_oauth2_token_rejections",
                                      "Requests refused by the Bearer token checks (401/403)",
                                      value=v.rejections)
        svc = getattr(gw, "registry", None)
        issuer = getattr(svc, "token_issuer", None)
        if issuer is not None:
            yield CounterMetricFamily("nfmesh_oauth2_tokens_issued",
                                      "Access tokens issued by /oauth2/token",
                                      value=issuer.service.issued)
            refused = CounterMetricFamily("nfmesh_oauth2_token_requests_refused",
                                          "Access token requests answered with AccessTokenErr",
                                          labels=["error"])
            for error, n in sorted(issuer.service.refused.items()):
                refused.add_metric([error], n)
            yield refused
            yield CounterMetricFamily("nfmesh_oauth2_signing_key_rotations",
                                      "Token signing keys made (the first one included)",
                                      value=issuer.keys.rotations)
        watcher = getattr(gw, "tls_watcher", None)
        if watcher is not None:
            reloads = CounterMetricFamily("nfmesh_tls_reloads",
                                          "TLS material of a listener loaded again", labels=["listener"])
            failed = CounterMetricFamily("nfmesh_tls_reload_failures",
                                         "TLS reloads refused (the last good material stays)",
                                         labels=["listener"])
            cut = CounterMetricFamily("nfmesh_tls_revoked_connections_cut",
                                      "Connections sent GOAWAY because the client certificate "
                                      "was revoked", labels=["listener"])
            for lt in watcher.listeners:
                reloads.add_metric([lt.name], lt.reloads)
                failed.add_metric([lt.name], lt.failed_reloads)
                cut.add_metric([lt.name], lt.cut)
            yield reloads
            yield failed
            yield cut
            yield CounterMetricFamily("nfmesh_upstream_revoked_connections_retired",
                                      "Producer connections retired after their certificate "
                                      "was revoked", value=watcher.upstream_retired)
            own = getattr(watcher, "own", None)
            if own is not None:
                yield CounterMetricFamily("nfmesh_own_certificate_renewals",
                                          "Listener certificates the gateway renewed itself",
                                          value=own.renewed)
        api = getattr(gw, "_certificate_api", None)
        if api is not None:
            yield CounterMetricFamily("nfmesh_mesh_ca_certificates_issued",
                                      "Certificates issued through the CSR API", value=api.issued)
