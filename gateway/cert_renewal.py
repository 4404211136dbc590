"""Short-lived certificates without operator action (config ``mesh_ca``; issue 14, item 3).

* **CSR API** (``mesh_ca.csr_api``): ``POST /nfmesh-ca/v1/certificate`` with a PEM PKCS#10
  request (``application/pkcs10``) answers 201 with a new certificate (PEM,
  ``application/pem-certificate-chain``) for the caller's *current* identity: the NF instance
  id, NF type, DNS names and IP addresses of the mesh certificate it authenticated with on
  this connection, bound to the key of the request (whose signature proves possession).  The
  subject and extensions the request asks for are ignored; without a verified mesh
  certificate the answer is 401.  A revoked certificate never gets this far (the listener's
  CRL refuses the handshake).
* **Own renewal** (``mesh_ca.renew_own``): once 2/3 of a TLS listener certificate's lifetime
  has passed, the gateway issues itself a new one for the same identity and names, writes the
  key and certificate files (atomically, each) and reloads the listener; connections stay up.

``nfmesh ca`` keeps working offline (the same CA directory) for bootstrap.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from typing import Any

from dataplane.routing import LocalResponse, LocalService, Request
from nf_adapters.problem_details import problem

log = logging.getLogger("nfmesh.ca")

PATH = b"/nfmesh-ca/v1/certificate"
PEM_CHAIN = b"application/pem-certificate-chain"


def _sans(peercert: dict) -> tuple[list[str], list[str]]:
    dns = [v for k, v in peercert.get("subjectAltName", ()) if k == "DNS"]
    ips = []
    for k, v in peercert.get("subjectAltName", ()):
        if k == "IP Address":
            try:
                ips.append(str(ipaddress.ip_address(v.strip())))
            except ValueError:
                pass
    return dns, ips


class CertificateApi:
    """The CSR endpoint's handler over a loaded ``gateway.ca.MeshCA``."""

    def __init__(self, ca: Any, days: int = 1) -> None:
        self.ca = ca
        self.days = days
        self.issued = 0
        self.service = LocalService("mesh-ca", self.handle, max_body=64 * 1024)

    async def handle(self, req: Request) -> LocalResponse:
        from gateway.ca import CAError
        from gateway.identity import peer_identity

        if req.method != "POST":
            return problem(405, "INVALID_API", f"{req.method} not allowed here")
        ident = peer_identity(req.peer)
        if ident is None:
            return problem(401, "", "a verified mesh client certificate is needed to renew it")
        if ident.nf_type is None:
            return problem(403, "", "the client certificate names no NF type")
        dns, ips = _sans(req.peer.get("peercert") or {})
        try:
            pem = self.ca.sign_csr(req.body, ident.nf_type, ident.instance_id, dns, ips,
                                   days=self.days)
        except CAError as exc:
            return problem(400, "INVALID_MSG_FORMAT", str(exc))
        self.issued += 1
        log.info("certificate renewed through the CSR API for %s %s", ident.nf_type,
                 ident.instance_id)
        return LocalResponse(201, [(b"content-type", PEM_CHAIN),
                                   (b"content-length", str(len(pem)).encode())], pem)


class CertificateApiRouter:
    """Claims ``POST /nfmesh-ca/v1/certificate``; everything else goes to ``inner``."""

    __slots__ = ("inner", "api", "_inner_try")

    def __init__(self, inner: Any, api: CertificateApi) -> None:
        self.inner = inner
        self.api = api
        self._inner_try = getattr(inner, "try_route", None) or inner.route

    def _claims(self, headers: Any) -> bool:
        for k, v in headers:
            if k == b":path":
                return v == PATH
        return False

    def route(self, headers: Any, peer: dict) -> Any:
        return self.api.service if self._claims(headers) else self.inner.route(headers, peer)

    def try_route(self, headers: Any, peer: dict) -> Any:
        return self.api.service if self._claims(headers) else self._inner_try(headers, peer)


def wrap(holder: Any, router: Any) -> Any:
    """``router`` behind the CSR endpoint when ``mesh_ca.csr_api`` is on."""
    section = getattr(holder.config, "mesh_ca", None)
    if section is None or not section.csr_api or not section.dir:
        return router
    api = getattr(holder, "_certificate_api", None)
    if api is None:
        from gateway.ca import MeshCA

        api = holder._certificate_api = CertificateApi(MeshCA.load(section.dir), section.cert_days)
    return CertificateApiRouter(router, api)


def due(cert: Any, now: datetime.datetime | None = None) -> bool:
    """Whether 2/3 of ``cert``'s lifetime has passed."""
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * 2 / 3


def renew_listener_certificate(ca: Any, cert_file: str, key_file: str, days: int) -> bool:
    """Renew the certificate in ``cert_file`` when due: same NF identity and names, a new key;
    returns whether it did."""
    from cryptography import x509

    from gateway.identity import certificate_identity, peercert_dict

    with open(cert_file, "rb") as fh:
        cert = x509.load_pem_x509_certificates(fh.read())[0]
    if not due(cert):
        return False
    ident = certificate_identity(cert)
    if ident is None or ident.nf_type is None:
        log.warning("%s: no mesh NF identity in it; not renewed", cert_file)
        return False
    dns, ips = _sans(peercert_dict(cert))
    new_cert, new_key = ca.issue(ident.nf_type, ident.instance_id, dns, ips, days=days,
                                 common_name=ident.common_name)
    # key first: a reload between the two writes fails on the mismatch and keeps the old pair
    _write(key_file, new_key, 0o600)
    _write(cert_file, new_cert, 0o644)
    log.info("renewed %s (%s %s) until %s", cert_file, ident.nf_type, ident.instance_id,
             x509.load_pem_x509_certificate(new_cert).not_valid_after_utc.isoformat())
    return True


def _write(path: str, data: bytes, mode: int) -> None:
    from gateway.ca import _write_atomic

    _write_atomic(path, data, mode, force=True)


class OwnRenewal:
    """Renews the gateway's TLS listener certificates (checked by the TLS watcher)."""

    def __init__(self, section: Any) -> None:
        from gateway.ca import MeshCA

        self.ca = MeshCA.load(section.dir)
        self.days = section.cert_days
        self.renewed = 0

    def check(self, listeners: list) -> None:
        for lt in listeners:
            try:
                if renew_listener_certificate(self.ca, lt.tls.cert, lt.tls.key, self.days):
                    self.renewed += 1
            except Exception:  # noqa: BLE001 (keep the current certificate; try again later)
                log.exception("renewing %s failed", lt.tls.cert)
