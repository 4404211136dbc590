"""TLS contexts for the SBI listeners and upstream connections: TLS 1.2/1.3, ALPN "h2", mTLS.

RFC 9113 §9.2 rules are applied to TLS 1.2 (ECDHE with AEAD ciphers only, no compression, no
renegotiation); TLS 1.3 suites are OpenSSL's defaults.  Certificate and key files come from
config paths; a missing or unreadable file raises ``TLSConfigError`` naming the path.
"""

from __future__ import annotations

import os
import ssl

_H2_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TLSConfigError(ValueError):
    """A TLS setting that cannot be used (missing file, bad key, unknown version)."""


def _check_file(path: str | None, what: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise TLSConfigError(f"{what} file not found: {path}")


def _base(purpose: ssl.Purpose, min_version: str, cafile: str | None = None) -> ssl.SSLContext:
    # with a CA bundle given, trust only it (the mesh CA), never the system's public CAs too
    ctx = ssl.create_default_context(purpose, cafile=cafile)
    versions = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
    if min_version not in versions:
        raise TLSConfigError(f"min TLS version must be 1.2 or 1.3, not {min_version!r}")
    ctx.minimum_version = versions[min_version]
    ctx.set_ciphers(_H2_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    _check_file(cert_file, "certificate")
    _check_file(key_file, "private key")
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load certificate {cert_file} / key {key_file}: {exc}") from exc


def _load_crl(ctx: ssl.SSLContext, crl_file: str | None) -> None:
    """Check peer (leaf) certificates against the CRL(s) in ``crl_file`` (PEM)."""
    if crl_file is None:
        return
    _check_file(crl_file, "CRL")
    try:
        ctx.load_verify_locations(cafile=crl_file)
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load CRL {crl_file}: {exc}") from exc
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_context(
    cert_file: str,
    key_file: str | None = None,
    ca_file: str | None = None,
    require_client_cert: bool = False,
    min_version: str = "1.2",
    crl_file: str | None = None,
) -> ssl.SSLContext:
    """A listener context.  With ``ca_file`` client certificates are verified against it
    (required when ``require_client_cert``, else optional: mTLS), and against ``crl_file``
    when given (a revoked client certificate fails the handshake)."""
    _check_file(ca_file, "CA bundle")
    ctx = _base(ssl.Purpose.CLIENT_AUTH, min_version, cafile=ca_file)
    _load_chain(ctx, cert_file, key_file)
    if ca_file is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        _load_crl(ctx, crl_file)
    elif require_client_cert:
        raise TLSConfigError("require_client_cert needs a ca_file to verify client certificates")
    return ctx


class ReloadableServerContext:
    """A listener context whose files can change under it without dropping a connection.

    ``context`` is what the listener is created with; ``reload()`` builds a new context from
    the same files (``build()``) and, from then on, each new handshake switches to it in the
    ClientHello callback (OpenSSL's servername callback runs with or without SNI), so new
    handshakes present the new certificate and verify against the new CA bundle and CRL
    while established connections go on untouched.  ``changed()`` compares the files'
    stamps (mtime, inode, size: an atomic replace changes the inode).  A reload that fails
    (half-written file, key not matching) raises and keeps the current context."""

    def __init__(self, build, files) -> None:
        self.build = build
        self.files = [f for f in files if f]
        self.context: ssl.SSLContext = build()
        self.current = self.context
        self.generation = 0
        self._stamps = self._stat()
        self.context.sni_callback = self._switch

    def _stat(self) -> tuple:
        out = []
        for f in self.files:
            try:
                st = os.stat(f)
                out.append((st.st_mtime_ns, st.st_ino, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def _switch(self, sslobj, server_name, ctx) -> None:
        current = self.current
        if current is not ctx:
            sslobj.context = current
        return None

    def changed(self) -> bool:
        return self._stat() != self._stamps

    def reload(self) -> None:
        stamps = self._stat()
        ctx = self.build()
        ctx.sni_callback = self._switch
        self.current = ctx
        self._stamps = stamps
        self.generation += 1


def client_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify: bool = True,
    min_version: str = "1.2",
    crl_file: str | None = None,
) -> ssl.SSLContext:
    """An upstream context: server certificate checked against ``ca_file`` (or the system
    store) and ``crl_file`` when given; ``cert_file``/``key_file`` present our client
    certificate (mTLS)."""
    _check_file(ca_file, "CA bundle")
    ctx = _base(ssl.Purpose.SERVER_AUTH, min_version, cafile=ca_file)
    _load_crl(ctx, crl_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        _load_chain(ctx, cert_file, key_file)
    return ctx


def uri_sans(peercert: dict | None) -> list[str]:
    """The URI subjectAltNames of a peer certificate as returned by ``getpeercert()`` (the mesh
    puts the NF instance id there)."""
    if not peercert:
        return []
    return [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]
