"""Producer identity over TLS: the certificate must belong to the NF instance model D chose.

Model D puts the selected instance's ``nfInstanceId`` in ``Endpoint.identity`` (and its FQDN
in ``server_name``) for a TLS producer; the upstream pools call ``check_producer`` after the
handshake (the chain was verified by then), and a refusal is a connect failure, so the next
producer is tried.  Accepted (TS 33.310 NF certificate profile, TS 33.501 §13.1):

* the certificate carries ``urn:uuid:<nfInstanceId>`` as a URI SAN: it must be this instance's
  (a certificate that names another instance never passes, whatever its DNS names);
* it carries no ``urn:uuid:`` SAN: a DNS SAN must match the FQDN of the instance's profile
  (``server_name``; a ``*.`` wildcard covers one label).
"""

from __future__ import annotations

URN_UUID = "urn:uuid:"


def _dns_match(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def check_certificate(expected_id: str, fqdn: str | None, peercert: dict | None) -> str | None:
    """None when ``peercert`` (``getpeercert()`` shape) is the identity of NF instance
    ``expected_id`` (or of its FQDN), else why not."""
    if not peercert:
        return "no verified certificate"
    sans = peercert.get("subjectAltName", ())
    ids = {v[len(URN_UUID):].lower() for k, v in sans
           if k == "URI" and v[: len(URN_UUID)].lower() == URN_UUID}
    if ids:
        if ids == {expected_id.lower()}:
            return None
        return f"its certificate is for NF instance {', '.join(sorted(ids))}"
    if fqdn and any(k == "DNS" and _dns_match(v, fqdn) for k, v in sans):
        return None
    return ("its certificate names no NF instance" + (f" and not {fqdn}" if fqdn else "")
            + " (no profile FQDN to match)" * (not fqdn))


def check_producer(endpoint, sslobj) -> str | None:
    """``UpstreamPools.peer_check``: the endpoint's ``identity`` against the TLS peer."""
    try:
        peercert = sslobj.getpeercert()
    except (ValueError, AttributeError):
        peercert = None
    return check_certificate(endpoint.identity, endpoint.server_name, peercert)
