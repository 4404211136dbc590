"""How much a registry change costs to reach the workers: the snapshot channel, measured.

For N registered profiles (default 1,000, shaped like the demo's NFProfiles), it measures
encoding one frame (control plane, once per change), decoding it and compiling the worker's
model D router (each worker, once per change), and the end-to-end time from a registry change
to a worker applying it over the real Unix socket.

    nfmesh perf snapshot [--profiles N] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid


def _profiles(n: int) -> list[tuple[dict, str]]:
    out = []
    for i in range(n):
        nf_type = ("UDM", "AUSF", "SMF", "PCF")[i % 4]
        nf_id = str(uuid.UUID(int=i + 1))
        out.append(({
            "nfInstanceId": nf_id, "nfType": nf_type, "nfStatus": "REGISTERED",
            "ipv4Addresses": [f"10.0.{i // 250}.{i % 250 + 1}"], "priority": i % 3, "capacity": 100,
            "sNssais": [{"sst": 1, "sd": "000001"}],
            "nfServices": [{
                "serviceInstanceId": f"svc-{i}", "serviceName": {"UDM": "nudm-sdm", "AUSF": "nausf-auth",
                                                                  "SMF": "nsmf-pdusession", "PCF": "npcf-smpolicycontrol"}[nf_type],
                "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}], "scheme": "http",
                "nfServiceStatus": "REGISTERED",
                "ipEndPoints": [{"ipv4Address": f"10.0.{i // 250}.{i % 250 + 1}", "port": 8080}],
            }],
        }, "REGISTERED"))
    return out


async def _end_to_end(instances: list[tuple[dict, str]], rounds: int) -> list[float]:
    from gateway.snapshot_channel import SnapshotPublisher, SnapshotSubscriber

    path = os.path.join(tempfile.mkdtemp(prefix="nfmesh-snap-"), "s.sock")
    state = {"v": 0}
    pub = SnapshotPublisher(path, lambda: (state["v"], instances), min_interval_s=0.0)
    await pub.start()
    arrived: dict[int, float] = {}
    sub = SnapshotSubscriber(path, lambda v, i: arrived.__setitem__(v, time.perf_counter()))
    sub.start()
    await sub.first
    lat = []
    for r in range(1, rounds + 1):
        state["v"] = r
        t0 = time.perf_counter()
        pub.changed()
        while r not in arrived:
            await asyncio.sleep(0.0005)
        lat.append(arrived[r] - t0)
    await sub.close()
    await pub.close()
    return lat


def main(argv: list[str] | None = None) -> int:
    from gateway.snapshot_channel import decode_payload, encode_frame
    from nf_adapters.model_d import ModelDRouter, build_snapshot

    ap = argparse.ArgumentParser(prog="nfmesh perf snapshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    instances = _profiles(a.profiles)
    from gateway.control_plane import ControlPlaneAddress, NrfForwardRouter, WorkerRouting
    from nf_adapters.scp_router import ScpRouter

    enc, dec, cold = [], [], []
    frame = b""
    nrf = NrfForwardRouter(ControlPlaneAddress("unused", "127.0.0.1", 1), ())
    routing = WorkerRouting(ScpRouter(), nrf, lambda router: None)
    for v in range(a.rounds):
        t0 = time.perf_counter()
        frame = encode_frame(v, instances)
        t1 = time.perf_counter()
        version, inst = decode_payload(frame[4:])
        routing.apply(version, inst)  # warm: one profile changed per round, as after a heartbeat
        t2 = time.perf_counter()
        ModelDRouter(build_snapshot(decode_payload(frame[4:])[1], version, {}))
        t3 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        cold.append(t3 - t2)
        instances[v % len(instances)][0]["load"] = v  # the next frame carries one change
    import uvloop

    e2e = uvloop.run(_end_to_end(instances, a.rounds))
    res = {
        "profiles": a.profiles,
        "frame_bytes": len(frame),
        "encode_ms": round(statistics.median(enc) * 1e3, 3),
        "worker_apply_ms": round(statistics.median(dec[1:] or dec) * 1e3, 3),
        "worker_cold_compile_ms": round(statistics.median(cold) * 1e3, 3),
        "change_to_worker_ms_p50": round(statistics.median(e2e) * 1e3, 3),
        "change_to_worker_ms_max": round(max(e2e) * 1e3, 3),
    }
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
