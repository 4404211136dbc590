"""TLS toward producers (config ``upstream_tls``): the upstream pools' SSL contexts and the
producer identity check (``nf_adapters.producer_identity``).

An endpoint model D chose carries the instance's id (``Endpoint.identity``): its context
verifies the chain against ``ca_file`` but leaves the host name to the identity check, which
wants the instance's ``urn:uuid:`` SAN (or its FQDN); other TLS endpoints (static clusters,
model C) get the usual host name check.  With ``cert``/``key`` the gateway presents its own
mesh certificate (mTLS).  Contexts are built once per config.
"""

from __future__ import annotations

import ssl
from typing import Any

from dataplane.routing import Endpoint


class UpstreamTls:
    """The ``ssl_context_factory`` and ``peer_check`` of ``UpstreamPools`` for one config."""

    def __init__(self, section: Any) -> None:
        from dataplane.tls import client_context

        self.section = section
        self.plain = client_context(section.ca_file, section.cert, section.key)
        self.by_identity = client_context(section.ca_file, section.cert, section.key)
        if section.check_producer_identity:
            self.by_identity.check_hostname = False  # the identity check decides instead
            self.by_identity.verify_mode = ssl.CERT_REQUIRED

    def context(self, endpoint: Endpoint) -> ssl.SSLContext:
        if endpoint.identity is not None and self.section.check_producer_identity:
            return self.by_identity
        return self.plain

    def pool_options(self) -> dict:
        from nf_adapters.producer_identity import check_producer

        return {"ssl_context_factory": self.context,
                "peer_check": check_producer if self.section.check_producer_identity else None}


def pool_options(config: Any) -> dict:
    """Keyword arguments for ``UpstreamPools`` from the config's ``upstream_tls``."""
    section = getattr(config, "upstream_tls", None)
    if section is None:
        return {}
    return UpstreamTls(section).pool_options()
