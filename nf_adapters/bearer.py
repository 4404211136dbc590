"""OAuth2 access token checks at the gateway (TS 33.501 §13.4.1, TS 29.510 AccessTokenClaims).

``BearerTokenRouter`` wraps any Router like ``nf_adapters.authz.NfTypeAuthzRouter``: for a
service whose policy says ``required`` (``:path`` names the service, as in authz), the request
must carry ``Authorization: Bearer <JWS>`` whose

* signature verifies with a key of the NRF's JWKS (``kid``; the algorithm is the key's own, so
  ``alg: none`` or an HMAC trick never verifies), the key's ``x5c`` certificate having been
  issued by the mesh CA for the token's ``iss``;
* ``exp`` / ``nbf`` hold (with ``clock_skew_s``);
* ``aud`` is the producer's NF type (the type the service name implies: ``nudm-sdm`` -> UDM)
  or a list holding the instance the request goes to (``3gpp-sbi-producer-id`` of the route
  decision, or ``3gpp-Sbi-Discovery-target-nf-instance-id``);
* ``scope`` lists the service;
* ``sub`` is the caller's mTLS identity (``identity_of(peer_info)``: its NF instance id).

Failures: 401 with ``WWW-Authenticate: Bearer realm=..., error="invalid_token"`` (or no error
when no token came, RFC 6750 §3.1) and ProblemDetails; a valid token used by another NF or
without the service in its scope is 403 (``error="insufficient_scope"`` for the scope), cause
``ACCESS_TOKEN_DENIED``.  Verification is done once per token: the decoded claims are kept
(bounded) and a later request pays a dict lookup and a few comparisons.  The token is
forwarded to the producer or stripped (``forward_token``).  Signature checks are PyJWT's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable, Mapping

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from dataplane.engine import Headers
from dataplane.routing import Decision, Forward, LocalResponse, Router
from nf_adapters.authz import service_of
from nf_adapters.discovery import NF_TYPES
from nf_adapters.problem_details import problem

CAUSE = "ACCESS_TOKEN_DENIED"
REQUIRED, OFF = "required", "off"
_SERVICE_RE = re.compile(r"^n[a-z0-9]+-[a-z0-9-]+$")
_ALGS = {"EC": "ES256", "RSA": "RS256"}
_FMT = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def valid_service_name(name: str) -> bool:
    return bool(_SERVICE_RE.match(name))


def nf_type_of_service(service: str | None) -> str | None:
    """The NF type a service name belongs to (``nudm-sdm`` -> ``UDM``), None when unknown."""
    if not service or service[0] != "n":
        return None
    t = service[1:].split("-", 1)[0].upper()
    return t if t in NF_TYPES else None


class TokenError(Exception):
    """Why a token is refused: ``status`` 401 (``invalid_token``) or 403."""

    def __init__(self, detail: str, status: int = 401, error: str = "invalid_token") -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error = error


class Claims:
    """What the gateway keeps of a verified token."""

    __slots__ = ("sub", "exp", "nbf", "scopes", "aud_type", "aud_ids", "iss", "per_service")

    def __init__(self, payload: dict) -> None:
        self.sub = str(payload["sub"]).lower()
        self.iss = str(payload["iss"]).lower()
        self.exp = float(payload["exp"])
        self.nbf = float(payload.get("nbf", 0))
        self.scopes = frozenset(str(payload["scope"]).split(" "))
        aud = payload["aud"]
        self.aud_type = aud if isinstance(aud, str) else None
        self.aud_ids = frozenset(str(a).lower() for a in aud) if isinstance(aud, list) else frozenset()
        # service -> None (scope and audience type fit) or the TokenError: decided once
        self.per_service: dict[str | None, TokenError | None] = {}

    def for_service(self, service: str | None) -> TokenError | None:
        """Whether the token's scope and audience type cover ``service`` (memoised)."""
        try:
            return self.per_service[service]
        except KeyError:
            pass
        err = None
        if service not in self.scopes:
            err = TokenError(f"the token's scope does not include {service}", 403,
                             "insufficient_scope")
        elif self.aud_type is not None and self.aud_type != nf_type_of_service(service):
            err = TokenError(f"the token's audience {self.aud_type} is not the producer "
                             f"of {service}")
        if len(self.per_service) < 64:
            self.per_service[service] = err
        return err


class KeySet:
    """The NRF's signing keys, read from its JWKS (a file, or a callable returning the dict),
    each accepted only when its ``x5c`` certificate chains to the mesh CA and holds that key.
    An unknown ``kid`` re-reads the source: a ``stat`` of the file (at most every
    ``reread_s``), read again only when it was replaced."""

    def __init__(self, source: str | Callable[[], dict], ca_cert: x509.Certificate | None,
                 *, reread_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.ca_cert = ca_cert
        self.reread_s = reread_s
        self.clock = clock
        self.keys: dict[str, tuple[str, object, str | None]] = {}  # kid -> (alg, key, issuer id)
        self._mtime: tuple | None = None
        self._last_read = -1e9
        self.rejected: dict[str, str] = {}  # kid -> why its JWK was not accepted
        self.load()

    def _read(self) -> dict | None:
        if callable(self.source):
            return self.source()
        try:
            st = os.stat(self.source)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)  # the issuer replaces it atomically
        if stamp == self._mtime:
            return None
        self._mtime = stamp
        with open(self.source, "rb") as fh:
            return json.loads(fh.read(1 << 20))

    def load(self) -> None:
        self._last_read = self.clock()
        try:
            data = self._read()
        except (OSError, ValueError):
            return
        if data is None:
            return
        keys = {}
        for jwk in data.get("keys", ()) if isinstance(data, dict) else ():
            try:
                kid, entry = self._accept(jwk)
            except (KeyError, ValueError, TypeError, InvalidSignature, jwt.PyJWKError) as exc:
                self.rejected[str(jwk.get("kid") if isinstance(jwk, dict) else None)] = str(exc)
                continue
            keys[kid] = entry
        self.keys = keys

    def _accept(self, jwk: dict) -> tuple[str, tuple[str, object, str | None]]:
        kid = jwk["kid"]
        alg = _ALGS[jwk["kty"]]
        if jwk.get("alg", alg) != alg:
            raise ValueError(f"alg {jwk.get('alg')} does not fit a {jwk['kty']} key")
        key = jwt.PyJWK(jwk, algorithm=alg).key
        issuer = None
        if self.ca_cert is not None:
            chain = jwk.get("x5c")
            if not chain:
                raise ValueError("no x5c certificate")
            cert = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
            cert.verify_directly_issued_by(self.ca_cert)
            if cert.public_key().public_bytes(*_FMT) != key.public_bytes(*_FMT):
                raise ValueError("x5c certificate is for another key")
            now = time.time()
            if not (cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp()):
                raise ValueError("x5c certificate is not valid now")
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            except x509.ExtensionNotFound:
                uris = []
            ids = [u[9:].lower() for u in uris if u.lower().startswith("urn:uuid:")]
            issuer = ids[0] if len(ids) == 1 else None
            if issuer is None:
                raise ValueError("x5c certificate names no NF instance")
        return kid, (alg, key, issuer)

    def get(self, kid: str) -> tuple[str, object, str | None] | None:
        entry = self.keys.get(kid)
        if entry is None and self.clock() - self._last_read >= self.reread_s:
            self.load()
            entry = self.keys.get(kid)
        return entry


class TokenVerifier:
    """Verifies access tokens once each and remembers the claims (bounded)."""

    def __init__(self, keys: KeySet, *, clock_skew_s: float = 5.0, cache_size: int = 10000,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.skew = clock_skew_s
        self.cache_size = cache_size
        self.clock = clock
        self._cache: dict[bytes, Claims | TokenError] = {}
        self.verified = 0  # full signature checks done
        self.rejections = 0  # requests refused by the routers using this verifier

    def claims(self, token: bytes) -> Claims:
        """The claims of a valid token (exp/nbf checked now); TokenError otherwise."""
        hit = self._cache.get(token)
        if hit is None:
            hit = self._verify(token)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[token] = hit
        if isinstance(hit, TokenError):
            if hit.detail.startswith("unknown kid"):
                del self._cache[token]  # the key may be published a moment later
            raise hit
        now = self.clock()
        if now >= hit.exp + self.skew:
            raise TokenError("token expired")
        if now + self.skew < hit.nbf:
            raise TokenError("token not yet valid")
        return hit

    def _verify(self, token: bytes) -> Claims | TokenError:
        self.verified += 1
        try:
            text = token.decode("ascii")
            header = jwt.get_unverified_header(text)
        except (UnicodeDecodeError, jwt.DecodeError) as exc:
            return TokenError(f"malformed token: {exc}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            return TokenError("token header has no kid")
        entry = self.keys.get(kid)
        if entry is None:
            return TokenError(f"unknown kid {kid}")
        alg, key, issuer = entry
        try:
            payload = jwt.decode(
                text, key, algorithms=[alg],
                options={"require": ["iss", "sub", "aud", "scope", "exp"], "verify_aud": False,
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False})
        except jwt.InvalidTokenError as exc:
            return TokenError(f"token rejected: {exc}")
        try:
            claims = Claims(payload)
        except (KeyError, TypeError, ValueError) as exc:
            return TokenError(f"malformed claims: {exc}")
        if issuer is not None and claims.iss != issuer:
            return TokenError("iss is not the NF the signing key was issued to")
        return claims


_SERVICE_CACHE: dict[bytes, str] = {}


def _service(path: bytes) -> str | None:
    """``service_of(path)``, memoised on the path's first two segments (``/nudm-sdm/v2/``)
    when they name the service: the regex then runs once per service, not per request."""
    end = path.find(b"/", path.find(b"/", 1) + 1) + 1
    if end > 0:
        hit = _SERVICE_CACHE.get(path[:end])
        if hit is not None:
            return hit
        service = service_of(path[:end])
        if service is not None:  # the first segment is the service: the same for the path
            if len(_SERVICE_CACHE) < 4096:
                _SERVICE_CACHE[path[:end]] = service
            return service
    return service_of(path)


def _bearer(headers: Headers) -> bytes | None:
    for k, v in headers:
        if k == b"authorization":
            return v
    return None


class TokenPolicy:
    """Service name -> ``required`` / ``off``, plus the default (``oauth2`` is always off:
    the token endpoint itself)."""

    __slots__ = ("services", "default_required")

    def __init__(self, services: Mapping[str, str], default: str = OFF) -> None:
        bad = [s for s in services if not valid_service_name(s)]
        if bad:
            raise ValueError(f"not SBI service names: {', '.join(bad)}")
        self.services = dict(services)
        self.default_required = default == REQUIRED

    def required(self, service: str | None) -> bool:
        if service == "oauth2":
            return False
        mode = self.services.get(service) if service is not None else None
        return self.default_required if mode is None else mode == REQUIRED


def _nfinst(value: bytes) -> str | None:
    """The NF instance id in a ``3gpp-Sbi-Producer-Id`` value (``nfinst=<uuid>; ...``)."""
    for part in value.split(b";"):
        name, _, v = part.strip().partition(b"=")
        if name.lower() == b"nfinst":
            return v.strip().lower().decode("latin-1")
    return None


def _producer_id(headers: Headers) -> str | None:
    for k, v in headers:
        if k == b"3gpp-sbi-producer-id":
            return _nfinst(v)
    return None


class BearerTokenRouter:
    """A Router wrapper that enforces ``TokenPolicy`` with a ``TokenVerifier``."""

    __slots__ = ("inner", "policy", "verifier", "identity_of", "forward_token", "realm",
                 "_inner_try", "rejections")

    def __init__(self, inner: Router, policy: TokenPolicy, verifier: TokenVerifier,
                 identity_of: Callable[[dict], str | None], *, forward_token: bool = True,
                 realm: str = "nfmesh") -> None:
        self.inner = inner
        self.policy = policy
        self.verifier = verifier
        self.identity_of = identity_of
        self.forward_token = forward_token
        self.realm = realm
        self._inner_try = getattr(inner, "try_route", None) or inner.route
        self.rejections = 0

    def _deny(self, exc: TokenError, service: str | None) -> LocalResponse:
        self.rejections += 1
        self.verifier.rejections += 1
        www = f'Bearer realm="{self.realm}"'
        if exc.error:
            desc = exc.detail.replace('"', "'").replace("\\", "/")
            www += f', error="{exc.error}", error_description="{desc}"'
            if exc.error == "insufficient_scope" and service:
                www += f', scope="{service}"'
        resp = problem(exc.status, CAUSE if exc.status == 403 else "", exc.detail)
        resp.headers.append((b"www-authenticate", www.encode("latin-1", "replace")))
        return resp

    def check(self, headers: Headers, peer: dict) -> tuple[str | None, Claims | None] | LocalResponse:
        """(service, claims) when the request may go on (claims None: no token needed), else
        the refusal."""
        path = b""
        auth = None
        for k, v in headers:  # one pass: :path first (pseudo-headers), authorization later
            if k == b":path":
                path = v
            elif k == b"authorization":
                auth = v
        service = _service(path)
        if not self.policy.required(service):
            return service, None
        try:
            if auth is None:
                raise TokenError("an access token is required", 401, "")
            if auth[:7] == b"Bearer ":
                token = auth[7:]
            else:
                scheme, _, token = auth.partition(b" ")
                token = token.strip()
                if scheme.lower() != b"bearer" or not token:
                    raise TokenError("Authorization must be Bearer <token>", 401, "invalid_request")
            claims = self.verifier.claims(token)
            err = claims.for_service(service)
            if err is not None:
                raise err
            me = self.identity_of(peer)
            if me is None or me != claims.sub:
                raise TokenError("the token was issued to another NF than the caller's mTLS "
                                 "identity", 403, "invalid_token")
        except TokenError as exc:
            return self._deny(exc, service)
        return service, claims

    def _audience(self, service: str | None, claims: Claims, headers: Headers,
                  decision: Decision) -> LocalResponse | None:
        if claims.aud_type is not None:
            return None  # checked before routing
        target = None
        if isinstance(decision, Forward):
            target = _producer_id(decision.extra_response_headers)
        if target is None:
            for k, v in headers:
                if k == b"3gpp-sbi-discovery-target-nf-instance-id":
                    target = v.strip().lower().decode("latin-1")
        if target is not None and target in claims.aud_ids:
            if isinstance(decision, Forward) and decision.alternate_response_headers:
                # reselection only toward instances the token names
                keep = [i for i, hs in enumerate(decision.alternate_response_headers)
                        if _producer_id(hs) in claims.aud_ids]
                if len(keep) != len(decision.alternates):
                    decision.alternates = [decision.alternates[i] for i in keep
                                           if i < len(decision.alternates)]
                    decision.alternate_response_headers = [
                        decision.alternate_response_headers[i] for i in keep]
            return None
        return self._deny(TokenError("the token's audience does not include the producer "
                                     "instance"), service)

    def _finish(self, service: str | None, claims: Claims | None, headers: Headers,
                decision: Decision) -> Decision:
        if claims is None:
            return decision
        denial = self._audience(service, claims, headers, decision)
        if denial is not None:
            return denial
        if not self.forward_token and isinstance(decision, Forward):
            decision.headers = [h for h in decision.headers if h[0] != b"authorization"]
            decision.alternates = [(ep, [h for h in hs if h[0] != b"authorization"])
                                   for ep, hs in decision.alternates]
        return decision

    def route(self, headers: Headers, peer: dict) -> Decision:
        checked = self.check(headers, peer)
        if isinstance(checked, LocalResponse):
            return checked
        return self._finish(checked[0], checked[1], headers, self.inner.route(headers, peer))

    def try_route(self, headers: Headers, peer: dict) -> Decision | None:
        decision = self._inner_try(headers, peer)
        if decision is None:
            return None
        checked = self.check(headers, peer)
        if isinstance(checked, LocalResponse):
            return checked
        return self._finish(checked[0], checked[1], headers, decision)
