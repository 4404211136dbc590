"""``nfmesh perf ngap [--json]``: the N2 benchmark of issue 17, for kernel SCTP (the VM).

Two parts in one run:

1. **proxy vs direct**: emulated gNBs with N UEs each at a given attach rate, first straight
   to an emulated AMF, then through the N2 proxy (two AMFs), in this process
   (``perf.ngap_load.run_compare``): messages/s of both, the ratio, the added p50/p99
   registration latency, and the extra CPU per proxied message (this process's CPU time of
   the proxied run less the direct run's, over the messages the proxy routed);
2. **replica failure**: etcd, two emulated AMFs and two proxy replicas as separate processes
   (``python -m gateway.n2_replica``), the gNBs establish their UEs through replica A, A is
   killed with SIGKILL, the gNBs reconnect to replica B and every UE sends its next uplink:
   UEs lost (those whose registration does not complete), replica A's CPU per established UE
   against a third replica without replication (the cost of replication per
   InitialUEMessage, as a ratio), and the etcd writes per UE.  Skipped (with the reason) when etcd is not installed.

Under the VM's emulated CPU absolute figures mean little: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from dataplane.sctp import sctp_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


class Etcd:
    """A throw-away single-member etcd (Debian's etcd-server) on free loopback ports."""

    def __init__(self, tmp: str) -> None:
        self.port, peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [shutil.which("etcd") or "etcd", "--name", "t", "--data-dir", f"{tmp}/etcd",
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"t=http://127.0.0.1:{peer}", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def healthy(self) -> bool:
        try:
            return b"true" in urllib.request.urlopen(f"{self.url}/health", timeout=1).read()
        except OSError:
            return False

    def count(self, prefix: str) -> int:
        """Keys under ``prefix`` (through etcd's JSON gateway: no gRPC in this process)."""
        body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(prefix[:-1].encode() + b"0").decode(),
                           "count_only": True}).encode()
        req = urllib.request.Request(f"{self.url}/v3/kv/range", body,
                                     {"Content-Type": "application/json"})
        return int(json.loads(urllib.request.urlopen(req, timeout=5).read()).get("count", 0))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


async def _establish_cpu(pid: int, port: int, gnbs: int, ues: int, timeout: float) -> float:
    """CPU ms of process ``pid`` per UE established through it (InitialUEMessage in, first
    downlink out), gNBs numbered apart from the main run's."""
    from perf.gnb_emulator import GnbClient, GnbLogic

    logic = [GnbLogic(100 + g, hold=True) for g in range(gnbs)]
    clients = [GnbClient(lg) for lg in logic]
    try:
        for cl in clients:
            await cl.connect(["127.0.0.1"], port)
        cpu0 = _cpu_s(pid)
        for cl in clients:
            for i in range(1, ues + 1):
                cl.start_ue(i)
        await _until(lambda: sum(len(lg.amf_ids_seen) for lg in logic) == gnbs * ues, timeout)
        return round((_cpu_s(pid) - cpu0) * 1e3 / max(1, gnbs * ues), 3)
    finally:
        for cl in clients:
            cl.close()


async def run_replica_failure(gnbs: int, ues: int, timeout: float) -> dict:
    """Part 2 of the module doc; returns its report."""
    from perf.amf_emulator import AmfLogic, AmfServer
    from perf.gnb_emulator import GnbClient, GnbLogic

    if shutil.which("etcd") is None:
        return {"skipped": "etcd not installed (Debian package etcd-server)"}
    tmp = tempfile.mkdtemp(prefix="nfmesh-n2rep-")
    etcd = Etcd(tmp)
    logics = [AmfLogic(f"amf{i}", pointer=i, id_base=i * 1_000_000, record=False)
              for i in (1, 2)]
    amfs = [AmfServer(lg) for lg in logics]
    procs: list[subprocess.Popen] = []
    clients: list[GnbClient] = []
    report: dict = {"gnbs": gnbs, "ues_per_gnb": ues}
    try:
        for a in amfs:
            await a.start(["127.0.0.1"], 0)
        if not await _until(etcd.healthy, 60):
            return {"skipped": "etcd did not start"}
        files = []
        for n in (1, 2, 3):  # 3: the same proxy without replication (the baseline)
            f = f"{tmp}/replica{n}.port"
            cmd = [sys.executable, "-m", "gateway.n2_replica", "--replica", str(n),
                   "--port-file", f]
            if n != 3:
                cmd += ["--etcd", f"127.0.0.1:{etcd.port}", "--prefix", "/perf"]
            for a in amfs:
                cmd += ["--amf", f"127.0.0.1:{a.port}"]
            procs.append(subprocess.Popen(cmd, cwd=ROOT))
            files.append(f)
        if not await _until(lambda: all(os.path.exists(f) for f in files), 120):
            return {"skipped": "the replicas did not start"}
        ports = [int(open(f).read()) for f in files]  # noqa: SIM115
        report["baseline_cpu_ms_per_established_ue"] = await _establish_cpu(
            procs[2].pid, ports[2], gnbs, ues, timeout)
        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait(10)
        logic = [GnbLogic(g + 1, hold=True) for g in range(gnbs)]
        clients = [GnbClient(lg) for lg in logic]
        for cl in clients:
            await cl.connect(["127.0.0.1"], ports[0])
        cpu0 = _cpu_s(procs[0].pid)
        t0 = time.perf_counter()
        for cl in clients:
            for i in range(1, ues + 1):
                cl.start_ue(i)
        total = gnbs * ues
        established = await _until(
            lambda: sum(len(lg.amf_ids_seen) for lg in logic) == total, timeout)
        report["establish_seconds"] = round(time.perf_counter() - t0, 3)
        await _until(lambda: etcd.count("/perf/ue/") >= total, 30)
        # CPU up to the records being in etcd: the batched writes are counted too
        report["replica_cpu_ms_per_established_ue"] = round(
            (_cpu_s(procs[0].pid) - cpu0) * 1e3 / max(1, total), 3)
        if report["baseline_cpu_ms_per_established_ue"]:
            report["replication_cpu_ratio"] = round(
                report["replica_cpu_ms_per_established_ue"]
                / report["baseline_cpu_ms_per_established_ue"], 3)
        report["records_in_etcd_before_kill"] = etcd.count("/perf/ue/")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        await _until(lambda: all(cl.closed is not None and cl.closed.done() for cl in clients),
                     30)
        t1 = time.perf_counter()
        for cl in clients:
            await cl.connect(["127.0.0.1"], ports[1], timeout=30)
        report["reconnect_seconds"] = round(time.perf_counter() - t1, 3)
        for lg, cl in zip(logic, clients, strict=True):
            lg.hold = False
            for i in range(1, ues + 1):
                cl._send(*lg.resume_ue(i))
        for cl in clients:
            await cl.wait_finished(ues, timeout)
        completed = sum(lg.completed for lg in logic)
        report.update({
            "ues_established": sum(len(lg.amf_ids_seen) for lg in logic),
            "all_established_before_kill": established,
            "ues_completed_after_kill": completed, "ues_lost": total - completed,
            "violations": sum(len(lg.violations) for lg in logic),
            "etcd_writes_per_ue": 2,  # one put when established, one delete when released
        })
        await _until(lambda: etcd.count("/perf/ue/") == 0, 30)
        report["records_left_in_etcd"] = etcd.count("/perf/ue/")
        return report
    finally:
        for cl in clients:
            cl.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        for a in amfs:
            a.stop()
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def run_all(gnbs: int, ues: int, rate: float, timeout: float,
                  replica_ues: int) -> dict:
    from perf.ngap_load import run_direct, run_self

    await run_direct(1, 2, 0.0, timeout)  # warm-up: imports and templates are not counted
    await run_self(1, 2, 0.0, timeout, None)
    c0 = time.process_time()
    direct = await run_direct(gnbs, ues, rate, timeout)
    c1 = time.process_time()
    proxied = await run_self(gnbs, ues, rate, timeout, None)
    c2 = time.process_time()

    def reg(r: dict, p: str) -> float | None:
        return r["latency"].get("registration", {}).get(p)

    out: dict = {
        "proxy": {
            "gnbs": gnbs, "ues_per_gnb": ues, "rate": rate,
            "direct_messages_per_s": direct["messages_per_s"],
            "proxy_messages_per_s": proxied["messages_per_s"],
            "throughput_vs_direct": round(proxied["messages_per_s"] / direct["messages_per_s"], 3)
            if direct["messages_per_s"] else None,
            "direct_registration_p50_ms": reg(direct, "p50_ms"),
            "proxy_registration_p50_ms": reg(proxied, "p50_ms"),
            "direct_registration_p99_ms": reg(direct, "p99_ms"),
            "proxy_registration_p99_ms": reg(proxied, "p99_ms"),
            "gateway_messages": proxied.get("gateway_messages"),
            "extra_cpu_us_per_proxied_message": round(
                ((c2 - c1) - (c1 - c0)) * 1e6 / max(1, proxied.get("gateway_messages") or 1), 1),
            "ues_completed": proxied["ues_completed"], "violations":
                proxied["violations"] + direct["violations"],
            "per_amf_completed": proxied.get("per_amf_completed"),
        },
    }
    p = out["proxy"]
    if p["direct_registration_p99_ms"] is not None and p["proxy_registration_p99_ms"] is not None:
        p["added_registration_p99_ms"] = round(
            p["proxy_registration_p99_ms"] - p["direct_registration_p99_ms"], 3)
    out["replica_failure"] = (await run_replica_failure(gnbs, replica_ues, timeout)
                              if replica_ues else {"skipped": "--replica-ues 0"})
    rf = out["replica_failure"]
    out["ok"] = (p["violations"] == 0 and p["ues_completed"] == gnbs * ues
                 and (rf.get("skipped") is not None or rf.get("ues_lost") == 0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nfmesh perf ngap", description=__doc__.split("\n")[0])
    ap.add_argument("--gnbs", type=int, default=2)
    ap.add_argument("--ues", type=int, default=50, help="UEs per gNB (proxy vs direct)")
    ap.add_argument("--rate", type=float, default=0.0, help="UE attaches per second (0: at once)")
    ap.add_argument("--replica-ues", type=int, default=100,
                    help="UEs per gNB in the replica-failure part (0: skip it)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ok, reason = sctp_available()
    if not ok:
        print(json.dumps({"available": False, "reason": reason}) if args.json else reason)
        return 2
    report = asyncio.run(run_all(args.gnbs, args.ues, args.rate, args.timeout,
                                 args.replica_ues))
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
