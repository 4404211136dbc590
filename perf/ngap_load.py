"""N2 traffic generator: N emulated gNBs x M UEs, registration-like sequences, at a given rate.

Each UE runs InitialUEMessage -> (DownlinkNAS / UplinkNAS) x k -> InitialContextSetup ->
UEContextRelease (see perf/gnb_emulator.py).  UEs start at ``--rate`` per second (0: all at
once) spread over the gNBs.  The report gives messages/s (sent + received by the gNBs), UEs
completed, violations (a message to the wrong UE, stream or PPID), and per-procedure latency
percentiles.  ``--pcap FILE`` writes what the gNBs sent and received as SCTP/NGAP packets.

``--self`` starts two emulated AMFs and the gateway's N2 service in this process first (what
the VM measurement uses); ``--compare`` adds, in the same run, the same load straight from the
gNBs to one emulated AMF without the gateway, and reports ``throughput_vs_direct``; otherwise ``--target``/``--port`` name a running gateway.  Needs
kernel SCTP: on a host without it the report says so and the exit status is 2.

    python -m perf.ngap_load --self --compare --gnbs 2 --ues 50 --rate 0 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from dataplane.sctp import sctp_available


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    v = sorted(values)

    def pct(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))] * 1e3, 3)

    return {"count": len(v), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "max_ms": round(v[-1] * 1e3, 3)}


async def run_load(target: list[str], port: int, gnbs: int, ues: int, rate: float = 0.0,
                   timeout: float = 120.0, pcap: str | None = None,
                   nas_rounds: int = 2) -> dict:
    """Drive the gNBs against a running N2 gateway; returns the report."""
    from perf.gnb_emulator import GnbClient, GnbLogic, PacketLog, write_pcap

    logs = [PacketLog() for _ in range(gnbs)] if pcap else [None] * gnbs
    clients = [GnbClient(GnbLogic(g + 1), logs[g]) for g in range(gnbs)]
    for cl in clients:
        await cl.connect(target, port)
    t0 = time.perf_counter()
    interval = 1.0 / rate if rate > 0 else 0.0
    started = 0
    for i in range(1, ues + 1):
        for cl in clients:
            cl.start_ue(i)
            started += 1
            if interval:
                await asyncio.sleep(interval)
    ok = True
    for cl in clients:
        ok = await cl.wait_finished(ues, max(1.0, timeout - (time.perf_counter() - t0))) and ok
    elapsed = time.perf_counter() - t0
    for cl in clients:
        cl.close()
    latency: dict[str, list[float]] = {}
    for cl in clients:
        for step, vals in cl.logic.latency.items():
            latency.setdefault(step, []).extend(vals)
    messages = sum(cl.logic.messages_in + cl.logic.messages_out for cl in clients)
    report = {
        "ok": ok, "gnbs": gnbs, "ues_per_gnb": ues, "ues_started": started,
        "ues_completed": sum(cl.logic.completed for cl in clients),
        "violations": sum(len(cl.logic.violations) for cl in clients),
        "error_indications": sum(cl.logic.error_indications for cl in clients),
        "messages": messages, "seconds": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed, 1) if elapsed else 0.0,
        "latency": {k: _percentiles(v) for k, v in latency.items()},
    }
    if pcap:
        report["pcap_packets"] = write_pcap(pcap, [lg for lg in logs if lg is not None])
    return report


async def run_direct(gnbs: int, ues: int, rate: float, timeout: float) -> dict:
    """The peer to compare with: the same gNBs straight to one emulated AMF, no gateway."""
    from perf.amf_emulator import AmfLogic, AmfServer

    amf = AmfServer(AmfLogic("amf-direct", record=False))
    await amf.start(["127.0.0.1"], 0)
    try:
        return await run_load(["127.0.0.1"], amf.port, gnbs, ues, rate, timeout)
    finally:
        amf.stop()


async def run_compare(gnbs: int, ues: int, rate: float, timeout: float,
                      pcap: str | None) -> dict:
    """Direct gNB->AMF first, then through the gateway, in the same run: the ratio is the
    figure (both share the machine's CPU the same way)."""
    direct = await run_direct(gnbs, ues, rate, timeout)
    report = await run_self(gnbs, ues, rate, timeout, pcap)
    report["direct_messages_per_s"] = direct["messages_per_s"]
    report["direct_registration_p50_ms"] = direct["latency"].get("registration", {}).get("p50_ms")
    if direct["messages_per_s"]:
        report["throughput_vs_direct"] = round(
            report["messages_per_s"] / direct["messages_per_s"], 3)
    report["ok"] = report["ok"] and direct["ok"]
    report["violations"] += direct["violations"]
    return report


async def run_self(gnbs: int, ues: int, rate: float, timeout: float, pcap: str | None) -> dict:
    """Two emulated AMFs + the gateway in this process, then ``run_load`` through it."""
    from gateway.n2 import AmfEndpointSettings, AmfPoolSettings, N2Service, N2Settings
    from perf.amf_emulator import AmfLogic, AmfServer

    amfs = [AmfServer(AmfLogic(f"amf{i}", pointer=i, record=False)) for i in (1, 2)]
    for a in amfs:
        await a.start(["127.0.0.1"], 0)
    service = await N2Service(N2Settings(port=0, amf_pools=(AmfPoolSettings("load", tuple(
        AmfEndpointSettings(("127.0.0.1",), a.port) for a in amfs)),))).start()
    try:
        for _ in range(200):
            if sum(a.state == "up" for a in service.router.amfs) == 2:
                break
            await asyncio.sleep(0.05)
        report = await run_load(["127.0.0.1"], service.port, gnbs, ues, rate, timeout, pcap)
        for _ in range(100):  # the last Release Completes may still be on their way
            if sum(a.logic.completed for a in amfs) >= report["ues_completed"]:
                break
            await asyncio.sleep(0.05)
        stats = service.router.stats
        report["gateway_messages"] = stats["messages_from_gnb"] + stats["messages_from_amf"]
        report["gateway_messages_per_s"] = round(report["gateway_messages"] / report["seconds"], 1)
        report["gateway_errors"] = stats["decode_errors"] + stats["unknown_ue"]
        report["per_amf_completed"] = [a.logic.completed for a in amfs]
    finally:
        await service.close()
        for a in amfs:
            a.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nfmesh perf ngap-load", description=__doc__.split("\n")[0])
    ap.add_argument("--self", dest="self_contained", action="store_true",
                    help="start two emulated AMFs and the N2 gateway in this process")
    ap.add_argument("--compare", action="store_true",
                    help="with --self: first the same load straight to an emulated AMF "
                         "(no gateway), and report the ratio")
    ap.add_argument("--target", action="append", default=None, help="gateway address(es)")
    ap.add_argument("--port", type=int, default=38412)
    ap.add_argument("--gnbs", type=int, default=2)
    ap.add_argument("--ues", type=int, default=50, help="UEs per gNB")
    ap.add_argument("--rate", type=float, default=0.0, help="UE starts per second (0: at once)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--pcap", default=None, help="write sent/received NGAP as a pcap file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ok, reason = sctp_available()
    if not ok:
        print(json.dumps({"available": False, "reason": reason}) if args.json else reason)
        return 2
    if args.self_contained and args.compare:
        coro = run_compare(args.gnbs, args.ues, args.rate, args.timeout, args.pcap)
    elif args.self_contained:
        coro = run_self(args.gnbs, args.ues, args.rate, args.timeout, args.pcap)
    else:
        coro = run_load(args.target or ["127.0.0.1"], args.port, args.gnbs, args.ues, args.rate,
                        args.timeout, args.pcap)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # asyncio's own loop works too
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        report = runner.run(coro)
    report["loop"] = "uvloop" if factory else "asyncio"
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0 if report["ok"] and not report["violations"] else 1


if __name__ == "__main__":
    sys.exit(main())
