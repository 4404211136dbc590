"""Certificate rotation and revocation for a running gateway (issue 14, items 3 and 4).

* **Listeners**: each TLS listener's context is a ``dataplane.tls.ReloadableServerContext``
  over ``cert``, ``key``, ``client_ca`` and ``crl_file``.  When one of them changes (checked
  every ``reload_interval_s``) or on SIGHUP (``Gateway.reload``), a new context is built and
  new handshakes use it; established connections are not touched.  A file caught
  half-written fails the build: the last good context stays and the next check tries again.
* **Revocation**: with ``crl_file`` set, client certificates are checked against it at each
  handshake (``VERIFY_CRL_CHECK_LEAF``); after each (re)load the open connections are
  walked and those whose client certificate the CRL now lists get GOAWAY, then are closed
  ``REVOKED_GRACE_S`` later: so a revoked identity is cut within ``reload_interval_s``.
  The CRL's signature is checked against the CA bundle before anything is cut.
* **Upstream**: ``gateway.upstream_tls.UpstreamTls`` rebuilds its contexts when its files
  change (new connections to producers use them).

``listener_context(gateway, tls)`` is what ``Gateway.start`` calls per TLS listener; the
watcher task ends when the gateway's listeners are closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dataplane.tls import ReloadableServerContext, server_context

log = logging.getLogger("nfmesh.tls")

REVOKED_GRACE_S = 1.0  # after the GOAWAY, a revoked peer's connection is closed this much later
_SERIAL = "cert_serial"  # peer_info cache: (issuer DER, serial) of the client certificate


def _read_pems(path: str | None, loader) -> list:
    if not path:
        return []
    with open(path, "rb") as fh:
        data = fh.read(16 << 20)
    if loader is x509.load_pem_x509_crl:
        out = []
        marker = b"-----BEGIN X509 CRL-----"
        for part in data.split(marker)[1:]:
            out.append(x509.load_pem_x509_crl(marker + part))
        return out
    return loader(data)


def _signed_by(crl: x509.CertificateRevocationList, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        key = ca.public_key()
        if isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)) \
                and crl.is_signature_valid(key):
            return True
    return False


def revoked_serials(crl_file: str | None, ca_file: str | None) -> set[tuple[bytes, int]]:
    """(issuer name DER, serial) of every certificate the CRL file revokes, counting only
    CRLs that a CA of ``ca_file`` signed."""
    if not crl_file:
        return set()
    cas = _read_pems(ca_file, x509.load_pem_x509_certificates)
    out: set[tuple[bytes, int]] = set()
    for crl in _read_pems(crl_file, x509.load_pem_x509_crl):
        if not _signed_by(crl, cas):
            log.warning("%s: a CRL not signed by the listener's CA bundle is ignored", crl_file)
            continue
        issuer = crl.issuer.public_bytes()
        out.update((issuer, r.serial_number) for r in crl)
    return out


def _peer_serial(conn: Any) -> tuple[bytes, int] | None:
    info = getattr(conn, "peer_info", None) or {}
    if _SERIAL in info:
        return info[_SERIAL]
    key = None
    sslobj = info.get("sslobject")
    if sslobj is not None:
        try:
            der = sslobj.getpeercert(True)
        except (ValueError, AttributeError):
            der = None
        if der:
            try:
                cert = x509.load_der_x509_certificate(der)
                key = (cert.issuer.public_bytes(), cert.serial_number)
            except ValueError:
                key = None
    info[_SERIAL] = key
    return key


class ListenerTls:
    """One TLS listener's reloadable context and revocation cut."""

    def __init__(self, tls: Any, name: str = "") -> None:
        self.tls = tls
        self.name = name
        self.reloadable = ReloadableServerContext(
            lambda: server_context(tls.cert, tls.key, ca_file=tls.client_ca,
                                   require_client_cert=tls.require_client_cert,
                                   crl_file=getattr(tls, "crl_file", None)),
            [tls.cert, tls.key, tls.client_ca, getattr(tls, "crl_file", None)])
        self.interval = float(getattr(tls, "reload_interval_s", 0) or 0)
        self.revoked = self._revoked()
        self.reloads = 0
        self.failed_reloads = 0
        self.cut = 0

    @property
    def context(self):
        return self.reloadable.context

    def _revoked(self) -> set[tuple[bytes, int]]:
        try:
            return revoked_serials(getattr(self.tls, "crl_file", None), self.tls.client_ca)
        except (OSError, ValueError) as exc:
            log.warning("listener %s: CRL not read: %s", self.name, exc)
            return getattr(self, "revoked", set())

    def check(self, connections: Any, force: bool = False) -> bool:
        """Reload when a file changed (or ``force``); then cut revoked peers.  True when a
        new context was loaded."""
        if not (force or self.reloadable.changed()):
            return False
        try:
            self.reloadable.reload()
        except Exception as exc:  # noqa: BLE001 (keep serving with the last good material)
            self.failed_reloads += 1
            log.warning("listener %s: TLS files not reloaded (%s); keeping the current ones",
                        self.name, exc)
            return False
        self.reloads += 1
        self.revoked = self._revoked()
        log.info("listener %s: TLS material reloaded (generation %d)", self.name,
                 self.reloadable.generation)
        self.cut_revoked(connections)
        return True

    def cut_revoked(self, connections: Any) -> int:
        """GOAWAY (then close) every connection whose client certificate is revoked."""
        if not self.revoked or not connections:
            return 0
        n = 0
        loop = asyncio.get_running_loop()
        for conn in list(connections):
            if getattr(conn, "_nfmesh_revoked", False):
                continue
            key = _peer_serial(conn)
            if key is not None and key in self.revoked:
                log.warning("listener %s: client certificate serial %x revoked: GOAWAY to %s",
                            self.name, key[1], conn.peer_info.get("peername"))
                conn._nfmesh_revoked = True
                conn.drain()
                loop.call_later(REVOKED_GRACE_S, _close, conn)
                n += 1
        self.cut += n
        return n


def _sslobj_serial(sslobj: Any) -> tuple[bytes, int] | None:
    try:
        der = sslobj.getpeercert(True)
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, AttributeError, TypeError):
        return None
    return cert.issuer.public_bytes(), cert.serial_number


def retire_revoked_producers(pools: Any, section: Any) -> int:
    """After ``upstream_tls`` was reloaded: connections to producers whose certificate its CRL
    now lists get GOAWAY and are closed once their streams are done (new connections to them
    fail the handshake)."""
    crl = getattr(section, "crl_file", None)
    if not crl or pools is None:
        return 0
    try:
        revoked = revoked_serials(crl, section.ca_file)
    except (OSError, ValueError) as exc:
        log.warning("upstream CRL not read: %s", exc)
        return 0
    if not revoked:
        return 0
    n = pools.retire_where(lambda sslobj: _sslobj_serial(sslobj) in revoked)
    if n:
        log.warning("%d producer connection(s) retired: certificate revoked", n)
    return n


def _close(conn: Any) -> None:
    if not getattr(conn, "closed", False):
        conn.close()


class TlsWatcher:
    """Checks the gateway's listener and upstream TLS files; one per gateway."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.listeners: list[ListenerTls] = []
        self._task: asyncio.Task | None = None
        self.upstream_retired = 0  # producer connections retired after a CRL change

    def add(self, lt: ListenerTls) -> None:
        self.listeners.append(lt)
        if self._task is None and self.interval() > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def interval(self) -> float:
        vals = [lt.interval for lt in self.listeners if lt.interval > 0]
        up = self._upstream()
        if up is not None and up.interval > 0:
            vals.append(up.interval)
        return min(vals) if vals else 0.0

    def _upstream(self) -> Any:
        pools = getattr(self.gateway, "pools", None)
        factory = getattr(pools, "ssl_context_factory", None)
        return getattr(factory, "__self__", None) if factory is not None else None

    def _own_renewal(self) -> Any:
        section = getattr(getattr(self.gateway, "config", None), "mesh_ca", None)
        if section is None or not section.renew_own or not section.dir:
            return None
        own = getattr(self, "own", None)
        if own is None:
            from gateway.cert_renewal import OwnRenewal

            own = self.own = OwnRenewal(section)
        return own

    def _connections(self) -> Any:
        proxy = getattr(self.gateway, "proxy", None)
        return getattr(proxy, "connections", ())

    def check(self, force: bool = False) -> None:
        conns = self._connections()
        own = self._own_renewal()
        if own is not None:
            own.check(self.listeners)  # mesh_ca.renew_own: rewrites the files when due
        for lt in self.listeners:
            lt.check(conns, force)
        up = self._upstream()
        if up is not None and hasattr(up, "check") and up.check(force):
            self.upstream_retired += retire_revoked_producers(self.gateway.pools, up.section)

    async def _run(self) -> None:
        servers = self.gateway._servers
        while True:
            await asyncio.sleep(self.interval() or 1.0)
            if servers and not any(s.is_serving() for s in servers):
                return  # the gateway stopped
            try:
                self.check()
            except Exception:  # noqa: BLE001 (the watcher must outlive one bad check)
                log.exception("TLS reload check failed")


def watcher_of(gateway: Any) -> TlsWatcher:
    w = getattr(gateway, "tls_watcher", None)
    if w is None:
        w = gateway.tls_watcher = TlsWatcher(gateway)
    return w


def listener_context(gateway: Any, tls: Any, name: str = "") -> Any:
    """The SSL context for a TLS listener of ``gateway``, watched for rotation."""
    lt = ListenerTls(tls, name)
    watcher_of(gateway).add(lt)
    return lt.context


def reload_now(gateway: Any) -> None:
    """SIGHUP / admin reload: load every TLS file again now."""
    w = getattr(gateway, "tls_watcher", None)
    if w is not None:
        w.check(force=True)
    else:
        factory = getattr(getattr(gateway, "pools", None), "ssl_context_factory", None)
        up = getattr(factory, "__self__", None)
        if up is not None and hasattr(up, "check") and up.check(True):
            retire_revoked_producers(gateway.pools, up.section)


__all__ = ["ListenerTls", "TlsWatcher", "listener_context", "reload_now", "revoked_serials"]
