"""NF identities of mTLS peers: who is calling, read from the certificate the mesh CA issued.

The scheme (written by ``gateway.ca``, read here):

* **NF instance id**: the URI subjectAltName ``urn:uuid:<nfInstanceId>``, as TS 33.310 (NF
  certificate profile) prescribes for NF certificates; the id is the ``NfInstanceId`` of
  TS 29.510 (an RFC 4122 UUID, compared in lowercase).  A certificate with no such URI, or with
  two different ones, has no identity: the mesh refuses to guess.
* **NF type**: the subject's organizationalUnitName (OU), one value of the ``NFType`` enum of
  TS 29.510 (``AMF``, ``SMF``, ``SCP`` ...).  3GPP defines no certificate field for the NF type;
  the OU is used rather than a second URI SAN because it needs no invented URN namespace, is
  shown by every certificate tool and is what operators' PKIs already fill with a function
  name.  An OU that is not an NF type (or several OUs) leaves ``nf_type`` as ``None``: the
  instance id still identifies the peer, authorisation by type then denies it.

Input is the dict of ``ssl.SSLObject.getpeercert()``, which the listener stores in
``peer_info["peercert"]`` (``{}`` or absent when the peer sent no certificate).
``peer_identity(peer_info)`` computes it once per connection and caches it in ``peer_info``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nf_adapters.discovery import NF_TYPES

URN_UUID_PREFIX = "urn:uuid:"
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CACHE_KEY = "nf_identity"
_MISSING = object()


@dataclass(frozen=True)
class NfIdentity:
    """The identity of an NF peer, from its certificate."""

    instance_id: str             # NfInstanceId (lowercase UUID)
    nf_type: str | None          # NFType (TS 29.510) from the subject OU, None if absent/unknown
    common_name: str | None = None
    dns_names: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        """The URI SAN that carries the instance id."""
        return URN_UUID_PREFIX + self.instance_id


def is_instance_id(text: str) -> bool:
    """Whether ``text`` is a UUID in canonical 8-4-4-4-12 hex form (any case)."""
    return bool(_UUID_RE.match(text.lower()))


def _subject_values(peercert: dict, attribute: str) -> list[str]:
    values = []
    for rdn in peercert.get("subject", ()):
        for pair in rdn:
            if len(pair) == 2 and pair[0] == attribute:
                values.append(pair[1])
    return values


def nf_identity(peercert: dict | None) -> NfIdentity | None:
    """The NF identity in a peer certificate (``getpeercert()`` shape), or None when the peer
    sent no certificate or it carries no unambiguous ``urn:uuid:`` URI SAN."""
    if not peercert:
        return None
    sans = peercert.get("subjectAltName", ())
    ids = set()
    dns = []
    for kind, value in sans:
        if kind == "URI" and value[: len(URN_UUID_PREFIX)].lower() == URN_UUID_PREFIX:
            candidate = value[len(URN_UUID_PREFIX):].lower()
            if _UUID_RE.match(candidate):
                ids.add(candidate)
        elif kind == "DNS":
            dns.append(value)
    if len(ids) != 1:
        return None
    ous = _subject_values(peercert, "organizationalUnitName")
    nf_type = ous[0] if len(ous) == 1 and ous[0] in NF_TYPES else None
    cns = _subject_values(peercert, "commonName")
    return NfIdentity(ids.pop(), nf_type, cns[0] if len(cns) == 1 else None, tuple(dns))


def peer_identity(peer_info: dict) -> NfIdentity | None:
    """``nf_identity`` of a connection's ``peer_info`` (as the listener fills it), computed once
    per connection and kept in ``peer_info["nf_identity"]``."""
    cached = peer_info.get(_CACHE_KEY, _MISSING)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    ident = nf_identity(peer_info.get("peercert"))
    peer_info[_CACHE_KEY] = ident
    return ident


def peer_nf_type(peer_info: dict) -> str | None:
    """The caller's NF type (``peer_identity(peer_info).nf_type``), None when unidentified: the
    function ``nf_adapters.authz.NfTypeAuthzRouter`` is given."""
    ident = peer_identity(peer_info)
    return ident.nf_type if ident is not None else None
