"""``nfmesh demo --secure [--rotate-every S]``: the demo mesh with mTLS on every hop and an
OAuth2 access token on every request (issue 14, item 6).

* A mesh CA in a temporary folder issues every certificate: the gateway's (its TLS listener
  with mTLS and the mesh CRL, and its client certificate toward producers), each emulated
  NF's (producers serve TLS; model D checks that each presents the chosen instance's
  identity) and the consumer's (an AMF).
* The gateway runs the NRF's ``/oauth2/token`` (ES256, keys certified by the mesh CA) and
  requires a Bearer token on every SBI service but the NRF's own; the consumer fetches one
  token per (target NF type, service) and sends it on each request (``TokenClient``).
* ``--rotate-every S``: every S seconds each certificate is renewed by the mesh CA and
  loaded while traffic runs: the gateway's files are rewritten (the gateway notices within
  its ``reload_interval_s``), the producers switch their listener contexts, the consumer
  moves to a new client (the old one finishes its requests first), and the NRF's token
  signing key is rotated (older tokens stay valid).  Nothing is dropped: the demo's error
  count says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import uuid
from typing import Any
from urllib.parse import urlencode

log = logging.getLogger("nfmesh.demo")

CONSUMER_TYPE = "AMF"


class SecureMesh:
    """The certificates, config and rotation of a secure demo run."""

    def __init__(self, rotate_every: float | None = None) -> None:
        from gateway.ca import MeshCA

        self.dir = tempfile.mkdtemp(prefix="nfmesh-secure-demo-")
        self.ca = MeshCA.create(os.path.join(self.dir, "ca"))
        self.rotate_every = rotate_every
        self.rotations = 0  # rounds in which every certificate was renewed
        self.consumer_id = str(uuid.uuid4())
        self.gw_files = self._issue_gateway()
        self.consumer_files = self._issue("consumer", CONSUMER_TYPE, self.consumer_id)
        self.nfs: list[Any] = []
        self.gw: Any = None
        self.client: TokenClient | None = None
        self.backend = "auto"
        self.gw_root = ""
        self.renewed_via_api = 0

    # ---- certificates ------------------------------------------------------------------------
    def _issue_gateway(self) -> tuple[str, str]:
        from gateway.ca import write_pair

        return write_pair(os.path.join(self.dir, "gateway"),
                          *self.ca.issue_gateway("scp-demo", ips=["127.0.0.1"], days=1), force=True)

    def _issue(self, name: str, nf_type: str, nf_id: str) -> tuple[str, str]:
        from gateway.ca import write_pair

        return write_pair(os.path.join(self.dir, name),
                          *self.ca.issue(nf_type, nf_id, ips=["127.0.0.1"], days=1), force=True)

    def client_context(self):
        from dataplane.tls import client_context

        return client_context(self.ca.cert_path, *self.consumer_files)

    def secure_nf(self, nf: Any) -> None:
        """Give an emulated NF a certificate of its own and a TLS listener context that
        follows its rotation."""
        from dataplane.tls import ReloadableServerContext, server_context

        files = self._issue(f"nf-{nf.instance_id}", nf.nf_type, nf.instance_id)
        nf.cert_files = files
        nf.tls = ReloadableServerContext(
            lambda: server_context(*files, ca_file=self.ca.cert_path), list(files))
        nf.ssl_context = nf.tls.context
        self.nfs.append(nf)

    # ---- gateway config ----------------------------------------------------------------------
    def config(self, backend: str) -> Any:
        from gateway.config import parse_config

        cert, key = self.gw_files
        return parse_config({
            "gateway": {"name": "scp-demo", "workers": 1, "backend": backend},
            "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "tls",
                           "tls": {"cert": cert, "key": key, "client_ca": self.ca.cert_path,
                                   "require_client_cert": True, "crl_file": self.ca.crl_path,
                                   "reload_interval_s": 0.2}}],
            "registry": {"enabled": True, "store": "memory", "heartbeat_timer_s": 10},
            "upstream_tls": {"ca_file": self.ca.cert_path, "cert": cert, "key": key,
                             "crl_file": self.ca.crl_path, "reload_interval_s": 0.2},
            "oauth2": {"issuer": {"enabled": True, "ca_dir": self.ca.directory},
                       "verify": {"enabled": True, "ca_file": self.ca.cert_path,
                                  "default": "required",
                                  "services": {"nnrf-nfm": "off", "nnrf-disc": "off"}}},
            "mesh_ca": {"dir": self.ca.directory, "csr_api": True},
            "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
            "logging": {"level": "warning", "access_log": False},
            "admin": {"enabled": False},
        })

    def consumer_profile(self) -> dict:
        return {"nfInstanceId": self.consumer_id, "nfType": CONSUMER_TYPE,
                "nfStatus": "REGISTERED", "heartBeatTimer": 10, "ipv4Addresses": ["127.0.0.1"]}

    # ---- rotation ------------------------------------------------------------------------------
    async def renew_via_gateway(self, files: tuple[str, str], client: Any = None) -> None:
        """Renew a certificate through the gateway's CSR API (POST /nfmesh-ca/v1/certificate),
        authenticated by the current one: a new key, its CSR, the answer written over."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        from dataplane.client import H2Client
        from dataplane.tls import client_context
        from gateway.ca import write_pair

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "renewal")]))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        own = client is None
        if own:
            client = H2Client(self.backend, ssl_context=client_context(self.ca.cert_path, *files))
        try:
            r = await client.request("POST", self.gw_root + "/nfmesh-ca/v1/certificate", body=csr,
                                     headers=[("content-type", "application/pkcs10")])
        finally:
            if own:
                await client.close()
        if r.status != 201:
            raise RuntimeError(f"CSR API refused: {r.status} {r.body[:200]!r}")
        write_pair(files[0][: -len(".crt")], r.body, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), force=True)
        self.renewed_via_api += 1

    async def rotate_all(self) -> None:
        """Renew and load every certificate once (and the token signing key): the gateway's
        with the mesh CA offline (``nfmesh ca``), every NF's through the gateway's CSR API."""
        from dataplane.client import H2Client

        self.gw_files = self._issue_gateway()  # same paths: the gateway's watcher reloads
        for nf in self.nfs:
            await self.renew_via_gateway(nf.cert_files)
            nf.tls.reload()
        await self.renew_via_gateway(self.consumer_files,
                                     self.client.client if self.client is not None else None)
        if self.client is not None:
            self.client.switch(H2Client(self.client.backend_name, ssl_context=self.client_context()))
        svc = getattr(self.gw, "registry", None)
        issuer = getattr(svc, "token_issuer", None)
        if issuer is not None:
            issuer.keys.rotate()
        self.rotations += 1

    async def rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rotate_every)
            try:
                await self.rotate_all()
            except Exception:  # noqa: BLE001 - a failed round is logged; the run goes on
                log.exception("certificate rotation failed")

    def summary(self) -> dict:
        gw = self.gw
        issuer = getattr(getattr(gw, "registry", None), "token_issuer", None)
        verifier = getattr(gw, "_token_verifier", None)
        tls = getattr(gw, "tls_watcher", None)
        return {
            "tls": True,
            "tokens_issued": issuer.service.issued if issuer else 0,
            "token_requests_refused": sum(issuer.service.refused.values()) if issuer else 0,
            "token_rejections": verifier[1].rejections if verifier else 0,
            "tokens_verified": verifier[1].verified if verifier else 0,
            "rotations": self.rotations,
            "renewed_via_csr_api": self.renewed_via_api,
            "gateway_tls_reloads": sum(lt.reloads for lt in tls.listeners) if tls else 0,
            "requests_with_token": self.client.with_token if self.client else 0,
        }

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class TokenClient:
    """An ``H2Client`` stand-in that puts the consumer's access token on every SBI request
    (one token per target NF type and service, fetched from the NRF's /oauth2/token), and
    that can move to a new client (new certificate) without failing a request in flight."""

    def __init__(self, client: Any, backend_name: str, gw_root: str, consumer_id: str) -> None:
        self.client = client
        self.backend_name = backend_name
        self.gw_root = gw_root
        self.consumer_id = consumer_id
        self.tokens: dict[tuple[str, str], str] = {}
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self._old: list[Any] = []
        self.with_token = 0
        self.token_errors = 0

    def switch(self, client: Any) -> None:
        old, self.client = self.client, client
        self._old.append(old)
        asyncio.get_running_loop().call_later(6.0, self._retire, old)  # > request timeout

    def _retire(self, old: Any) -> None:
        if old in self._old:
            self._old.remove(old)
            old.close()

    async def _token(self, nf_type: str, service: str) -> str:
        key = (nf_type, service)
        tok = self.tokens.get(key)
        if tok is not None:
            return tok
        fut = self._pending.get(key)
        if fut is not None:
            return await fut
        fut = self._pending[key] = asyncio.get_running_loop().create_future()
        try:
            form = urlencode({"grant_type": "client_credentials", "nfInstanceId": self.consumer_id,
                              "nfType": CONSUMER_TYPE, "targetNfType": nf_type, "scope": service})
            r = await self.client.request(
                "POST", self.gw_root + "/oauth2/token", body=form.encode(),
                headers=[("content-type", "application/x-www-form-urlencoded"),
                         ("user-agent", f"{CONSUMER_TYPE}-demo-1")])
            if r.status != 200:
                self.token_errors += 1
                raise RuntimeError(f"token request refused: {r.status} {r.body[:200]!r}")
            tok = json.loads(r.body)["access_token"]
            self.tokens[key] = tok
            fut.set_result(tok)
            return tok
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: the caller gets it raised
            raise
        finally:
            self._pending.pop(key, None)

    async def request(self, method: str, url: str, headers: list | None = None, **kw: Any) -> Any:
        from nf_adapters.authz import service_of
        from nf_adapters.bearer import nf_type_of_service

        path = url.split("://", 1)[-1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        service = service_of(path.encode())
        nf_type = nf_type_of_service(service)
        headers = list(headers or [])
        if service and nf_type and not service.startswith("nnrf-"):
            token = await self._token(nf_type, service)
            headers.append(("authorization", f"Bearer {token}"))
            self.with_token += 1
        return await self.client.request(method, url, headers=headers, **kw)

    async def close(self) -> None:
        for old in self._old:
            old.close()
        self._old.clear()
        await self.client.close()
