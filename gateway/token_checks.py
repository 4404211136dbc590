"""Wires the gateway's Bearer token checks (``oauth2.verify``): ``nf_adapters.bearer`` over the
NRF's JWKS and the mesh CA, the caller's identity from its mesh certificate.

The verifier (with its cache of verified tokens and its keys) lives as long as the config
section it was built from, so publishing a new router (every registry change) keeps it.
"""

from __future__ import annotations

from typing import Any

from dataplane.routing import Router
from gateway.identity import peer_identity

_MISSING = object()


def _identity(peer_info: dict) -> str | None:
    """The caller's NF instance id (``gateway.identity``, cached per connection)."""
    ident = peer_info.get("nf_identity", _MISSING)  # peer_identity's per-connection cache
    if ident is _MISSING:
        ident = peer_identity(peer_info)
    return ident.instance_id if ident is not None else None


def build_verifier(oauth2: Any) -> Any:
    """A ``TokenVerifier`` for the config's ``oauth2`` section."""
    from cryptography import x509

    from gateway.registry.access_token import default_jwks_file
    from nf_adapters.bearer import KeySet, TokenVerifier

    ver = oauth2.verify
    jwks = ver.jwks_file or oauth2.issuer.jwks_file or default_jwks_file(oauth2.issuer.ca_dir)
    ca_cert = None
    if ver.ca_file:
        with open(ver.ca_file, "rb") as fh:
            ca_cert = x509.load_pem_x509_certificates(fh.read())[0]
    return TokenVerifier(KeySet(jwks, ca_cert), clock_skew_s=ver.clock_skew_s,
                         cache_size=ver.cache_size)


def wrap(holder: Any, router: Router) -> Router:
    """``router`` behind the token checks when ``oauth2.verify`` is on (else unchanged);
    ``holder`` (the Gateway) keeps the verifier across publications."""
    oauth2 = getattr(holder.config, "oauth2", None)
    if oauth2 is None or not oauth2.verify.enabled:
        return router
    from nf_adapters.bearer import BearerTokenRouter, TokenPolicy

    ver = oauth2.verify
    cached = getattr(holder, "_token_verifier", None)
    if cached is None or cached[0] != oauth2:
        cached = (oauth2, build_verifier(oauth2))
        holder._token_verifier = cached
    policy = TokenPolicy(ver.services, ver.default)
    return BearerTokenRouter(router, policy, cached[1], _identity,
                             forward_token=ver.forward_token, realm=ver.realm)
