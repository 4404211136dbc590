"""Registry benchmark: registrations/s, heartbeats/s and discovery queries/s of the NRF API,
plus model D route decisions/s, with 1,000 registered profiles, on the memory and etcd stores.

The API is driven in-process through ``NrfApi.handle`` with prebuilt ``Request`` objects, so the
numbers are the control plane's own cost (JSON decode, validation, JSON Patch, store write,
discovery matching and encoding), without the HTTP/2 engine.  The process is pinned to one core
(``--cpu``); for etcd the store calls run ``--concurrency`` at a time, and etcd itself (started
here in a temp dir on loopback unless ``--etcd-endpoint`` names one) runs on the other cores.

    python -m perf.registry_bench [--profiles 1000] [--ops 3000] [--stores memory,etcd] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from dataplane.routing import Request
from gateway.nrf_api import NrfApi
from gateway.registry.memory_store import MemoryStore
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from gateway.registry.store import RegistryStore
from nf_adapters.model_d import ModelDRouter, build_snapshot

NF_TYPES = ["UDM", "AMF", "SMF", "AUSF", "PCF", "UDR", "NSSF", "BSF", "CHF", "NEF"]
SERVICES = {"UDM": ("nudm-sdm", "nudm-uecm", "nudm-ueau"), "AMF": ("namf-comm",),
            "SMF": ("nsmf-pdusession",), "AUSF": ("nausf-auth",), "PCF": ("npcf-smpolicycontrol",),
            "UDR": ("nudr-dr",), "NSSF": ("nnssf-nsselection",), "BSF": ("nbsf-management",),
            "CHF": ("nchf-convergedcharging",), "NEF": ("nnef-pfdmanagement",)}


def make_profile(i: int) -> dict:
    """A realistic NFProfile: type by index, 1-3 services, a slice, priority and capacity."""
    nf_type = NF_TYPES[i % len(NF_TYPES)]
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    services = {}
    for j, name in enumerate(SERVICES[nf_type]):
        sid = f"{name}-{j}"
        services[sid] = {
            "serviceInstanceId": sid, "serviceName": name,
            "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.2.0"}],
            "scheme": "http", "nfServiceStatus": "REGISTERED",
            "ipEndPoints": [{"ipv4Address": ip, "transport": "TCP", "port": 8080}],
            "allowedNfTypes": ["AMF", "SMF", "AUSF", "PCF", "NEF"],
        }
    return {
        "nfInstanceId": str(uuid.UUID(int=i + 1)), "nfType": nf_type, "nfStatus": "REGISTERED",
        "plmnList": [{"mcc": "001", "mnc": "01"}], "sNssais": [{"sst": 1 + (i // len(NF_TYPES)) % 2, "sd": "000001"}],
        "ipv4Addresses": [ip], "priority": i % 3, "capacity": 100 + i % 7, "load": i % 50,
        "nfServiceList": services,
    }


def _req(method: str, path: str, body: bytes = b"", ctype: str | None = None) -> Request:
    h = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"nrf:8000"),
         (b":path", path.encode())]
    if ctype:
        h.append((b"content-type", ctype.encode()))
    return Request(method, path, h, body)


class EtcdServer:
    """Debian's etcd on free loopback ports in a temp dir (stopped by ``stop``)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="nfmesh-bench-etcd-")
        self.ports = [self._free() for _ in range(2)]
        self.endpoint = f"127.0.0.1:{self.ports[0]}"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def _free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start(self) -> None:
        exe = shutil.which("etcd")
        if exe is None:
            raise RuntimeError("etcd not installed (Debian package etcd-server)")
        c, p = (f"http://127.0.0.1:{x}" for x in self.ports)
        self.proc = subprocess.Popen(
            [exe, "--name", "b", "--data-dir", os.path.join(self.dir, "d"), "--listen-client-urls", c,
             "--advertise-client-urls", c, "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", f"b={p}", "--log-level", "error", "--logger", "zap"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{c}/health", timeout=0.5).read()
                return
            except Exception:  # noqa: BLE001
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("etcd did not start within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


async def _run_all(calls, concurrency: int) -> tuple[float, float, list[int]]:
    """Run the coroutine factories ``concurrency`` at a time; (wall s, cpu s, statuses)."""
    statuses: list[int] = []
    it = iter(calls)

    async def worker() -> None:
        for make in it:
            r = await make()
            statuses.append(r.status)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return time.perf_counter() - t0, time.process_time() - c0, statuses


async def bench_store(name: str, store: RegistryStore, n_profiles: int, n_ops: int,
                      concurrency: int) -> dict:
    settings = RegistrySettings(heartbeat_timer_s=120, heartbeat_grace_s=60, sweep_interval_s=5)
    reg = Registry(settings, store)
    await reg.start()
    api = NrfApi(reg)
    out: dict = {"store": name, "profiles": n_profiles}
    try:
        profiles = [make_profile(i) for i in range(n_profiles)]
        puts = [_req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode(),
                     "application/json") for p in profiles]
        wall, cpu, st = await _run_all([lambda r=r: api.handle(r) for r in puts], concurrency)
        assert all(s == 201 for s in st), set(st)
        out["registrations_per_s"] = round(n_profiles / wall)
        out["registration_cpu_us"] = round(cpu / n_profiles * 1e6, 1)
        if store.tracks_liveness:
            await asyncio.sleep(1.0)  # let a replicated store's watch echo of the writes drain

        hb_body = json.dumps([{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]).encode()
        hbs = [_req("PATCH", f"/nnrf-nfm/v1/nf-instances/{profiles[i % n_profiles]['nfInstanceId']}",
                    hb_body, "application/json-patch+json") for i in range(n_ops)]
        wall, cpu, st = await _run_all([lambda r=r: api.handle(r) for r in hbs], concurrency)
        assert all(s == 204 for s in st), set(st)
        out["heartbeats_per_s"] = round(n_ops / wall)
        out["heartbeat_cpu_us"] = round(cpu / n_ops * 1e6, 1)

        queries = [
            "target-nf-type=UDM&requester-nf-type=AMF&service-names=nudm-sdm",
            'target-nf-type=SMF&requester-nf-type=AMF&snssais=[{"sst":2,"sd":"000001"}]',
            "target-nf-type=AUSF&requester-nf-type=AMF&limit=5",
            f"target-nf-type=PCF&requester-nf-type=SMF&target-nf-instance-id={profiles[4]['nfInstanceId']}",
        ]
        dq = [_req("GET", "/nnrf-disc/v1/nf-instances?" + queries[i % len(queries)]) for i in range(n_ops)]
        matched = []
        for q in queries:
            r = await api.handle(_req("GET", "/nnrf-disc/v1/nf-instances?" + q))
            matched.append(len(json.loads(r.body)["nfInstances"]))
        wall, cpu, st = await _run_all([lambda r=r: api.handle(r) for r in dq], 1)
        assert all(s == 200 for s in st), set(st)
        out["discovery_queries_per_s"] = round(n_ops / wall)
        out["discovery_cpu_us"] = round(cpu / n_ops * 1e6, 1)
        out["discovery_matches_per_query"] = matched
        # the same queries, each made unique (a requester FQDN), so that every one misses the
        # SearchResult cache: the cost of matching and encoding
        dq = [_req("GET", "/nnrf-disc/v1/nf-instances?" + queries[i % len(queries)]
                   + f"&requester-nf-instance-fqdn=amf{i}.example.org") for i in range(n_ops)]
        wall, cpu, st = await _run_all([lambda r=r: api.handle(r) for r in dq], 1)
        assert all(s == 200 for s in st), set(st)
        out["discovery_uncached_per_s"] = round(n_ops / wall)
        out["discovery_uncached_cpu_us"] = round(cpu / n_ops * 1e6, 1)

        t0 = time.perf_counter()
        snap = build_snapshot(reg.instances(), reg.version)
        out["snapshot_build_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        router = ModelDRouter(snap)
        hdrs = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"scp:8000"),
                (b":path", b"/nudm-sdm/v2/imsi-001010000000001/am-data"), (b"user-agent", b"AMF-bench"),
                (b"3gpp-sbi-discovery-target-nf-type", b"UDM"),
                (b"3gpp-sbi-discovery-snssais", b'[{"sst":1,"sd":"000001"}]')]
        router.route(hdrs, {})
        n_route = n_ops * 10
        t0 = time.perf_counter()
        for _ in range(n_route):
            router.route(hdrs, {})
        out["model_d_routes_per_s"] = round(n_route / (time.perf_counter() - t0))
    finally:
        await reg.close()
    return out


def calibration() -> float:
    """Ops/s of a fixed pure-Python loop on this machine, to compare runs across machines."""
    data = [(b":path", b"/x"), (b"user-agent", b"AMF"), (b"accept", b"*/*")] * 2
    n = 100000
    t0 = time.perf_counter()
    for _ in range(n):
        [(k, v) for k, v in data if not k.startswith(b"3gpp")]
    return n / (time.perf_counter() - t0)


async def _main(args: argparse.Namespace) -> list[dict]:
    results = []
    for name in args.stores.split(","):
        if name == "memory":
            with tempfile.TemporaryDirectory() as d:
                store = MemoryStore(os.path.join(d, "registry.journal"))
                results.append(await bench_store("memory (journal file)", store, args.profiles,
                                                 args.ops, 1))
        elif name == "etcd":
            from gateway.registry.etcd_store import EtcdStore

            server = None
            endpoint = args.etcd_endpoint
            if endpoint is None:
                if shutil.which("etcd") is None:
                    results.append({"store": "etcd", "skipped": "etcd not installed"})
                    continue
                server = EtcdServer()
                server.start()
                endpoint = server.endpoint
            try:
                store = EtcdStore([endpoint], f"/bench/{uuid.uuid4().hex[:8]}", timeout_s=5.0)
                results.append(await bench_store(f"etcd (concurrency {args.concurrency})", store,
                                                 args.profiles, args.ops, args.concurrency))
            finally:
                if server is not None:
                    server.stop()
        else:
            raise SystemExit(f"unknown store {name!r}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", type=int, default=1000)
    ap.add_argument("--ops", type=int, default=3000, help="heartbeats and discovery queries each")
    ap.add_argument("--stores", default="memory,etcd")
    ap.add_argument("--etcd-endpoint", default=None)
    ap.add_argument("--concurrency", type=int, default=32, help="in-flight store calls for etcd")
    ap.add_argument("--cpu", type=int, default=0, help="pin this process to one core (-1: no pinning)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.profiles < 1 or args.ops < 1:
        ap.error("--profiles and --ops must be positive")
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    results = runner(_main(args))
    report = {"calibration_loops_per_s": round(calibration()), "cpu": args.cpu, "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"calibration: {report['calibration_loops_per_s']} loops/s (pure-Python reference loop)")
    for r in results:
        if "skipped" in r:
            print(f"{r['store']}: skipped ({r['skipped']})")
            continue
        print(f"{r['store']}, {r['profiles']} profiles:")
        def per_cpu(us: float) -> int:
            return round(1e6 / us) if us else 0

        print(f"  registrations/s   {r['registrations_per_s']:>9}   ({r['registration_cpu_us']} us CPU each,"
              f" {per_cpu(r['registration_cpu_us'])}/CPU-s)")
        print(f"  heartbeats/s      {r['heartbeats_per_s']:>9}   ({r['heartbeat_cpu_us']} us CPU each,"
              f" {per_cpu(r['heartbeat_cpu_us'])}/CPU-s)")
        print(f"  discovery/s       {r['discovery_queries_per_s']:>9}   ({r['discovery_cpu_us']} us CPU each,"
              f" {per_cpu(r['discovery_cpu_us'])}/CPU-s; cached answers;"
              f" matches per query {r['discovery_matches_per_query']})")
        print(f"  discovery/s       {r['discovery_uncached_per_s']:>9}   ({r['discovery_uncached_cpu_us']} us CPU"
              f" each, {per_cpu(r['discovery_uncached_cpu_us'])}/CPU-s; every query a cache miss)")
        print(f"  model D routes/s  {r['model_d_routes_per_s']:>9}   (snapshot build {r['snapshot_build_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
