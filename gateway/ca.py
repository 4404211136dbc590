"""The mesh certificate authority (``nfmesh ca ...``): a small CA that issues NF identities.

One EC P-256 CA (``mesh-ca.crt`` / ``mesh-ca.key``, basicConstraints CA:true pathlen 0) signs
end-entity certificates for NFs and for the gateway itself.  An NF certificate follows the
TS 33.310 NF certificate profile where it speaks and ``gateway.identity``'s documented scheme
where it does not:

* URI SAN ``urn:uuid:<nfInstanceId>`` (TS 33.310); the NF type in the RFC 9310 NFTypes
  extension and in the subject ``O=nfmesh, OU=<NFType>, CN=<first DNS name or TYPE-id>``
  (see ``gateway.identity``);
* DNS and IP SANs as asked; EKU serverAuth + clientAuth (an NF is both producer and consumer);
  keyUsage digitalSignature; validity never beyond the CA's.

The command line (``init``, ``issue``, ``gateway``, ``show``, ``verify``, ``revoke``, ``crl``,
``example``) is ``nfmesh_cli.ca``; this module is the library it calls.  Input errors raise
``CAInputError``, failed operations ``CAError``.  Keys are written 0600, atomically (temp file
+ rename), and nothing is overwritten unless asked (``force``).  Python API:
``MeshCA.create``, ``MeshCA.load``, ``MeshCA.issue``, ``MeshCA.sign_csr``, ``MeshCA.revoke``,
``MeshCA.publish_crl``, ``write_pair``, ``write_cert``, ``read_certs``, ``describe``,
``verify``.  Revocation: ``mesh-ca.crl`` (written empty by ``init``) is the revocation list and
its own database; a listener checks it by loading it beside the CA bundle with
``ssl.VERIFY_CRL_CHECK_LEAF``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import stat
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.identity import (
    NFTYPES_OID,
    URN_UUID_PREFIX,
    NfIdentity,
    certificate_identity,
    encode_nf_types,
    peercert_dict,
    rfc9310_nf_types,
)
from nf_adapters.discovery import NF_TYPES

CA_CERT_FILE = "mesh-ca.crt"
CA_KEY_FILE = "mesh-ca.key"
CRL_FILE = "mesh-ca.crl"
DEFAULT_CRL_DAYS = 30
REVOCATION_REASONS = {  # RFC 5280 CRLReason names an operator uses
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
}
DEFAULT_CA_NAME = "nfmesh mesh CA"
DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 365
MAX_DAYS = 36500
MAX_SANS = 64
CLOCK_SKEW = datetime.timedelta(minutes=5)  # notBefore is back-dated this much
ORGANIZATION = "nfmesh"
# gateway instance ids are derived from the gateway name (stable across re-issues)
GATEWAY_ID_NAMESPACE = uuid.UUID("0b7d3c8e-2f4a-5e61-9a0c-6d1f8e2b4c73")

_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_RE = re.compile(rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*\.?$")


class CAError(Exception):
    """A CA operation that cannot be done (no CA in the directory, file exists, bad CA files)."""


class CAInputError(CAError, ValueError):
    """Bad input to the CA (NF type, instance id, DNS name, IP address, days)."""


# ---- input checks ---------------------------------------------------------------------------

def check_nf_type(nf_type: str) -> str:
    """The NFType (TS 29.510) named by ``nf_type`` (case-insensitive), or CAInputError."""
    canonical = nf_type.strip().upper()
    if canonical not in NF_TYPES:
        raise CAInputError(
            f"unknown NF type {nf_type!r}: must be one of the NFType values of TS 29.510 "
            f"(e.g. AMF, SMF, AUSF, UDM, PCF, NRF, SCP)")
    return canonical


def check_instance_id(instance_id: str | uuid.UUID) -> str:
    """A NfInstanceId: a UUID in 8-4-4-4-12 form (``urn:uuid:`` prefix allowed), lowercased."""
    text = str(instance_id).strip()  # a uuid.UUID is welcome too
    if text.lower().startswith(URN_UUID_PREFIX):
        text = text[len(URN_UUID_PREFIX):]
    if not re.fullmatch(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                        r"[0-9A-Fa-f]{12}", text):
        raise CAInputError(
            f"invalid NF instance id {instance_id!r}: must be a UUID like "
            f"{uuid.UUID(int=0x4f1c2b0e3d5a4c6e8f7a9b1c2d3e4f50)} (TS 29.510 NfInstanceId)")
    return text.lower()


def check_dns(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        if len(name) > 253 or not _DNS_RE.match(name):
            raise CAInputError(f"invalid DNS name {name!r}")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            raise CAInputError(f"{name!r} is an IP address, not a DNS name (use --ip / ips=)")
        out.append(name.rstrip(".").lower())
    return out


def check_ips(addresses: Iterable[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = []
    for text in addresses:
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            raise CAInputError(f"invalid IP address {text!r}") from None
    return out


def check_days(days: int) -> int:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise CAInputError(f"days must be an integer in 1..{MAX_DAYS}, not {days!r}")
    return days


def gateway_instance_id(name: str) -> str:
    """The stable NF instance id of a gateway named ``name`` (UUID v5)."""
    return str(uuid.uuid5(GATEWAY_ID_NAMESPACE, name))


# ---- files ----------------------------------------------------------------------------------

def _write_atomic(path: str, data: bytes, mode: int, force: bool) -> None:
    if os.path.lexists(path) and not force:
        raise CAError(f"{path} exists (use --force to overwrite)")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pem")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:  # no-clobber even against a concurrent writer: link fails if path exists
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CAError(f"{path} exists (use --force to overwrite)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_pair(prefix: str, cert_pem: bytes, key_pem: bytes, force: bool = False
               ) -> tuple[str, str]:
    """Write ``PREFIX.crt`` (0644) and ``PREFIX.key`` (0600); returns their paths.  Refuses
    (CAError) when either exists, unless ``force``."""
    cert_path, key_path = prefix + ".crt", prefix + ".key"
    if not force:
        for path in (cert_path, key_path):
            if os.path.lexists(path):
                raise CAError(f"{path} exists (use --force to overwrite)")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    _write_atomic(key_path, key_pem, 0o600, force=True)
    _write_atomic(cert_path, cert_pem, 0o644, force=True)
    return cert_path, key_path


def write_cert(prefix: str, cert_pem: bytes, force: bool = False) -> str:
    """Write ``PREFIX.crt`` (0644) alone, e.g. a certificate for a CSR whose key stays with
    its NF; returns the path.  Refuses (CAError) when it exists, unless ``force``."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    _write_atomic(prefix + ".crt", cert_pem, 0o644, force)
    return prefix + ".crt"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ---- the CA ---------------------------------------------------------------------------------

@dataclass
class MeshCA:
    """A loaded mesh CA: its certificate and key, and the directory they live in."""

    directory: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_path(self) -> str:
        return os.path.join(self.directory, CA_CERT_FILE)

    @property
    def key_path(self) -> str:
        return os.path.join(self.directory, CA_KEY_FILE)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, directory: str, name: str = DEFAULT_CA_NAME, days: int = DEFAULT_CA_DAYS,
               force: bool = False) -> MeshCA:
        """A new CA in ``directory`` (created if needed): ``mesh-ca.crt`` and ``mesh-ca.key``
        (0600).  Refuses (CAError) to replace an existing CA unless ``force``."""
        check_days(days)
        if not name or len(name) > 64:
            raise CAInputError("CA name must be 1..64 characters")
        cert_path = os.path.join(directory, CA_CERT_FILE)
        key_path = os.path.join(directory, CA_KEY_FILE)
        if not force:
            for path in (cert_path, key_path):
                if os.path.lexists(path):
                    raise CAError(f"{path} exists: a CA is already there "
                                  f"(use --force to replace it, which orphans what it issued)")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        os.makedirs(directory, exist_ok=True)
        _write_atomic(key_path, _key_pem(key), 0o600, force=True)
        _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force=True)
        ca = cls(directory, cert, key)
        if os.path.lexists(ca.crl_path):  # the replaced CA's list means nothing for this one
            os.unlink(ca.crl_path)
        ca.publish_crl()  # an empty CRL from day one, so CRL checking can be switched on
        return ca

    @classmethod
    def load(cls, directory: str) -> MeshCA:
        """The CA in ``directory``; CAError when it is missing, unreadable, readable by others
        than its owner, not a CA, or the key does not match the certificate."""
        cert_path = os.path.join(directory, CA_CERT_FILE)
        key_path = os.path.join(directory, CA_KEY_FILE)
        for path in (cert_path, key_path):
            if not os.path.isfile(path):
                raise CAError(f"no mesh CA in {directory}: {path} not found "
                              f"(create one with: nfmesh ca init --dir {directory})")
        mode = stat.S_IMODE(os.stat(key_path).st_mode)
        if mode & 0o077:
            raise CAError(f"{key_path} is accessible by group/others (mode {mode:04o}); "
                          f"chmod 600 it")
        try:
            with open(cert_path, "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
            with open(key_path, "rb") as fh:
                key = serialization.load_pem_private_key(fh.read(), password=None)
        except (ValueError, TypeError) as exc:
            raise CAError(f"unreadable CA files in {directory}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{key_path}: not an EC private key")
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
            raise CAError(f"{key_path} does not match {cert_path}")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise CAError(f"{cert_path} is not a CA certificate")
        return cls(directory, cert, key)

    def issue(self, nf_type: str, instance_id: str, dns: Sequence[str] = (),
              ips: Sequence[str] = (), days: int = DEFAULT_LEAF_DAYS,
              common_name: str | None = None) -> tuple[bytes, bytes]:
        """An end-entity certificate and its new EC P-256 key, both PEM, for NF ``instance_id``
        of type ``nf_type``.  Validity ends at the CA's at the latest; CAInputError on bad
        input, CAError when the CA has expired."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = self.certify(key.public_key(), nf_type, instance_id, dns, ips, days,
                                common_name)
        return cert_pem, _key_pem(key)

    def sign_csr(self, csr_pem: bytes, nf_type: str, instance_id: str, dns: Sequence[str] = (),
                 ips: Sequence[str] = (), days: int = DEFAULT_LEAF_DAYS) -> bytes:
        """A certificate (PEM) for the key of a PKCS#10 request, so the NF's private key never
        leaves it.  The request proves possession of the key (its signature is checked); its
        subject and requested extensions are ignored: the identity is what the operator states
        here.  Accepted keys: EC P-256/P-384, RSA of 2048 bits or more."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CAInputError("not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise CAInputError("the request's signature does not verify (no proof of "
                               "possession of the key)")
        public_key = csr.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in ("secp256r1", "secp384r1"):
                raise CAInputError(f"EC curve {public_key.curve.name} not accepted "
                                   f"(P-256 or P-384)")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise CAInputError(f"RSA key of {public_key.key_size} bits is too small (>= 2048)")
        else:
            raise CAInputError(f"key type {type(public_key).__name__} not accepted "
                               f"(EC P-256/P-384 or RSA >= 2048)")
        return self.certify(public_key, nf_type, instance_id, dns, ips, days)

    def certify(self, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, nf_type: str,
                instance_id: str, dns: Sequence[str] = (), ips: Sequence[str] = (),
                days: int = DEFAULT_LEAF_DAYS, common_name: str | None = None) -> bytes:
        """The NF certificate (PEM) binding ``public_key`` to the identity (the profile in the
        module docstring)."""
        nf_type = check_nf_type(nf_type)
        instance_id = check_instance_id(instance_id)
        dns_names = check_dns(dns)
        addresses = check_ips(ips)
        check_days(days)
        if len(dns_names) + len(addresses) > MAX_SANS:
            raise CAInputError(f"at most {MAX_SANS} DNS names and IP addresses")
        now = _now()
        ca_end = self.cert.not_valid_after_utc
        if ca_end <= now + datetime.timedelta(minutes=1):
            raise CAError(f"the mesh CA expired on {ca_end:%Y-%m-%d %H:%M} UTC; create a new one")
        not_before = max(now - CLOCK_SKEW, self.cert.not_valid_before_utc)
        not_after = min(now + datetime.timedelta(days=days), ca_end)
        cn = common_name or (dns_names[0] if dns_names else f"{nf_type}-{instance_id}")
        if len(cn) > 64:
            cn = f"{nf_type}-{instance_id}"
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, nf_type),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ])
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(URN_UUID_PREFIX + instance_id)]
        sans += [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(a) for a in addresses]
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value \
            if _has_ext(self.cert, x509.SubjectKeyIdentifier) else None
        aki = (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
               if ca_ski is not None
               else x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()))
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.UnrecognizedExtension(NFTYPES_OID, encode_nf_types([nf_type])),
                           critical=False)  # RFC 9310 NFTypes: never critical
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(aki, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    # ---- revocation (RFC 5280 CRL; the CRL file is the revocation database) ----

    @property
    def crl_path(self) -> str:
        return os.path.join(self.directory, CRL_FILE)

    def crl(self) -> x509.CertificateRevocationList | None:
        """The current CRL (signature checked against this CA), None when none was published;
        CAError when the file is not a CRL of this CA."""
        return load_crl(self.directory, self.cert)

    def revoked(self) -> dict[int, x509.RevokedCertificate]:
        """Revoked serial numbers -> their CRL entries."""
        crl = self.crl()
        return {} if crl is None else {r.serial_number: r for r in crl}

    def publish_crl(self, days: int = DEFAULT_CRL_DAYS,
                    extra: Sequence[x509.RevokedCertificate] = ()) -> str:
        """Sign and write ``mesh-ca.crl`` (0644): every entry already revoked plus ``extra``,
        a CRL number one above the last, nextUpdate ``days`` from now (never past the CA's
        end).  Peers checking CRLs refuse every certificate once nextUpdate has passed, so
        re-publish (``nfmesh ca crl``) well before.  Returns the path."""
        check_days(days)
        current = self.crl()
        entries = {} if current is None else {r.serial_number: r for r in current}
        for r in extra:
            entries.setdefault(r.serial_number, r)
        number = 1
        if current is not None:
            try:
                number = current.extensions.get_extension_for_class(
                    x509.CRLNumber).value.crl_number + 1
            except x509.ExtensionNotFound:
                pass
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
            .last_update(now - CLOCK_SKEW)
            .next_update(min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        for r in entries.values():
            builder = builder.add_revoked_certificate(r)
        crl = builder.sign(self.key, hashes.SHA256())
        _write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644,
                      force=True)
        return self.crl_path

    def revoke(self, cert_or_serial: x509.Certificate | int, reason: str = "unspecified",
               crl_days: int = DEFAULT_CRL_DAYS) -> bool:
        """Add a certificate (one this CA issued) or a serial number to the CRL and publish it.
        Returns False when it was already revoked (the CRL is left as it was)."""
        if reason not in REVOCATION_REASONS:
            raise CAInputError(f"unknown revocation reason {reason!r}: one of "
                               f"{', '.join(REVOCATION_REASONS)}")
        if isinstance(cert_or_serial, x509.Certificate):
            cert = cert_or_serial
            try:
                ok = cert.issuer == self.cert.subject
                cert.verify_directly_issued_by(self.cert)
            except (ValueError, TypeError, InvalidSignature):
                ok = False
            if not ok:
                raise CAInputError("the certificate was not issued by this CA")
            serial = cert.serial_number
        else:
            serial = int(cert_or_serial)
            if not 0 < serial < 1 << 160:
                raise CAInputError("serial number must be a positive integer below 2^160")
        if serial in self.revoked():
            return False
        entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                 .revocation_date(_now())
                 .add_extension(x509.CRLReason(REVOCATION_REASONS[reason]), critical=False)
                 .build())
        self.publish_crl(crl_days, [entry])
        return True

    def issue_gateway(self, name: str, dns: Sequence[str] = (), ips: Sequence[str] = (),
                      days: int = DEFAULT_LEAF_DAYS, instance_id: str | None = None
                      ) -> tuple[bytes, bytes]:
        """The gateway's own certificate (NF type SCP); its instance id is derived from
        ``name`` unless given, and ``name`` is also a DNS SAN when it is a valid host name."""
        if not name or len(name) > 64:
            raise CAInputError("gateway name must be 1..64 characters")
        names = list(dns)
        if _DNS_RE.match(name) and name.lower() not in (n.lower() for n in names):
            names.insert(0, name)
        return self.issue("SCP", instance_id or gateway_instance_id(name), names, ips, days,
                          common_name=name)


def load_crl(directory: str, ca_cert: x509.Certificate) -> x509.CertificateRevocationList | None:
    """``directory``'s ``mesh-ca.crl`` checked against ``ca_cert`` (no CA key needed); None when
    there is none, CAError when it is not a CRL that ``ca_cert`` signed."""
    path = os.path.join(directory, CRL_FILE)
    try:
        with open(path, "rb") as fh:
            data = fh.read(16 << 20)
    except FileNotFoundError:
        return None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise CAError(f"{path} is not a PEM CRL") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):
        raise CAError(f"{path} was not signed by this CA")
    return crl


def _has_ext(cert: x509.Certificate, cls: type) -> bool:
    try:
        cert.extensions.get_extension_for_class(cls)
        return True
    except x509.ExtensionNotFound:
        return False


# ---- show -----------------------------------------------------------------------------------

def describe(cert: x509.Certificate) -> str:
    """A human summary: subject, issuer, SANs, NF identity, validity, serial, fingerprint."""
    pc = peercert_dict(cert)
    ident = certificate_identity(cert)
    now = _now()
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = ("not yet valid" if now < start else "EXPIRED" if now > end
             else f"valid, {(end - now).days} days left")
    is_ca = _has_ext(cert, x509.BasicConstraints) and \
        cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lines = [
        f"subject:     {cert.subject.rfc4514_string()}",
        f"issuer:      {cert.issuer.rfc4514_string()}",
        f"CA:          {'yes' if is_ca else 'no'}",
        f"serial:      {cert.serial_number:x}",
        f"validity:    {start:%Y-%m-%d %H:%M:%S} .. {end:%Y-%m-%d %H:%M:%S} UTC ({state})",
        f"sha256:      {cert.fingerprint(hashes.SHA256()).hex(':')}",
    ]
    for kind, value in pc["subjectAltName"]:
        lines.append(f"SAN {kind}: {value}")
    rfc9310 = rfc9310_nf_types(cert)
    if rfc9310 is not None:
        lines.append(f"NF types:    {', '.join(rfc9310) or '(malformed)'} (RFC 9310 extension)")
    if ident is not None:
        lines.append(f"NF instance: {ident.instance_id}")
        lines.append(f"NF type:     {ident.nf_type or '(none: no NFType in RFC 9310 or OU)'}")
    elif not is_ca:
        lines.append("NF identity: none (no single urn:uuid: URI SAN)")
    return "\n".join(lines)


def describe_json(cert: x509.Certificate) -> dict:
    """``describe`` as data (``nfmesh ca show --json``)."""
    pc = peercert_dict(cert)
    ident = certificate_identity(cert)
    is_ca = _has_ext(cert, x509.BasicConstraints) and \
        cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    return {
        "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
        "ca": bool(is_ca), "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "sans": [{"type": k, "value": v} for k, v in pc["subjectAltName"]],
        "nf_instance_id": ident.instance_id if ident else None,
        "nf_type": ident.nf_type if ident else None,
        "nf_types": list(ident.nf_types) if ident else [],
    }


def verify(ca_cert: x509.Certificate, cert: x509.Certificate, dns: str | None = None,
           ip: str | None = None,
           crl: x509.CertificateRevocationList | None = None) -> NfIdentity:
    """Check ``cert`` the way a mesh peer will: it chains to ``ca_cert`` now (RFC 5280, by
    ``cryptography``'s verifier), is fit for TLS clients (and for servers named ``dns``/``ip``
    when given), is not on ``crl`` and carries an NF identity.  Returns the identity; CAError
    says why not."""
    from cryptography.x509 import verification

    builder = verification.PolicyBuilder().store(verification.Store([ca_cert]))
    try:
        builder.build_client_verifier().verify(cert, [])
        if dns is not None:
            builder.build_server_verifier(verification.DNSName(dns)).verify(cert, [])
        if ip is not None:
            address = check_ips([ip])[0]
            builder.build_server_verifier(verification.IPAddress(address)).verify(cert, [])
    except verification.VerificationError as exc:
        raise CAError(f"does not verify against {ca_cert.subject.rfc4514_string()}: {exc}") \
            from None
    if crl is not None:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            raise CAError(f"revoked on {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC")
    ident = certificate_identity(cert)
    if ident is None:
        raise CAError("verifies, but carries no NF identity (one urn:uuid: URI SAN)")
    return ident


def read_certs(path: str) -> list[x509.Certificate]:
    """The PEM certificates in ``path`` (CAError when unreadable, CAInputError when none)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise CAError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CAInputError(f"{path} holds no PEM certificate") from None
