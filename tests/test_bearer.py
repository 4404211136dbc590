"""Bearer access token checks at the gateway (issue 14, item 2).

Unit: ``nf_adapters.bearer.BearerTokenRouter`` with tokens the NRF's key ring signs (mesh CA
certified keys): expired, not yet valid, wrong audience, wrong scope, forged signature,
``alg: none``, unknown kid, ``sub`` not the caller's mTLS identity, each refused with the
RFC 6750 ``WWW-Authenticate`` and ProblemDetails; a valid token verified once however often it
is used; forwarded or stripped.  End to end (both HTTP/2 backends): the gateway's TLS listener
with mesh certificates, the token obtained from its own ``/oauth2/token`` with curl, then used
toward a producer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
import uuid

import jwt
import pytest

from dataplane.routing import Endpoint, Forward, LocalResponse
from gateway.ca import MeshCA, write_pair
from gateway.config import ConfigError, parse_config
from gateway.registry.access_token import SigningKeys
from nf_adapters.bearer import (
    BearerTokenRouter,
    KeySet,
    TokenPolicy,
    TokenVerifier,
    nf_type_of_service,
)

NRF_ID = "5a0f6d2e-1c3b-4d5e-8f90-1a2b3c4d5e6f"
AMF_ID = "6b2f5a2e-0c1d-4a53-9d3e-8d3a7c1e9f01"
UDM_ID = "7c3a6b3f-1d2e-4b64-8e4f-9e4b8d2f0a12"
OTHER_UDM = "8d4b7c4a-2e3f-4c75-9f5a-af5c9e3a1b23"
PATH = b"/nudm-sdm/v2/imsi-001010000000001/am-data"


class Inner:
    """A router that forwards everything and names the producer instance."""

    def __init__(self) -> None:
        self.calls = 0

    def route(self, headers, peer):
        self.calls += 1
        hs = list(headers)
        return Forward(Endpoint("127.0.0.1", 1), hs, alternates=[(Endpoint("127.0.0.1", 2), hs)],
                       extra_response_headers=[(b"3gpp-sbi-producer-id", b"nfinst=" + UDM_ID.encode())],
                       alternate_response_headers=[[(b"3gpp-sbi-producer-id",
                                                     b"nfinst=" + OTHER_UDM.encode())]])


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> MeshCA:
    return MeshCA.create(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def keys(ca) -> SigningKeys:
    return SigningKeys(ca, NRF_ID)


def _claims(**over) -> dict:
    now = int(time.time())
    c = {"iss": NRF_ID, "sub": AMF_ID, "aud": "UDM", "scope": "nudm-sdm nudm-uecm",
         "exp": now + 600, "iat": now, "nbf": now - 1}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def _router(keys, ca, **kw) -> tuple[BearerTokenRouter, Inner]:
    inner = Inner()
    verifier = TokenVerifier(KeySet(keys.jwks, ca.cert), clock_skew_s=0)
    policy = TokenPolicy({"nudm-sdm": "required", "nudm-uecm": "required"}, "off")
    return BearerTokenRouter(inner, policy, verifier, lambda peer: peer.get("id"), **kw), inner


def _headers(token: str | None, path: bytes = PATH, scheme: bytes = b"Bearer") -> list:
    h = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"udm"), (b":path", path)]
    if token is not None:
        h.append((b"authorization", scheme + b" " + token.encode()))
    return h


def _refused(decision, status: int, error: str | None) -> dict:
    assert isinstance(decision, LocalResponse), decision
    assert decision.status == status
    h = dict(decision.headers)
    assert h[b"content-type"] == b"application/problem+json"
    www = h[b"www-authenticate"].decode()
    assert www.startswith('Bearer realm="nfmesh"')
    if error is None:
        assert "error=" not in www
    else:
        assert f'error="{error}"' in www
    body = json.loads(decision.body)
    assert body["status"] == status
    if status == 403:
        assert body["cause"] == "ACCESS_TOKEN_DENIED"
    return body


ME = {"id": AMF_ID}


def test_valid_token_passes_and_is_verified_once(keys, ca) -> None:
    router, inner = _router(keys, ca)
    token = keys.sign(_claims())
    for _ in range(5):
        d = router.route(_headers(token), ME)
        assert isinstance(d, Forward)
        assert (b"authorization", b"Bearer " + token.encode()) in d.headers
    assert router.verifier.verified == 1 and inner.calls == 5


def test_token_stripped_when_configured(keys, ca) -> None:
    router, _ = _router(keys, ca, forward_token=False)
    d = router.route(_headers(keys.sign(_claims())), ME)
    assert isinstance(d, Forward)
    assert all(k != b"authorization" for k, _ in d.headers)
    assert all(k != b"authorization" for _, hs in d.alternates for k, _ in hs)


def test_missing_and_malformed_authorization(keys, ca) -> None:
    router, inner = _router(keys, ca)
    _refused(router.route(_headers(None), ME), 401, None)
    _refused(router.route(_headers("abc", scheme=b"Basic"), ME), 401, "invalid_request")
    _refused(router.route(_headers("not.a.jwt"), ME), 401, "invalid_token")
    assert inner.calls == 0


@pytest.mark.parametrize("over, status, error", [
    ({"exp": int(time.time()) - 10}, 401, "invalid_token"),             # expired
    ({"nbf": int(time.time()) + 300}, 401, "invalid_token"),            # not yet valid
    ({"aud": "AUSF"}, 401, "invalid_token"),                            # another NF type
    ({"aud": [str(uuid.uuid4())]}, 401, "invalid_token"),               # another instance
    ({"scope": "nudm-uecm"}, 403, "insufficient_scope"),               # service not in scope
    ({"sub": str(uuid.uuid4())}, 403, "invalid_token"),                 # not the caller's token
    ({"iss": str(uuid.uuid4())}, 401, "invalid_token"),                 # key not issued to iss
    ({"scope": None}, 401, "invalid_token"),                            # claim missing
])
def test_bad_claims_are_refused(keys, ca, over, status, error) -> None:
    router, inner = _router(keys, ca)
    _refused(router.route(_headers(keys.sign(_claims(**over))), ME), status, error)
    assert inner.calls == (1 if isinstance(over.get("aud"), list) else 0)  # instance: after selection


def test_instance_audience_matches_the_selected_producer(keys, ca) -> None:
    router, _ = _router(keys, ca)
    d = router.route(_headers(keys.sign(_claims(aud=[UDM_ID]))), ME)
    assert isinstance(d, Forward) and d.alternates == []  # the other UDM is not in aud
    d = router.route(_headers(keys.sign(_claims(aud=[UDM_ID, OTHER_UDM]))), ME)
    assert isinstance(d, Forward) and len(d.alternates) == 1


def test_sub_must_match_the_mtls_identity(keys, ca) -> None:
    router, _ = _router(keys, ca)
    token = keys.sign(_claims())
    _refused(router.route(_headers(token), {"id": str(uuid.uuid4())}), 403, "invalid_token")
    _refused(router.route(_headers(token), {}), 403, "invalid_token")  # no client certificate


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_forged_alg_none_and_unknown_kid(keys, ca, tmp_path) -> None:
    router, _ = _router(keys, ca)
    good = keys.sign(_claims())
    head, payload, sig = good.split(".")
    forged = ".".join((head, _b64(_claims(scope="nudm-sdm npcf-am")), sig))
    _refused(router.route(_headers(forged), ME), 401, "invalid_token")
    none = ".".join((_b64({"alg": "none", "kid": keys.current.kid}), payload, ""))
    _refused(router.route(_headers(none), ME), 401, "invalid_token")
    hs = jwt.encode(_claims(), "s" * 32, algorithm="HS256", headers={"kid": keys.current.kid})
    _refused(router.route(_headers(hs), ME), 401, "invalid_token")
    stranger = SigningKeys(MeshCA.create(str(tmp_path / "other")), NRF_ID)
    body = _refused(router.route(_headers(stranger.sign(_claims())), ME), 401, "invalid_token")
    assert "unknown kid" in body["detail"]


def test_rotated_key_is_picked_up(keys, ca, tmp_path) -> None:
    ring = SigningKeys(ca, NRF_ID, jwks_file=str(tmp_path / "jwks.json"))
    verifier = TokenVerifier(KeySet(str(tmp_path / "jwks.json"), ca.cert, reread_s=0))
    router = BearerTokenRouter(Inner(), TokenPolicy({}, "required"), verifier, lambda p: p.get("id"))
    old = ring.sign(_claims())
    assert isinstance(router.route(_headers(old), ME), Forward)
    ring.rotate()
    assert isinstance(router.route(_headers(ring.sign(_claims())), ME), Forward)
    assert isinstance(router.route(_headers(old), ME), Forward)


def test_policy_scopes_the_checks(keys, ca) -> None:
    router, inner = _router(keys, ca)
    assert isinstance(router.route(_headers(None, b"/namf-comm/v1/ue-contexts"), ME), Forward)
    assert isinstance(router.route(_headers(None, b"/oauth2/token"), ME), Forward)
    required = BearerTokenRouter(inner, TokenPolicy({}, "required"), router.verifier, lambda p: None)
    assert isinstance(required.route(_headers(None, b"/oauth2/token"), ME), Forward)
    _refused(required.route(_headers(None, b"/namf-comm/v1/ue-contexts"), ME), 401, None)
    assert nf_type_of_service("nudm-sdm") == "UDM" and nf_type_of_service("nfoo-bar") is None


def test_config_section_is_checked(tmp_path, ca) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"oauth2": {"issuer": {"enabled": True},
                                 "verify": {"enabled": True, "services": {"bad name": "required"}}}})
    text = str(err.value)
    for path in ("oauth2.issuer.enabled", "oauth2.issuer.ca_dir", "oauth2.verify.ca_file",
                 "oauth2.verify.services.bad name"):
        assert path in text
    cfg = parse_config({"registry": {"enabled": True},
                        "oauth2": {"issuer": {"enabled": True, "ca_dir": ca.directory},
                                   "verify": {"enabled": True, "ca_file": ca.cert_path,
                                              "services": {"nudm-sdm": "required"}}}})
    assert cfg.oauth2.verify.services == {"nudm-sdm": "required"}


# ---------------------------------------------------------------- end to end, real TLS


async def _curl(port: int, ca: str, cert: str, key: str, path: str, *args: str) -> tuple[int, dict, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--http2", "--cacert", ca, "--cert", cert, "--key", key,
        "-H", "User-Agent: AMF-test", "-D", "-", *args, f"https://127.0.0.1:{port}{path}",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


@pytest.mark.skipif(not shutil.which("curl"), reason="curl missing (Debian curl)")
async def test_token_from_the_nrf_then_used_through_the_gateway(tmp_path, backend) -> None:
    from gateway.app import Gateway
    from tests.conftest import start_origin

    ca = MeshCA.create(str(tmp_path / "ca"))
    gw_cert, gw_key = write_pair(str(tmp_path / "gw"), *ca.issue_gateway("scp-1", ips=["127.0.0.1"]))
    amf_id, smf_id = str(uuid.uuid4()), str(uuid.uuid4())
    amf = write_pair(str(tmp_path / "amf"), *ca.issue("AMF", amf_id))
    smf = write_pair(str(tmp_path / "smf"), *ca.issue("SMF", smf_id))
    origin = await start_origin(backend, name="udm")
    cfg = parse_config({
        "gateway": {"name": "scp-1", "backend": backend.NAME, "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "tls",
                       "tls": {"cert": gw_cert, "key": gw_key, "client_ca": ca.cert_path,
                               "require_client_cert": True}}],
        "registry": {"enabled": True},
        "oauth2": {"issuer": {"enabled": True, "ca_dir": ca.directory},
                   "verify": {"enabled": True, "ca_file": ca.cert_path,
                              "services": {"nudm-sdm": "required"}}},
    })
    gw = Gateway(cfg)
    await gw.start()
    try:
        reg = gw.registry.registry
        udm_profile = {"nfInstanceId": str(uuid.uuid4()), "nfType": "UDM", "nfStatus": "REGISTERED",
                       "ipv4Addresses": ["127.0.0.1"],
                       "nfServices": [{"serviceInstanceId": "1", "serviceName": "nudm-sdm",
                                       "versions": [{"apiVersionInUri": "v2", "apiFullVersion": "2.0.0"}],
                                       "scheme": "http", "nfServiceStatus": "REGISTERED"}]}
        await reg.register(udm_profile["nfInstanceId"], udm_profile)
        for nf_id, t in ((amf_id, "AMF"), (smf_id, "SMF")):
            await reg.register(nf_id, {"nfInstanceId": nf_id, "nfType": t, "nfStatus": "REGISTERED",
                                       "ipv4Addresses": ["127.0.0.1"]})
        port = gw.ports["sbi"]
        form = f"grant_type=client_credentials&nfInstanceId={amf_id}&nfType=AMF&targetNfType=UDM&scope=nudm-sdm"
        status, headers, body = await _curl(port, ca.cert_path, *amf, "/oauth2/token", "-d", form)
        assert status == 200, body
        assert headers["cache-control"] == "no-store"
        token = json.loads(body)["access_token"]
        # the SMF cannot get a token in the AMF's name
        form_smf = form
        status, _, body = await _curl(port, ca.cert_path, *smf, "/oauth2/token", "-d", form_smf)
        assert status == 400 and json.loads(body)["error"] == "invalid_client"

        target = ("-H", f"3gpp-Sbi-Target-apiRoot: http://127.0.0.1:{origin.port}")
        status, _, body = await _curl(port, ca.cert_path, *amf, "/nudm-sdm/v2/imsi-1/am-data",
                                      *target, "-H", f"Authorization: Bearer {token}")
        assert (status, body) == (200, b"ok udm")
        assert any((b"authorization", f"Bearer {token}".encode()) in h for h in origin.handler.requests)
        seen = len(origin.handler.requests)
        status, headers, body = await _curl(port, ca.cert_path, *amf, "/nudm-sdm/v2/imsi-1/am-data", *target)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["status"] == 401
        status, headers, body = await _curl(port, ca.cert_path, *smf, "/nudm-sdm/v2/imsi-1/am-data",
                                            *target, "-H", f"Authorization: Bearer {token}")
        assert status == 403 and json.loads(body)["cause"] == "ACCESS_TOKEN_DENIED"
        assert len(origin.handler.requests) == seen  # refusals never reach the producer
        from gateway.security_metrics import SecurityCollector

        samples = {s.name: s.value for fam in SecurityCollector(gw).collect() for s in fam.samples}
        assert samples["nfmesh_oauth2_tokens_issued_total"] == 1
        assert samples["nfmesh_oauth2_token_requests_refused_total"] == 1  # the SMF's attempt
        assert samples["nfmesh_oauth2_token_rejections_total"] == 2
        assert samples["nfmesh_oauth2_tokens_verified_total"] == 1
    finally:
        await gw.stop(drain=False)
        origin.server.close()
