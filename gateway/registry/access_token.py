"""Nnrf_AccessToken (TS 29.510 §5.4, TS 33.501 §13.4.1): ``POST {apiRoot}/oauth2/token``.

``SigningKeys`` is the NRF's key ring.  Each signing key (EC P-256 for ES256, the default; RSA
2048 for RS256) gets a certificate from the mesh CA (NF type NRF, the issuer's instance id as
its ``urn:uuid:`` SAN), so whoever trusts the mesh CA can trust the key without another
distribution channel: the JWKS the ring publishes (RFC 7517, written atomically to a file
that verifiers read) carries each key with its ``kid`` (RFC 7638 thumbprint) and its
certificate in ``x5c``.  ``rotate()`` makes a new current key; older keys stay published
until the last token they signed has expired, so rotation never invalidates a token.  JWS
encoding and signing are PyJWT's (``cryptography`` underneath), not ours.

``AccessTokenService.handle`` answers one request: an ``application/x-www-form-urlencoded``
AccessTokenReq, answered with AccessTokenRsp (200, ``Cache-Control: no-store``,
``Pragma: no-cache``) or AccessTokenErr (400: ``invalid_request``, ``invalid_client``,
``unauthorized_client``, ``unsupported_grant_type``, ``invalid_scope``).  Checks, in order:

* the form: ``grant_type=client_credentials``, ``nfInstanceId`` (UUID), ``scope`` (service
  names, the yaml's pattern), ``nfType``/``targetNfType`` (NFType), ``targetNfInstanceId``
  (UUID); either ``targetNfInstanceId`` or ``nfType`` + ``targetNfType``; a parameter given
  twice or unknown to the yaml is ``invalid_request``;
* the requester is who it says: its mTLS certificate (verified by the listener) carries
  ``urn:uuid:<nfInstanceId>``, or a ``3gpp-Sbi-Client-Credentials`` assertion does (signed
  with the key of a mesh-CA certificate for that instance, ``aud`` NRF, unexpired; when both
  are there they must agree), and it is registered here with that ``nfType``
  (``invalid_client`` otherwise);
* the target allows it: the target instance (or, by type, at least one registered instance
  of ``targetNfType``) offers every service of ``scope`` (``invalid_scope``), and its
  ``allowedNfTypes``, ``allowedNfDomains`` and ``allowedNssais`` (profile and service level)
  admit the requester's type, FQDN and S-NSSAIs (``unauthorized_client``).

Claims (AccessTokenClaims): ``iss`` (this NRF's instance id), ``sub`` (the requester),
``aud`` (``targetNfType``, or ``[targetNfInstanceId]``), ``scope``, ``exp``, plus ``iat`` and
``nbf``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from dataplane.routing import LocalResponse, Request
from nf_adapters.discovery import NF_TYPES, services_of

log = logging.getLogger(__name__)

ALGORITHMS = ("ES256", "RS256")
CCA_HEADER = b"3gpp-sbi-client-credentials"  # TS 29.500: the consumer's credentials assertion
FORM = "application/x-www-form-urlencoded"
_SCOPE_RE = re.compile(r"^([a-zA-Z0-9_:-]+)( [a-zA-Z0-9_:-]+)*$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# AccessTokenReq members (TS29510_Nnrf_AccessToken.yaml, Rel-17)
REQ_PARAMS = frozenset((
    "grant_type", "nfInstanceId", "nfType", "targetNfType", "scope", "targetNfInstanceId",
    "requesterPlmn", "requesterPlmnList", "requesterSnssaiList", "requesterFqdn",
    "requesterSnpnList", "targetPlmn", "targetSnpn", "targetSnssaiList", "targetNsiList",
    "targetNfSetId", "targetNfServiceSetId", "hnrfAccessTokenUri", "sourceNfInstanceId"))
_JSON_PARAMS = frozenset(("requesterPlmn", "requesterPlmnList", "requesterSnssaiList",
                          "requesterSnpnList", "targetPlmn", "targetSnpn", "targetSnssaiList"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> dict:
    """The public JWK of ``public_key`` (PyJWT's encoder)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return dict(ECAlgorithm.to_jwk(public_key, as_dict=True))
    return dict(RSAAlgorithm.to_jwk(public_key, as_dict=True))


def thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the ``kid`` of a signing key."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass
class _Key:
    kid: str
    algorithm: str
    private: object
    jwk: dict            # public JWK with kid, alg, use, x5c
    retire_at: float = 0.0  # monotonic time after which it is dropped (0: current key)


class SigningKeys:
    """The NRF's token signing keys, certified by the mesh CA (``ca``: a ``gateway.ca.MeshCA``
    with its key), and their JWKS."""

    def __init__(self, ca: object, issuer_id: str, *, algorithm: str = "ES256",
                 jwks_file: str | None = None, token_lifetime_s: float = 3600.0,
                 cert_days: int = 30, clock: Callable[[], float] = time.monotonic) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        self.ca = ca
        self.issuer_id = issuer_id.lower()
        self.algorithm = algorithm
        self.jwks_file = jwks_file
        self.token_lifetime_s = token_lifetime_s
        self.cert_days = cert_days
        self.clock = clock
        self.keys: list[_Key] = []  # current first
        self.rotations = 0
        self.rotate()

    @property
    def current(self) -> _Key:
        return self.keys[0]

    def rotate(self, algorithm: str | None = None) -> str:
        """A new current key (certified by the mesh CA); the previous one is kept until the
        tokens it signed have expired.  Returns the new ``kid``."""
        alg = algorithm or self.algorithm
        if alg not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        private = (ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
                   else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        public = private.public_key()
        cert_pem = self.ca.certify(public, "NRF", self.issuer_id, days=self.cert_days)
        from cryptography import x509

        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        jwk = public_jwk(public)
        kid = thumbprint(jwk)
        jwk.update(kid=kid, alg=alg, use="sig", x5c=[base64.b64encode(der).decode("ascii")])
        now = self.clock()
        for k in self.keys:
            if not k.retire_at:
                k.retire_at = now + self.token_lifetime_s + 60.0
        self.keys = [_Key(kid, alg, private, jwk)] + [k for k in self.keys if k.retire_at > now]
        self.rotations += 1
        self.write_jwks()
        return kid

    def jwks(self) -> dict:
        """``{"keys": [...]}``: every key still needed to verify a live token."""
        return {"keys": [k.jwk for k in self.keys]}

    def write_jwks(self) -> None:
        if not self.jwks_file:
            return
        data = json.dumps(self.jwks(), indent=1).encode()
        folder = os.path.dirname(os.path.abspath(self.jwks_file))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".jwks-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.jwks_file)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def sign(self, claims: dict) -> str:
        """A JWS compact serialization of ``claims`` with the current key."""
        key = self.current
        return jwt.encode(claims, key.private, algorithm=key.algorithm,
                          headers={"kid": key.kid, "typ": "JWT"})


class TokenRequestError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _json_response(status: int, body: dict, extra: list | None = None) -> LocalResponse:
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
               (b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
    return LocalResponse(status, headers + (extra or []), raw)


def token_error(error: str, description: str) -> LocalResponse:
    """AccessTokenErr (400; the only status the yaml gives it)."""
    return _json_response(400, {"error": error, "error_description": description})


def _snssai_key(s: object) -> tuple | None:
    if not isinstance(s, dict) or "sst" not in s:
        return None
    return (int(s["sst"]), str(s.get("sd", "")).lower())


def _allows(rules: dict, nf_type: str, fqdn: str | None, snssais: set) -> str | None:
    """None when the access rules of a profile or service (``allowedNfTypes``,
    ``allowedNfDomains``, ``allowedNssais``) admit the requester, else why not."""
    types = rules.get("allowedNfTypes")
    if types and nf_type not in types:
        return f"NF type {nf_type} is not in allowedNfTypes"
    domains = rules.get("allowedNfDomains")
    if domains:
        if not fqdn:
            return "the requester has no FQDN to match allowedNfDomains"
        if not any(_domain_match(p, fqdn) for p in domains):
            return f"FQDN {fqdn} matches no allowedNfDomains pattern"
    nssais = rules.get("allowedNssais")
    if nssais:
        allowed = {k for k in map(_snssai_key, nssais) if k is not None}
        if not snssais or not snssais & allowed:
            return "no S-NSSAI of the requester is in allowedNssais"
    return None


def _domain_match(pattern: str, fqdn: str) -> bool:
    try:  # allowedNfDomains are regular expressions (TS 29.510)
        return re.fullmatch(pattern, fqdn) is not None
    except re.error:
        return False


@dataclass(frozen=True)
class _Forwarded:
    instance_id: str


@dataclass
class AccessTokenService:
    """The ``/oauth2/token`` handler over a registry and a key ring.

    ``identity_of(peer_info)`` returns the caller's verified mTLS identity (an object with
    ``instance_id``, as ``gateway.identity.peer_identity``), or None."""

    registry: object
    keys: SigningKeys
    identity_of: Callable[[dict], object]
    lifetime_s: int = 3600
    issued: int = 0
    refused: dict = field(default_factory=dict)
    # set only where requests come from the gateway's own workers (the control plane's
    # loopback listener): the worker puts the caller's verified instance id in this header
    trusted_identity_header: bytes | None = None
    # the mesh CA certificate: a 3gpp-Sbi-Client-Credentials assertion must be signed with
    # the key of a certificate it issued (None: such assertions are not accepted)
    ca_cert: object = None

    def handle(self, req: Request) -> LocalResponse:
        if req.method != "POST":
            from nf_adapters.problem_details import problem

            return problem(405, "INVALID_API", f"{req.method} not allowed on /oauth2/token")
        try:
            resp = self._issue(req)
        except TokenRequestError as exc:
            self.refused[exc.error] = self.refused.get(exc.error, 0) + 1
            return token_error(exc.error, exc.description)
        self.issued += 1
        return resp

    # ------------------------------------------------------------------ request form

    def _form(self, req: Request) -> dict:
        ctype = b""
        for k, v in req.headers:
            if k == b"content-type":
                ctype = v
        if ctype.split(b";", 1)[0].strip().lower() != FORM.encode():
            raise TokenRequestError("invalid_request", f"Content-Type must be {FORM}")
        try:
            pairs = parse_qsl(req.body.decode("utf-8"), keep_blank_values=True,
                              strict_parsing=bool(req.body), max_num_fields=64)
        except (UnicodeDecodeError, ValueError) as exc:
            raise TokenRequestError("invalid_request", f"malformed form body: {exc}") from None
        form: dict = {}
        for name, value in pairs:
            if name not in REQ_PARAMS:
                raise TokenRequestError("invalid_request", f"unknown parameter {name}")
            if name in form:
                raise TokenRequestError("invalid_request", f"{name} given more than once")
            if name in _JSON_PARAMS:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise TokenRequestError("invalid_request", f"{name} is not JSON") from None
            form[name] = value
        for name in ("grant_type", "nfInstanceId", "scope"):
            if not form.get(name):
                raise TokenRequestError("invalid_request", f"{name} missing")
        if form["grant_type"] != "client_credentials":
            raise TokenRequestError("unsupported_grant_type",
                                    "grant_type must be client_credentials")
        for name in ("nfInstanceId", "targetNfInstanceId", "sourceNfInstanceId"):
            if name in form and not _UUID_RE.match(form[name]):
                raise TokenRequestError("invalid_request", f"{name} is not a UUID")
        for name in ("nfType", "targetNfType"):
            if name in form and form[name] not in NF_TYPES:
                raise TokenRequestError("invalid_request", f"{name} is not an NFType")
        if not _SCOPE_RE.match(form["scope"]):
            raise TokenRequestError("invalid_scope", "scope must be service names separated "
                                    "by single spaces")
        if "targetNfInstanceId" not in form and not ("nfType" in form and "targetNfType" in form):
            raise TokenRequestError("invalid_request", "targetNfInstanceId, or nfType and "
                                    "targetNfType, must be given")
        snssais = form.get("requesterSnssaiList")
        if snssais is not None and (not isinstance(snssais, list)
                                    or any(_snssai_key(s) is None for s in snssais)):
            raise TokenRequestError("invalid_request", "requesterSnssaiList is not a list of "
                                    "Snssai")
        return form

    def _client_credentials(self, value: bytes, nf_id: str) -> str:
        """Check a ``3gpp-Sbi-Client-Credentials`` assertion (TS 33.501 §13.3.8, TS 29.500
        §5.2.3.2.x): a JWS whose header carries the consumer's certificate (``x5c``), signed
        with its key, the certificate issued by the mesh CA for ``urn:uuid:<sub>``, ``sub`` =
        ``nfInstanceId``, ``aud`` naming the NRF, not expired.  Returns the instance id."""
        from cryptography import x509

        if self.ca_cert is None:
            raise TokenRequestError("invalid_client", "client credentials assertions are not "
                                    "accepted here")
        try:
            token = value.decode("ascii").strip()
            header = jwt.get_unverified_header(token)
            chain = header.get("x5c") or []
            cert = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
            cert.verify_directly_issued_by(self.ca_cert)
            now = time.time()
            if not (cert.not_valid_before_utc.timestamp() <= now
                    <= cert.not_valid_after_utc.timestamp()):
                raise ValueError("certificate not valid now")
            alg = header.get("alg")
            if alg not in ALGORITHMS:
                raise ValueError(f"alg {alg!r}")
            claims = jwt.decode(token, cert.public_key(), algorithms=[alg], audience="NRF",
                                options={"require": ["sub", "exp", "aud", "iat"]})
        except (ValueError, TypeError, IndexError, UnicodeDecodeError, jwt.InvalidTokenError,
                InvalidSignature) as exc:
            raise TokenRequestError("invalid_client", f"client credentials assertion: "
                                    f"{exc}") from None
        sub = str(claims["sub"]).lower()
        try:
            uris = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if f"urn:uuid:{sub}" not in (u.lower() for u in uris):
            raise TokenRequestError("invalid_client", "client credentials assertion: its "
                                    "certificate is not for its sub")
        if sub != nf_id:
            raise TokenRequestError("invalid_client", "client credentials assertion: sub is "
                                    "not nfInstanceId")
        return sub

    # ------------------------------------------------------------------ decision

    def _issue(self, req: Request) -> LocalResponse:
        form = self._form(req)
        nf_id = form["nfInstanceId"].lower()
        if self.trusted_identity_header is not None:
            ident = None
            for k, v in req.headers:
                if k == self.trusted_identity_header:
                    ident = _Forwarded(v.decode("latin-1").lower())
        else:
            ident = self.identity_of(req.peer)
        cca = None
        for k, v in req.headers:
            if k == CCA_HEADER:
                cca = v
        if cca is not None:
            asserted = self._client_credentials(cca, nf_id)
            if ident is not None and ident.instance_id != asserted:
                raise TokenRequestError("invalid_client", "the client credentials assertion "
                                        "and the client certificate name different NFs")
            ident = _Forwarded(asserted)
        if ident is None:
            raise TokenRequestError("invalid_client", "no verified mesh client certificate")
        if getattr(ident, "instance_id", None) != nf_id:
            raise TokenRequestError("invalid_client", "nfInstanceId is not the identity of the "
                                    "client certificate")
        try:
            requester = self.registry.get(nf_id)
        except KeyError:
            raise TokenRequestError("invalid_client", f"NF instance {nf_id} is not "
                                    "registered") from None
        nf_type = requester.get("nfType")
        if "nfType" in form and form["nfType"] != nf_type:
            raise TokenRequestError("invalid_client", f"nfType {form['nfType']} is not the "
                                    f"registered type {nf_type}")
        fqdn = form.get("requesterFqdn") or requester.get("fqdn")
        snssais = {k for k in map(_snssai_key, form.get("requesterSnssaiList")
                                  or requester.get("sNssais") or ()) if k is not None}
        scopes = form["scope"].split(" ")
        target_id = form.get("targetNfInstanceId")
        if target_id is not None:
            try:
                targets = [self.registry.get(target_id.lower())]
            except KeyError:
                raise TokenRequestError("invalid_request", f"target NF instance {target_id} is "
                                        "not registered") from None
            if "targetNfType" in form and targets[0].get("nfType") != form["targetNfType"]:
                raise TokenRequestError("invalid_request", "targetNfType is not the type of "
                                        "targetNfInstanceId")
            aud: object = [target_id.lower()]
        else:
            targets = [self.registry.get(i) for i in self.registry.instance_ids(form["targetNfType"])]
            if not targets:
                raise TokenRequestError("invalid_request", f"no {form['targetNfType']} "
                                        "registered")
            aud = form["targetNfType"]
        for service in scopes:
            offered = False
            why = None
            for profile in targets:
                denied = _allows(profile, nf_type, fqdn, snssais)
                for svc in services_of(profile):
                    if svc.get("serviceName") != service:
                        continue
                    offered = True
                    reason = denied or _allows(svc, nf_type, fqdn, snssais)
                    if reason is None:
                        break
                    why = reason
                else:
                    continue
                break
            else:
                if not offered:
                    raise TokenRequestError("invalid_scope", f"service {service} is not offered "
                                            "by the target")
                raise TokenRequestError("unauthorized_client", f"{service}: {why}")
        now = int(time.time())
        claims = {"iss": self.keys.issuer_id, "sub": nf_id, "aud": aud, "scope": form["scope"],
                  "exp": now + self.lifetime_s, "iat": now, "nbf": now - 1}
        if "requesterPlmn" in form:
            claims["consumerPlmnId"] = form["requesterPlmn"]
        token = self.keys.sign(claims)
        return _json_response(200, {"access_token": token, "token_type": "Bearer",
                                    "expires_in": self.lifetime_s, "scope": form["scope"]})


class TokenIssuer:
    """``SigningKeys`` + ``AccessTokenService`` + the rotation timer, built from the config's
    ``oauth2.issuer`` section."""

    def __init__(self, service: AccessTokenService, rotate_every_s: float) -> None:
        self.service = service
        self.keys = service.keys
        self.rotate_every_s = rotate_every_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.rotate_every_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._rotate_loop())

    async def _rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rotate_every_s)
            try:
                kid = self.keys.rotate()
                log.info("token signing key rotated: kid %s", kid)
            except Exception:  # noqa: BLE001 (keep the old key; try again next period)
                log.exception("token signing key rotation failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


def issuer_from_config(config: object, registry: object) -> TokenIssuer | None:
    """The token issuer the config's ``oauth2.issuer`` asks for, None when off."""
    section = getattr(getattr(config, "oauth2", None), "issuer", None)
    if section is None or not section.enabled:
        return None
    from gateway.ca import MeshCA, gateway_instance_id
    from gateway.identity import peer_identity

    ca = MeshCA.load(section.ca_dir)
    name = getattr(getattr(config, "gateway", None), "name", "nfmesh")
    issuer_id = section.instance_id or gateway_instance_id(name)
    keys = SigningKeys(ca, issuer_id, algorithm=section.algorithm,
                       jwks_file=section.jwks_file or default_jwks_file(section.ca_dir),
                       token_lifetime_s=section.lifetime_s)
    svc = AccessTokenService(registry, keys, peer_identity, lifetime_s=section.lifetime_s,
                             ca_cert=ca.cert)
    return TokenIssuer(svc, section.rotate_every_s)


def default_jwks_file(ca_dir: str) -> str:
    """Where the issuer publishes its JWKS when the config names no file."""
    return os.path.join(ca_dir, "nrf-token-keys.jwks")
