"""The expiry of the certificates the gateway serves, as a Prometheus gauge
(``nfmesh_tls_certificate_expiry_timestamp_seconds{listener,subject}``, Unix seconds), for the
"certificate expiring" alert.  Each file is parsed again only when it changes on disk (a
renewed Secret is seen at the next scrape)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily


class CertificateExpiry:
    """Collector over the TLS listeners of a config."""

    def __init__(self, config: Any) -> None:
        self.files = [(lst.name, lst.tls.cert) for lst in config.listeners
                      if getattr(lst, "protocol", "") == "tls" and lst.tls is not None]
        self._cache: dict[str, tuple[float, str, float] | None] = {}

    def _read(self, path: str) -> tuple[str, float] | None:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        hit = self._cache.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1], hit[2]
        from cryptography import x509

        try:
            with open(path, "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
        except (OSError, ValueError):
            return None
        subject = cert.subject.rfc4514_string()
        expiry = cert.not_valid_after_utc.timestamp()
        self._cache[path] = (mtime, subject, expiry)
        return subject, expiry

    def collect(self) -> Iterable:
        g = GaugeMetricFamily("nfmesh_tls_certificate_expiry_timestamp_seconds",
                              "When the certificate a TLS listener serves expires (Unix time)",
                              labels=["listener", "subject"])
        for name, path in self.files:
            got = self._read(path)
            if got is not None:
                g.add_metric([name, got[0]], got[1])
        yield g
