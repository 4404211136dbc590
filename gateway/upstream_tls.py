"""TLS toward producers (config ``upstream_tls``): the upstream pools' SSL contexts and the
producer identity check (``nf_adapters.producer_identity``).

An endpoint model D chose carries the instance's id (``Endpoint.identity``): its context
verifies the chain against ``ca_file`` but leaves the host name to the identity check, which
wants the instance's ``urn:uuid:`` SAN (or its FQDN); other TLS endpoints (static clusters,
model C) get the usual host name check.  With ``cert``/``key`` the gateway presents its own
mesh certificate (mTLS), and ``crl_file`` revokes producers' certificates.  The files are
watched (``check``, from ``gateway.tls_reload``): new connections use the new material.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from dataplane.routing import Endpoint

log = logging.getLogger("nfmesh.tls")


class UpstreamTls:
    """The ``ssl_context_factory`` and ``peer_check`` of ``UpstreamPools`` for one config."""

    def __init__(self, section: Any) -> None:
        self.section = section
        self.interval = float(getattr(section, "reload_interval_s", 0) or 0)
        self.files = [f for f in (section.ca_file, section.cert, section.key,
                                  getattr(section, "crl_file", None)) if f]
        self.reloads = 0
        self._stamps = self._stat()
        self.plain, self.by_identity = self._build()

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        from dataplane.tls import client_context

        sec = self.section
        crl = getattr(sec, "crl_file", None)
        plain = client_context(sec.ca_file, sec.cert, sec.key, crl_file=crl)
        by_identity = client_context(sec.ca_file, sec.cert, sec.key, crl_file=crl)
        if sec.check_producer_identity:
            by_identity.check_hostname = False  # the identity check decides instead
            by_identity.verify_mode = ssl.CERT_REQUIRED
        return plain, by_identity

    def _stat(self) -> tuple:
        out = []
        for f in self.files:
            try:
                st = os.stat(f)
                out.append((st.st_mtime_ns, st.st_ino, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def check(self, force: bool = False) -> bool:
        """Rebuild the contexts when a file changed (new connections use them); a build that
        fails keeps the current ones."""
        stamps = self._stat()
        if not force and stamps == self._stamps:
            return False
        try:
            self.plain, self.by_identity = self._build()
        except Exception as exc:  # noqa: BLE001
            log.warning("upstream TLS files not reloaded (%s); keeping the current ones", exc)
            return False
        self._stamps = stamps
        self.reloads += 1
        return True

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
