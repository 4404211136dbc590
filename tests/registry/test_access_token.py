"""Nnrf_AccessToken (issue 14, item 1): POST /oauth2/token on the NRF API.

Every answer is checked against the official TS29510_Nnrf_AccessToken.yaml (AccessTokenRsp,
AccessTokenErr) and the token's claims against AccessTokenClaims; the requester's identity
comes from its mTLS certificate (here a stand-in for the listener's verified identity; the
end-to-end test over real TLS is in tests/test_bearer.py).
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from urllib.parse import urlencode

import jwt
import pytest

from dataplane.routing import Request
from gateway.ca import MeshCA
from gateway.nrf_api import NrfApi
from gateway.registry.access_token import AccessTokenService, SigningKeys
from nf_adapters.bearer import KeySet, TokenError, TokenVerifier
from tests.registry.conftest import make_profile, req

TOKEN_YAML = "TS29510_Nnrf_AccessToken.yaml"
FORM = "application/x-www-form-urlencoded"
NRF_ID = "5a0f6d2e-1c3b-4d5e-8f90-1a2b3c4d5e6f"


@pytest.fixture
def ca(tmp_path) -> MeshCA:
    return MeshCA.create(str(tmp_path / "ca"))


class Setup:
    def __init__(self, api: NrfApi, keys: SigningKeys, amf: str, udm: str, who: dict) -> None:
        self.api, self.keys, self.amf, self.udm, self.who = api, keys, amf, udm, who

    async def token(self, form: dict, caller: str | None = "amf", body: bytes | None = None,
                    ctype: str = FORM, extra: list | None = None):
        peer = {"id": self.who.get(caller)} if caller else {}
        data = body if body is not None else urlencode(form).encode()
        r = req("POST", "/oauth2/token", data, ctype=ctype, extra=extra)
        return await self.api.handle(Request(r.method, r.path, r.headers, r.body, peer))

    def form(self, **over) -> dict:
        f = {"grant_type": "client_credentials", "nfInstanceId": self.amf, "nfType": "AMF",
             "targetNfType": "UDM", "scope": "nudm-sdm"}
        f.update(over)
        return {k: v for k, v in f.items() if v is not None}


@pytest.fixture
async def setup(registry, ca, tmp_path) -> Setup:
    amf, udm, smf = (str(uuid.uuid4()) for _ in range(3))
    api = NrfApi(registry)
    for p in (make_profile("AMF", amf, services=("namf-comm",), fqdn="amf1.mnc001.example"),
              make_profile("SMF", smf, services=("nsmf-pdusession",)),
              make_profile("UDM", udm, services=("nudm-sdm", "nudm-uecm"), allowedNfTypes=["AMF", "SMF"])):
        p["nfServiceList"] = {k: dict(v) for k, v in p["nfServiceList"].items()}
        for s in p["nfServiceList"].values():
            if s["serviceName"] == "nudm-uecm":
                s["allowedNfTypes"] = ["SMF"]
        r = await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
        assert r.status == 201, r.body
    keys = SigningKeys(ca, NRF_ID, jwks_file=str(tmp_path / "jwks.json"))
    who = {"amf": amf, "smf": smf, "udm": udm, "stranger": str(uuid.uuid4())}
    api.token_service = AccessTokenService(
        registry, keys, lambda peer: SimpleNamespace(instance_id=peer["id"]) if "id" in peer else None)
    return Setup(api, keys, amf, udm, who)


def _ok(resp, schemas) -> dict:
    assert resp.status == 200, resp.body
    h = dict(resp.headers)
    assert h[b"content-type"] == b"application/json"
    assert h[b"cache-control"] == b"no-store" and h[b"pragma"] == b"no-cache"
    body = json.loads(resp.body)
    schemas.check(body, TOKEN_YAML, "AccessTokenRsp")
    return body


def _err(resp, schemas, error: str) -> dict:
    assert resp.status == 400, resp.body
    body = json.loads(resp.body)
    schemas.check(body, TOKEN_YAML, "AccessTokenErr")
    assert body["error"] == error, body
    return body


async def test_token_by_type_is_es256_with_the_3gpp_claims(setup, schemas) -> None:
    body = _ok(await setup.token(setup.form()), schemas)
    assert body["token_type"] == "Bearer" and body["scope"] == "nudm-sdm"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256" and header["kid"] == setup.keys.current.kid
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    schemas.check(claims, TOKEN_YAML, "AccessTokenClaims")
    assert (claims["iss"], claims["sub"], claims["aud"], claims["scope"]) == (
        NRF_ID, setup.amf, "UDM", "nudm-sdm")
    assert claims["exp"] - claims["iat"] == body["expires_in"]


async def test_token_for_an_instance_has_it_as_audience(setup, schemas) -> None:
    form = setup.form(targetNfType=None, nfType=None, targetNfInstanceId=setup.udm)
    body = _ok(await setup.token(form), schemas)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    schemas.check(claims, TOKEN_YAML, "AccessTokenClaims")
    assert claims["aud"] == [setup.udm]


async def test_rs256_is_available_and_verifies(setup, schemas, ca) -> None:
    setup.keys.rotate("RS256")
    body = _ok(await setup.token(setup.form()), schemas)
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"
    verifier = TokenVerifier(KeySet(setup.keys.jwks, ca.cert))
    assert verifier.claims(body["access_token"].encode()).sub == setup.amf


async def test_rotation_keeps_older_tokens_valid(setup, schemas, ca, tmp_path) -> None:
    first = _ok(await setup.token(setup.form()), schemas)["access_token"]
    old_kid = setup.keys.current.kid
    new_kid = setup.keys.rotate()
    assert new_kid != old_kid
    second = _ok(await setup.token(setup.form()), schemas)["access_token"]
    assert jwt.get_unverified_header(second)["kid"] == new_kid
    verifier = TokenVerifier(KeySet(str(tmp_path / "jwks.json"), ca.cert))
    for t in (first, second):
        assert verifier.claims(t.encode()).sub == setup.amf
    assert {k["kid"] for k in setup.keys.jwks()["keys"]} == {old_kid, new_kid}


@pytest.mark.parametrize("caller, error", [(None, "invalid_client"), ("smf", "invalid_client"),
                                           ("stranger", "invalid_client")])
async def test_requester_must_be_its_mtls_identity(setup, schemas, caller, error) -> None:
    _err(await setup.token(setup.form(), caller=caller), schemas, error)


async def test_unregistered_requester_is_invalid_client(setup, schemas) -> None:
    stranger = setup.who["stranger"]
    _err(await setup.token(setup.form(nfInstanceId=stranger), caller="stranger"), schemas,
         "invalid_client")


async def test_nf_type_must_be_the_registered_one(setup, schemas) -> None:
    _err(await setup.token(setup.form(nfType="SMF")), schemas, "invalid_client")


async def test_target_profile_decides(setup, schemas) -> None:
    # nudm-uecm allows only SMF; a service nobody offers is an invalid scope
    _err(await setup.token(setup.form(scope="nudm-uecm")), schemas, "unauthorized_client")
    _err(await setup.token(setup.form(scope="nudm-sdm nudm-uecm")), schemas, "unauthorized_client")
    _err(await setup.token(setup.form(scope="npcf-smpolicycontrol")), schemas, "invalid_scope")
    smf = setup.who["smf"]
    _ok(await setup.token(setup.form(nfInstanceId=smf, nfType="SMF", scope="nudm-sdm nudm-uecm"),
                          caller="smf"), schemas)


@pytest.mark.parametrize("over, error", [
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({"grant_type": None}, "invalid_request"),
    ({"scope": None}, "invalid_request"),
    ({"scope": "nudm-sdm  bad"}, "invalid_scope"),
    ({"nfInstanceId": "not-a-uuid"}, "invalid_request"),
    ({"targetNfType": "NOPE"}, "invalid_request"),
    ({"targetNfType": None}, "invalid_request"),
    ({"bogus": "1"}, "invalid_request"),
    ({"requesterSnssaiList": "{not json"}, "invalid_request"),
])
async def test_malformed_requests(setup, schemas, over, error) -> None:
    _err(await setup.token(setup.form(**over)), schemas, error)


async def test_repeated_parameter_and_wrong_media_type(setup, schemas) -> None:
    body = urlencode(setup.form()).encode() + b"&scope=nudm-sdm"
    _err(await setup.token({}, body=body), schemas, "invalid_request")
    _err(await setup.token(setup.form(), ctype="application/json"), schemas, "invalid_request")


async def test_allowed_nssais_and_domains(registry, ca, schemas, tmp_path) -> None:
    amf, udm = str(uuid.uuid4()), str(uuid.uuid4())
    api = NrfApi(registry)
    for p in (make_profile("AMF", amf, services=("namf-comm",), fqdn="amf.other.example",
                           sNssais=[{"sst": 1}]),
              make_profile("UDM", udm, services=("nudm-sdm",),
                           allowedNfDomains=[r".*\.home\.example"])):
        r = await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
        assert r.status == 201, r.body
    keys = SigningKeys(ca, NRF_ID)
    api.token_service = AccessTokenService(registry, keys, lambda peer: SimpleNamespace(instance_id=amf))
    form = {"grant_type": "client_credentials", "nfInstanceId": amf, "nfType": "AMF",
            "targetNfType": "UDM", "scope": "nudm-sdm"}

    async def ask(f: dict):
        return await api.handle(req("POST", "/oauth2/token", urlencode(f).encode(), ctype=FORM))

    _err(await ask(form), schemas, "unauthorized_client")
    _ok(await ask(dict(form, requesterFqdn="amf.home.example")), schemas)


def test_verifier_refuses_keys_the_mesh_ca_did_not_certify(ca, tmp_path) -> None:
    other = MeshCA.create(str(tmp_path / "other"))
    keys = SigningKeys(other, NRF_ID)
    token = keys.sign({"iss": NRF_ID, "sub": NRF_ID, "aud": "UDM", "scope": "nudm-sdm", "exp": 2**40})
    verifier = TokenVerifier(KeySet(keys.jwks, ca.cert))
    with pytest.raises(TokenError, match="unknown kid"):
        verifier.claims(token.encode())
    assert keys.current.kid in verifier.keys.rejected


async def test_workers_pass_the_verified_identity_to_the_control_plane(setup, schemas) -> None:
    """--workers N: a worker forwards /oauth2/token to the control plane over loopback h2c and
    says whose certificate the connection had; a caller's own header is never passed on."""
    from gateway.control_plane import IDENTITY_HEADER, ControlPlaneAddress, NrfForwardRouter

    fwd = NrfForwardRouter(ControlPlaneAddress("/nonexistent", "127.0.0.1", 1), ())
    forged = [(b":method", b"POST"), (b":path", b"/oauth2/token"), (IDENTITY_HEADER, setup.amf.encode())]
    peer = {"nf_identity": SimpleNamespace(instance_id=setup.who["smf"])}
    decision = fwd.route(forged, peer)
    assert [v for k, v in decision.headers if k == IDENTITY_HEADER] == [setup.who["smf"].encode()]
    assert [v for k, v in fwd.route(forged, {"nf_identity": None}).headers if k == IDENTITY_HEADER] == []

    setup.api.token_service.trusted_identity_header = IDENTITY_HEADER
    form = urlencode(setup.form()).encode()
    r = req("POST", "/oauth2/token", form, ctype=FORM, extra=[(IDENTITY_HEADER, setup.amf.encode())])
    _ok(await setup.api.handle(r), schemas)
    r = req("POST", "/oauth2/token", form, ctype=FORM)  # no identity from the worker
    _err(await setup.api.handle(r), schemas, "invalid_client")


def _cca(ca: MeshCA, nf_id: str, *, nf_type: str = "AMF", sub: str | None = None,
         exp_in: int = 60, aud: object = ("NRF",)) -> bytes:
    """A 3gpp-Sbi-Client-Credentials assertion: signed with the key of the NF's certificate,
    which rides in x5c."""
    import base64
    import time

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = ca.issue(nf_type, nf_id)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(key_pem, None)
    now = int(time.time())
    return jwt.encode({"sub": sub or nf_id, "aud": list(aud), "iat": now, "exp": now + exp_in},
                      key, algorithm="ES256",
                      headers={"x5c": [base64.b64encode(der).decode()]}).encode()


async def test_client_credentials_assertion_authenticates_the_requester(setup, schemas, ca,
                                                                        tmp_path) -> None:
    h = b"3gpp-sbi-client-credentials"
    svc = setup.api.token_service
    good = _cca(ca, setup.amf)
    # not accepted until the service knows the mesh CA
    _err(await setup.token(setup.form(), caller=None, extra=[(h, good)]), schemas, "invalid_client")
    svc.ca_cert = ca.cert
    # no client certificate (another SCP terminated TLS): the assertion alone authenticates
    _ok(await setup.token(setup.form(), caller=None, extra=[(h, good)]), schemas)
    _ok(await setup.token(setup.form(), caller="amf", extra=[(h, good)]), schemas)
    other_ca = MeshCA.create(str(tmp_path / "other"))
    for bad, caller in ((good, "smf"),                                   # names another NF than mTLS
                        (_cca(ca, setup.amf, exp_in=-120), None),        # expired
                        (_cca(other_ca, setup.amf), None),               # not the mesh CA's
                        (_cca(ca, setup.amf, aud=("UDM",)), None),       # not for the NRF
                        (_cca(ca, setup.who["smf"], nf_type="SMF"), None),  # sub is not nfInstanceId
                        (good[:-4] + b"AAAA", None)):                    # forged signature
        _err(await setup.token(setup.form(), caller=caller, extra=[(h, bad)]), schemas,
             "invalid_client")
