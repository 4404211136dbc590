"""NF identities of mTLS peers: who is calling, read from the certificate the mesh CA issued.

The scheme (written by ``gateway.ca``, read here):

* **NF instance id**: the URI subjectAltName ``urn:uuid:<nfInstanceId>``, as TS 33.310 (NF
  certificate profile) prescribes for NF certificates; the id is the ``NfInstanceId`` of
  TS 29.510 (an RFC 4122 UUID, compared in lowercase).  A certificate with no such URI, or with
  two different ones, has no identity: the mesh refuses to guess.
* **NF type**, two carriers, both written by the mesh CA with the same value:

  - the **RFC 9310 NFTypes extension** (``id-pe-nftype``, 1.3.6.1.5.5.7.1.34: a SEQUENCE OF
    IA5String, the NFType names of TS 29.510), the IETF's standard carrier made for 3GPP.
    When the certificate has it, it decides (and a value that is not an NFType gives no type);
  - the subject **organizationalUnitName (OU)**, for peers whose PKI predates RFC 9310 and
    for readers that only have the ``getpeercert()`` dict (which omits unknown extensions).
    Chosen over a second URI SAN because it needs no invented URN namespace and every tool
    shows it.  Several OUs, or one that is not an NFType, give no type.

  A certificate may certify several NF types (RFC 9310 allows a list): ``nf_types`` holds them
  all, ``nf_type`` the first.  No type: the instance id still identifies the peer, and
  authorisation by type denies it.

``peer_identity(peer_info)`` reads the connection the listener described (``peer_info`` with
``sslobject`` and ``peercert``), once per connection, cached in ``peer_info["nf_identity"]``:
the ``getpeercert()`` dict (present only for a verified certificate) for the SANs and subject,
and the DER certificate from the ``sslobject`` for the RFC 9310 extension (``der_nf_types``, a
short DER walk).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from nf_adapters.discovery import NF_TYPES

URN_UUID_PREFIX = "urn:uuid:"
NFTYPES_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.34")  # id-pe-nftype (RFC 9310)
MAX_NF_TYPE_LEN = 32  # NFType ::= IA5String (SIZE (1..32))
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CACHE_KEY = "nf_identity"
_MISSING = object()


@dataclass(frozen=True)
class NfIdentity:
    """The identity of an NF peer, from its certificate."""

    instance_id: str             # NfInstanceId (lowercase UUID)
    nf_type: str | None          # NFType (TS 29.510): the first certified, None if none
    common_name: str | None = None
    dns_names: tuple[str, ...] = ()
    nf_types: tuple[str, ...] = ()  # every NF type certified (RFC 9310 allows several)

    @property
    def uri(self) -> str:
        """The URI SAN that carries the instance id."""
        return URN_UUID_PREFIX + self.instance_id


def is_instance_id(text: str) -> bool:
    """Whether ``text`` is a UUID in canonical 8-4-4-4-12 hex form (any case)."""
    return bool(_UUID_RE.match(text.lower()))


# ---- RFC 9310 NFTypes: DER of SEQUENCE SIZE (1..MAX) OF IA5String (SIZE (1..32)) --------------

def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_nf_types(nf_types: Sequence[str]) -> bytes:
    """The RFC 9310 extension value for ``nf_types`` (ValueError on an empty list or a name
    that is not 1..32 ASCII characters)."""
    if not nf_types:
        raise ValueError("NFTypes needs at least one NF type")
    items = b""
    for name in nf_types:
        raw = name.encode("ascii")
        if not 1 <= len(raw) <= MAX_NF_TYPE_LEN:
            raise ValueError(f"NF type {name!r} must be 1..{MAX_NF_TYPE_LEN} characters")
        items += b"\x16" + _der_length(len(raw)) + raw
    return b"\x30" + _der_length(len(items)) + items


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if not 1 <= count <= 3 or pos + 1 + count > len(data):
        raise ValueError("bad DER length")
    return int.from_bytes(data[pos + 1: pos + 1 + count], "big"), pos + 1 + count


def decode_nf_types(value: bytes) -> tuple[str, ...] | None:
    """The NF type names in an RFC 9310 extension value, None when it is malformed."""
    try:
        if not value or value[0] != 0x30:
            return None
        length, pos = _read_length(value, 1)
        if pos + length != len(value) or length == 0:
            return None
        names = []
        while pos < len(value):
            if value[pos] != 0x16:
                return None
            n, pos = _read_length(value, pos + 1)
            if not 1 <= n <= MAX_NF_TYPE_LEN or pos + n > len(value):
                return None
            raw = value[pos: pos + n]
            if max(raw) > 0x7F:
                return None
            names.append(raw.decode("ascii"))
            pos += n
        return tuple(names)
    except (IndexError, ValueError):
        return None


def rfc9310_nf_types(cert: x509.Certificate) -> tuple[str, ...] | None:
    """The certificate's RFC 9310 NFTypes; None when it has no such extension, ``()`` when the
    extension is there but malformed."""
    try:
        ext = cert.extensions.get_extension_for_oid(NFTYPES_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
    return decode_nf_types(value) or ()


_NFTYPES_OID_DER = bytes.fromhex("06082b06010505070122")  # the OID's TLV, as it sits in DER


def _tlv(data: bytes, pos: int, end: int, want: int | None = None) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at ``pos`` (of tag ``want``)."""
    tag = data[pos]
    if want is not None and tag != want:
        raise ValueError(f"DER tag {tag:#04x} where {want:#04x} belongs")
    length, start = _read_length(data, pos + 1)
    if start + length > end:
        raise ValueError("DER element overruns its parent")
    return tag, start, start + length


def der_nf_types(der: bytes) -> tuple[str, ...] | None:
    """``rfc9310_nf_types`` straight from a DER certificate without parsing the rest (a few µs
    against tens for a full parse): None when it has no NFTypes extension, ``()`` when it is
    malformed.  ValueError when the certificate itself cannot be walked."""
    if _NFTYPES_OID_DER not in der:
        return None
    seq = 0x30
    try:
        _, cert_start, cert_end = _tlv(der, 0, len(der), seq)
        _, pos, tbs_end = _tlv(der, cert_start, cert_end, seq)  # tbsCertificate
        while pos < tbs_end:
            tag, start, end = _tlv(der, pos, tbs_end)
            if tag == 0xA3:  # [3] extensions
                _, epos, eend = _tlv(der, start, end, seq)
                while epos < eend:
                    _, xstart, xend = _tlv(der, epos, eend, seq)  # Extension
                    _, ostart, oend = _tlv(der, xstart, xend, 0x06)
                    if der[xstart:oend] == _NFTYPES_OID_DER:
                        tag, vstart, vend = _tlv(der, oend, xend)
                        if tag == 0x01:  # critical BOOLEAN, then the OCTET STRING
                            tag, vstart, vend = _tlv(der, vend, xend)
                        if tag != 0x04:
                            return ()
                        return decode_nf_types(der[vstart:vend]) or ()
                    epos = xend
                return None
            pos = end
        return None
    except IndexError:
        raise ValueError("truncated DER certificate") from None


# ---- identity ------------------------------------------------------------------------------------

_ATTR_NAMES = {
    NameOID.COMMON_NAME: "commonName", NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName", NameOID.COUNTRY_NAME:
    "countryName", NameOID.LOCALITY_NAME: "localityName", NameOID.STATE_OR_PROVINCE_NAME:
    "stateOrProvinceName", NameOID.SERIAL_NUMBER: "serialNumber",
}


def peercert_dict(cert: x509.Certificate) -> dict:
    """``cert`` in the shape ``ssl.SSLObject.getpeercert()`` returns (subject, issuer,
    subjectAltName, notBefore, notAfter)."""
    def name(n: x509.Name) -> tuple:
        return tuple(tuple((_ATTR_NAMES.get(a.oid, a.oid.dotted_string), a.value) for a in rdn)
                     for rdn in n.rdns)

    sans: list[tuple[str, str]] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = []
    for gn in san:
        if isinstance(gn, x509.DNSName):
            sans.append(("DNS", gn.value))
        elif isinstance(gn, x509.UniformResourceIdentifier):
            sans.append(("URI", gn.value))
        elif isinstance(gn, x509.IPAddress):
            sans.append(("IP Address", str(gn.value)))
    return {"subject": name(cert.subject), "issuer": name(cert.issuer),
            "subjectAltName": tuple(sans),
            "notBefore": openssl_time(cert.not_valid_before_utc),
            "notAfter": openssl_time(cert.not_valid_after_utc)}


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def openssl_time(when: datetime.datetime) -> str:
    """``when`` (UTC) as OpenSSL's ``ASN1_TIME_print`` writes it, which is what
    ``getpeercert()`` returns: ``"Jan  6 09:05:03 2027 GMT"`` -- the day padded with a space,
    not a zero, and English month names whatever the locale (``strftime("%b %d")`` gets both
    wrong)."""
    return (f"{_MONTHS[when.month - 1]} {when.day:2d} {when.hour:02d}:{when.minute:02d}:"
            f"{when.second:02d} {when.year} GMT")


def _subject_values(peercert: dict, attribute: str) -> list[str]:
    values = []
    for rdn in peercert.get("subject", ()):
        for pair in rdn:
            if len(pair) == 2 and pair[0] == attribute:
                values.append(pair[1])
    return values


def nf_identity(peercert: dict | None, nf_types: Sequence[str] | None = None
                ) -> NfIdentity | None:
    """The NF identity in a peer certificate (``getpeercert()`` shape), or None when the peer
    sent no certificate or it carries no unambiguous ``urn:uuid:`` URI SAN.  ``nf_types``: the
    certificate's RFC 9310 NFTypes when the caller could read them (they win over the OU)."""
    if not peercert:
        return None
    ids = set()
    dns = []
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and value[: len(URN_UUID_PREFIX)].lower() == URN_UUID_PREFIX:
            candidate = value[len(URN_UUID_PREFIX):].lower()
            if _UUID_RE.match(candidate):
                ids.add(candidate)
        elif kind == "DNS":
            dns.append(value)
    if len(ids) != 1:
        return None
    if nf_types is not None:
        types = tuple(t for t in nf_types if t in NF_TYPES)
        if len(types) != len(nf_types):
            types = ()  # an unknown entry: the certificate's claim is not understood
    else:
        ous = _subject_values(peercert, "organizationalUnitName")
        types = (ous[0],) if len(ous) == 1 and ous[0] in NF_TYPES else ()
    cns = _subject_values(peercert, "commonName")
    return NfIdentity(ids.pop(), types[0] if types else None, cns[0] if len(cns) == 1 else None,
                      tuple(dns), types)


def certificate_identity(cert: x509.Certificate) -> NfIdentity | None:
    """``nf_identity`` of a parsed certificate, RFC 9310 NFTypes included."""
    return nf_identity(peercert_dict(cert), rfc9310_nf_types(cert))


def peer_identity(peer_info: dict) -> NfIdentity | None:
    """The identity of a connection's peer (``peer_info`` as the listener fills it), computed
    once per connection and kept in ``peer_info["nf_identity"]``."""
    cached = peer_info.get(_CACHE_KEY, _MISSING)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    ident = None
    sslobj = peer_info.get("sslobject")
    peercert = peer_info.get("peercert")
    if peercert is None and sslobj is not None:
        peercert = _safe(sslobj.getpeercert)
    # the dict form is empty unless the certificate was verified: only then is it an identity
    if peercert:
        der = _safe(sslobj.getpeercert, True) if sslobj is not None else None
        nf_types = None
        if der:
            try:
                nf_types = der_nf_types(der)
            except ValueError:  # not walkable by the fast path: let cryptography parse it
                try:
                    nf_types = rfc9310_nf_types(x509.load_der_x509_certificate(der))
                except ValueError:
                    nf_types = ()
        ident = nf_identity(peercert, nf_types)
    peer_info[_CACHE_KEY] = ident
    return ident


def _safe(getpeercert, binary_form: bool = False):
    try:
        return getpeercert(binary_form)
    except (ValueError, AttributeError, TypeError):  # handshake not done / not an SSL object
        return None


def peer_nf_type(peer_info: dict) -> str | None:
    """The caller's NF type (``peer_identity(peer_info).nf_type``), None when unidentified: the
    function ``nf_adapters.authz.NfTypeAuthzRouter`` is given."""
    ident = peer_identity(peer_info)
    return ident.nf_type if ident is not None else None


def peer_nf_types(peer_info: dict) -> tuple[str, ...]:
    """Every NF type the caller's certificate certifies, ``()`` when unidentified."""
    ident = peer_identity(peer_info)
    return ident.nf_types if ident is not None else ()
