"""The admin API (gateway/admin.py): every path on a running gateway, in-process and as
`nfmesh run --workers 2` (the supervisor fans out to the workers' Unix sockets)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from dataplane.client import H2Client
from gateway.admin import merge_clusters, redact
from gateway.app import Gateway
from gateway.config import parse_config
from tests.conftest import free_port, start_origin
from tests.waiting import wait_until_blocking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _http(port: int, path: str, method: str = "GET") -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, ctype, body = resp.status, resp.headers["content-type"], resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, body = exc.code, exc.headers["content-type"], exc.read()
    return status, (json.loads(body) if ctype == "application/json" else body)


async def _ahttp(port: int, path: str, method: str = "GET") -> tuple[int, object]:
    return await asyncio.to_thread(_http, port, path, method)


def _cfg(origin_port: int, admin_port: int, **extra) -> dict:
    return {
        "gateway": {"name": "scp-admin", "drain_timeout_s": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0}],
        "clusters": [{"name": "ausf", "endpoints": [{"host": "127.0.0.1", "port": origin_port}]}],
        "routes": [{"name": "ausf-auth", "match": {"path_prefix": "/nausf-auth/"},
                    "cluster": "ausf"}],
        "admin": {"port": admin_port},
        "registry": {"enabled": True},
        **extra,
    }


def test_redact_hides_secret_keys_and_url_credentials() -> None:
    data = {"etcd": {"endpoints": ["http://user:pw@10.0.0.1:2379", "10.0.0.2:2379"]},
            "client_secret": "s3cr3t", "token": "", "tls": {"key": "/etc/tls.key"}}
    out = redact(data)
    assert out["etcd"]["endpoints"] == ["http://<redacted>@10.0.0.1:2379", "10.0.0.2:2379"]
    assert out["client_secret"] == "<redacted>" and out["token"] == ""
    assert out["tls"]["key"] == "/etc/tls.key"  # a path, not the key


async def test_admin_api_in_process(backend) -> None:
    origin = await start_origin(backend, name="ausf-1")
    admin_port = free_port()
    gw = Gateway(parse_config(_cfg(origin.port, admin_port)), backend=backend.NAME)
    await gw.start()
    try:
        assert gw.admin_port == admin_port
        sbi = gw.ports["sbi"]
        client = H2Client(backend.NAME)
        for _ in range(5):
            r = await client.request("POST", f"http://127.0.0.1:{sbi}/nausf-auth/v1/x",
                                     headers=[("user-agent", "AMF-1")], body=b"{}", timeout=5)
            assert r.status == 200
        # a registration through the NRF API, so /nf-instances has something
        nf_id = "5a7bc8a4-0000-4000-8000-000000000001"
        profile = {"nfInstanceId": nf_id, "nfType": "AUSF", "nfStatus": "REGISTERED",
                   "ipv4Addresses": ["127.0.0.1"],
                   "nfServices": [{"serviceInstanceId": "1", "serviceName": "nausf-auth",
                                   "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}],
                                   "scheme": "http", "nfServiceStatus": "REGISTERED"}]}
        r = await client.request("PUT", f"http://127.0.0.1:{sbi}/nnrf-nfm/v1/nf-instances/{nf_id}",
                                 headers=[("user-agent", "AUSF-1"), ("content-type", "application/json")],
                                 body=json.dumps(profile).encode(), timeout=5)
        assert r.status == 201, r.body
        await client.close()

        assert await _ahttp(admin_port, "/healthz") == (200, {"status": "ok"})
        status, ready = await _ahttp(admin_port, "/readyz")
        assert status == 200 and ready == {"ready": True, "checks": {
            "listeners": True, "registry_store": True, "draining": False}}
        status, st = await _ahttp(admin_port, "/status")
        assert status == 200 and st["name"] == "scp-admin" and st["workers"] == 1
        assert st["listeners"] == {"sbi": sbi} and st["admin_port"] == admin_port
        assert st["requests"] >= 5 and st["nf_instances"] == 1
        status, cfg = await _ahttp(admin_port, "/config")
        assert status == 200 and cfg["config"]["clusters"][0]["name"] == "ausf"
        assert cfg["config"]["admin"] == {"enabled": True, "host": "127.0.0.1", "port": admin_port}
        status, routes = await _ahttp(admin_port, "/routes")
        assert routes == {"model_c": True, "model_d": True, "nrf_api": True, "authz": False,
                          "routes": [{"name": "ausf-auth", "path_prefix": "/nausf-auth/",
                                      "authority": None, "cluster": "ausf", "timeout_s": None}]}
        status, cl = await _ahttp(admin_port, "/clusters")
        assert status == 200
        (ep,) = cl["clusters"][0]["endpoints"]
        assert ep["address"] == f"127.0.0.1:{origin.port}" and ep["health"] == "healthy"
        assert ep["forwarded"] >= 5 and ep["limit"] >= 1 and ep["ejected"] is False
        assert set(ep) >= {"in_flight", "queued", "ejections", "oci_reduction", "overloaded",
                           "shed", "rtt_noload_ms", "weight", "tls"}
        assert cl["overload"]["enabled"] is True and cl["overload"]["gateway_overloaded"] is False
        status, nfs = await _ahttp(admin_port, "/nf-instances")
        assert nfs["count"] == 1 and nfs["by_type"] == {"AUSF": 1}
        assert nfs["instances"][0]["services"] == ["nausf-auth"]
        status, one = await _ahttp(admin_port, f"/nf-instances/{nf_id}")
        assert status == 200 and one["profile"]["nfType"] == "AUSF"
        assert (await _ahttp(admin_port, "/nf-instances/nope"))[0] == 404
        status, text = await _ahttp(admin_port, "/metrics")
        assert status == 200 and b"nfmesh_producer_concurrency_limit" in text
        assert b"nfmesh_registry_nf_instances" in text
        assert (await _ahttp(admin_port, "/nothing"))[0] == 404
        assert (await _ahttp(admin_port, "/drain"))[0] == 405  # GET on a POST path
        # reload without a file: refused with a reason
        status, rl = await _ahttp(admin_port, "/reload", "POST")
        assert status == 409 and rl["reloaded"] is False
        # drain: readiness 503, the listener stops accepting
        status, dr = await _ahttp(admin_port, "/drain", "POST")
        assert status == 200 and dr == {"draining": True}
        status, ready = await _ahttp(admin_port, "/readyz")
        assert status == 503 and ready["checks"]["draining"] is True
    finally:
        await gw.stop(drain=False)
        await origin.stop()


async def test_admin_port_taken_is_not_fatal(backend) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        cfg = parse_config({"listeners": [{"name": "sbi", "port": 0}],
                            "admin": {"port": s.getsockname()[1]}})
        gw = Gateway(cfg, backend=backend.NAME)
        await gw.start()
        assert gw.admin is None and gw.ports["sbi"] > 0
        await gw.stop(drain=False)
    finally:
        s.close()


def test_merge_clusters_sums_workers() -> None:
    ep = {"address": "a:1", "health": "healthy", "limit": 10, "in_flight": 1, "queued": 0,
          "forwarded": 5, "queue_delay_s_sum": 0.0, "dequeued": 0, "ejected": False,
          "ejections": 0, "oci_reduction": 0.0, "overloaded": False, "shed": {"queue": 1}}
    v1 = {"clusters": [{"name": "c", "endpoints": [dict(ep)]}], "producers": [],
          "overload": {"enabled": True, "gateway_overloaded": False, "loop_lag_ms": 1.0,
                       "gateway_shed": 0, "retries_refused": 1}}
    v2 = json.loads(json.dumps(v1))
    v2["clusters"][0]["endpoints"][0].update(health="ejected", ejected=True, ejections=1)
    v2["producers"] = [dict(ep, address="b:2")]
    out = merge_clusters([v1, v2])
    e = out["clusters"][0]["endpoints"][0]
    assert (e["limit"], e["forwarded"], e["health"], e["ejections"], e["shed"]) == \
        (20, 10, "ejected", 1, {"queue": 2})
    assert [p["address"] for p in out["producers"]] == ["b:2"]
    assert out["workers"] == 2 and out["overload"]["retries_refused"] == 2


@pytest.mark.slow
def test_admin_api_with_two_workers(tmp_path) -> None:
    port, admin_port, metrics_port = free_port(), free_port(), free_port()
    cfg = {"listeners": [{"name": "sbi", "host": "127.0.0.1", "port": port}],
           "clusters": [{"name": "ausf", "endpoints": [{"host": "127.0.0.1", "port": 1}]}],
           "metrics": {"enabled": True, "port": metrics_port},
           "admin": {"port": admin_port}, "registry": {"enabled": True},
           "gateway": {"drain_timeout_s": 1}}
    path = tmp_path / "gw.yaml"
    path.write_text(json.dumps(cfg))
    log = open(tmp_path / "log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "nfmesh_cli", "run", "-c", str(path),
                             "--workers", "2"], cwd=ROOT, stdout=log, stderr=log)
    try:
        def ready_answer() -> object:
            assert proc.poll() is None, open(tmp_path / "log").read()
            try:
                status, body = _http(admin_port, "/readyz")
            except OSError:  # not listening yet
                return None
            return body if status == 200 else None

        ready = wait_until_blocking(ready_answer, interval=0.2, what="the admin API says ready")
        assert ready["checks"]["workers_ready"] == 2
        _, cl = _http(admin_port, "/clusters")
        assert cl["workers"] == 2 and cl["clusters"][0]["endpoints"][0]["address"] == "127.0.0.1:1"
        _, st = _http(admin_port, "/status")
        assert st["workers"] == 2 and st["workers_answering"] == 2 and st["listeners"] == {"sbi": port}
        assert _http(admin_port, "/routes")[1]["model_d"] is True
        assert _http(admin_port, "/nf-instances")[1]["count"] == 0
        status, rl = _http(admin_port, "/reload", "POST")
        assert status == 200 and rl["reloaded"] is True
        status, dr = _http(admin_port, "/drain", "POST")
        assert status == 200
        assert _http(admin_port, "/readyz")[0] == 503
    finally:
        proc.terminate()
        proc.wait(20)


def test_changes_only_from_loopback() -> None:
    from gateway.admin import _local_peer

    assert _local_peer(("127.0.0.1", 5000)) and _local_peer(("::1", 5000, 0, 0))
    assert _local_peer("") and _local_peer(None)  # a worker's Unix socket
    assert not _local_peer(("10.1.2.3", 5000)) and not _local_peer(("fe80::1%eth0", 1, 0, 2))


async def test_drain_refused_to_a_remote_peer() -> None:
    from gateway.admin import AdminHttp

    calls = []

    async def handler(method: str, path: str):
        calls.append(path)
        return 200, {}

    http = AdminHttp(handler)

    class _Writer:
        def __init__(self, peer):
            self.peer, self.data = peer, b""

        def get_extra_info(self, name):
            return self.peer

        def write(self, b):
            self.data += b

        async def drain(self):
            pass

        def close(self):
            pass

    for peer, want in ((("10.0.0.9", 1), b"403"), (("127.0.0.1", 1), b"200")):
        reader = asyncio.StreamReader()
        reader.feed_data(b"POST /drain HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        reader.feed_eof()
        w = _Writer(peer)
        await http._serve(reader, w)
        assert w.data.split(b" ")[1] == want
    assert calls == ["/drain"]
