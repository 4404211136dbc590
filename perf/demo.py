"""``nfmesh demo``: a whole demo mesh in one process, driven with real SBI (and N2) traffic.

What runs (all on 127.0.0.1, real HTTP/2 on the project's engine):

* the gateway (SCP + NRF-compatible registry, metrics endpoint);
* emulated producers: one AUSF, two UDMs, one SMF (``perf.emulated_nf``), which register
  their NFProfiles through the gateway's NRF API and keep heartbeating;
* an emulated AMF as consumer, sending a registration-like mix through the gateway: model D
  (``3gpp-Sbi-Discovery-*``: the gateway picks the producer from the registry) for UE
  authentication, subscription data and PDU session creation, and model C
  (``3gpp-Sbi-Target-apiRoot``, after an NRF discovery) for the UDM registration;
* on N2, where the kernel has SCTP, emulated gNBs and AMFs through the gateway's NGAP proxy.

A live view shows requests/s, latency and errors per NF pair; ``--json`` prints one final
summary object.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from perf.emulated_nf import EmulatedNF


@dataclass
class PairStats:
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))

    def record(self, latency_us: int, ok: bool, err: str = "") -> None:
        self.requests += 1
        self.hist.record_value(max(1, min(latency_us, 60_000_000)))
        if not ok:
            self.errors += 1
            self.last_error = err


@dataclass
class Operation:
    pair: str  # "AMF->AUSF"
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    expect: tuple[int, ...]


def _supi(i: int) -> str:
    return f"imsi-00101{i:010d}"


def _operations(ue: int, udm_root: str) -> list[Operation]:
    supi = _supi(ue)
    ua = [("user-agent", "AMF-demo-1")]
    disc = lambda nf, svc: [  # noqa: E731
        ("3gpp-sbi-discovery-target-nf-type", nf),
        ("3gpp-sbi-discovery-requester-nf-type", "AMF"),
        ("3gpp-sbi-discovery-service-names", svc),
    ]
    js = [("content-type", "application/json")]
    return [
        Operation("AMF->AUSF", "POST", "/nausf-auth/v1/ue-authentications",
                  ua + js + disc("AUSF", "nausf-auth"),
                  json.dumps({"supiOrSuci": supi, "servingNetworkName": "5G:mnc001.mcc001.3gppnetwork.org"}).encode(),
                  (201,)),
        Operation("AMF->UDM", "GET", f"/nudm-sdm/v2/{supi}/am-data",
                  ua + disc("UDM", "nudm-sdm"), b"", (200,)),
        Operation("AMF->UDM", "PUT", f"/nudm-uecm/v1/{supi}/registrations/amf-3gpp-access",
                  ua + js + [("3gpp-sbi-target-apiroot", udm_root)],
                  json.dumps({"amfInstanceId": "3f1c7c6e-0000-4000-8000-00000000a001",
                              "deregCallbackUri": "http://127.0.0.1/amf-cb", "guami": {
                                  "plmnId": {"mcc": "001", "mnc": "01"}, "amfId": "cafe00"},
                              "ratType": "NR"}).encode(),
                  (201,)),
        Operation("AMF->SMF", "POST", "/nsmf-pdusession/v1/sm-contexts",
                  ua + js + disc("SMF", "nsmf-pdusession"),
                  json.dumps({"supi": supi, "pduSessionId": 5, "dnn": "internet",
                              "sNssai": {"sst": 1, "sd": "000001"}, "servingNfId": "amf-1",
                              "anType": "3GPP_ACCESS"}).encode(),
                  (201,)),
    ]


class LiveView:
    """A table once a second: on a terminal updated in place by the component of
    ``nfmesh top`` (``gateway.ctl.LiveScreen``), else printed as plain lines."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last: dict[str, int] = {}
        self.lines = 0
        self.screen: Any = None
        if self.tty:
            from gateway.ctl import LiveScreen

            self.screen = LiveScreen(out, screen=False)
            self.screen.__enter__()

    def close(self) -> None:
        if self.screen is not None:
            self.screen.__exit__(None, None, None)
            self.screen = None

    def show(self, elapsed: float, pairs: dict[str, PairStats], extra: str) -> None:
        if self.screen is not None:
            from rich.console import Group
            from rich.text import Text

            from gateway.ctl import make_table

            rows = []
            for name, st in sorted(pairs.items()):
                rps = st.requests - self.last.get(name, 0)
                self.last[name] = st.requests
                rows.append([name, rps, st.requests, st.errors,
                             f"{st.hist.get_value_at_percentile(50) / 1000:.2f}",
                             f"{st.hist.get_value_at_percentile(99) / 1000:.2f}"])
            cols = ["pair", "req/s", "total", "errors", "p50 ms", "p99 ms"]
            self.screen.show(Group(Text(f"nfmesh demo  t={elapsed:5.1f}s   {extra}"),
                                   make_table(None, cols, rows, tuple(cols[1:]))))
            return
        rows = [f"nfmesh demo  t={elapsed:5.1f}s   {extra}",
                f"{'pair':<12}{'req/s':>8}{'total':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"]
        for name, st in sorted(pairs.items()):
            rps = st.requests - self.last.get(name, 0)
            self.last[name] = st.requests
            rows.append(f"{name:<12}{rps:>8}{st.requests:>9}{st.errors:>8}"
                        f"{st.hist.get_value_at_percentile(50) / 1000:>9.2f}"
                        f"{st.hist.get_value_at_percentile(99) / 1000:>9.2f}")
        if self.tty and self.lines:
            self.out.write(f"\x1b[{self.lines}F\x1b[J")
        self.out.write("\n".join(rows) + "\n")
        self.out.flush()
        self.lines = len(rows)


async def _register(client: Any, gw_root: str, nf: EmulatedNF) -> None:
    profile = nf.profile()
    resp = await client.request(
        "PUT", f"{gw_root}/nnrf-nfm/v1/nf-instances/{nf.instance_id}",
        headers=[("content-type", "application/json"), ("user-agent", f"{nf.nf_type}-demo")],
        body=json.dumps(profile).encode(),
    )
    if resp.status not in (200, 201):
        raise RuntimeError(f"{nf.nf_type} registration failed: {resp.status} {resp.body[:200]!r}")


async def _snapshot_caught_up(gw: Any, limit_s: float = 2.0) -> None:
    """Wait until model D routes from a snapshot that holds every registration so far (the
    control plane coalesces registry changes into one rebuild per 50 ms)."""
    svc = gw.registry
    publisher = getattr(svc, "publisher", None)
    if publisher is None:
        return
    deadline = time.perf_counter() + limit_s
    while publisher.snapshot.version < svc.registry.version and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


async def _heartbeats(client: Any, gw_root: str, nfs: list[EmulatedNF], period: float,
                      counts: dict[str, int]) -> None:
    patch = json.dumps([{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]).encode()
    while True:
        await asyncio.sleep(period)
        for nf in nfs:
            try:
                r = await client.request(
                    "PATCH", f"{gw_root}/nnrf-nfm/v1/nf-instances/{nf.instance_id}",
                    headers=[("content-type", "application/json-patch+json"),
                             ("user-agent", f"{nf.nf_type}-demo")], body=patch)
                key = "heartbeats" if r.status in (200, 204) else "heartbeat_errors"
            except Exception:
                key = "heartbeat_errors"
            counts[key] = counts.get(key, 0) + 1


async def _discover_udm(client: Any, gw_root: str) -> str:
    r = await client.request(
        "GET", f"{gw_root}/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF"
        "&service-names=nudm-uecm", headers=[("user-agent", "AMF-demo-1")])
    if r.status != 200:
        raise RuntimeError(f"NRF discovery of UDM failed: {r.status} {r.body[:200]!r}")
    inst = r.json()["nfInstances"][0]
    svc = next(s for s in inst["nfServices"] if s["serviceName"] == "nudm-uecm")
    ep = svc["ipEndPoints"][0]
    return f"{svc.get('scheme', 'http')}://{ep['ipv4Address']}:{ep['port']}"


async def _consumer(client: Any, gw_root: str, udm_root: str, rate: float, deadline: float,
                    pairs: dict[str, PairStats], stop: asyncio.Event) -> None:
    """Open loop: operations start on schedule, whatever the latency of earlier ones."""
    inflight: set[asyncio.Task] = set()
    interval = 1.0 / rate
    ue = 0
    ops: list[Operation] = []
    start = time.perf_counter()
    n = 0

    async def one(op: Operation, intended: float) -> None:
        st = pairs.setdefault(op.pair, PairStats())
        try:
            r = await client.request(op.method, gw_root + op.path, headers=op.headers, body=op.body, timeout=5.0)
            ok = r.status in op.expect
            err = "" if ok else f"{op.method} {op.path} -> {r.status} {r.body[:160]!r}"
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            ok, err = False, f"{op.method} {op.path}: {type(exc).__name__}: {exc}"
        st.record(int((time.perf_counter() - intended) * 1e6), ok, err)

    while not stop.is_set() and time.perf_counter() < deadline:
        if not ops:
            ue += 1
            ops = _operations(ue, udm_root)
        intended = start + n * interval
        delay = intended - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        task = asyncio.create_task(one(ops.pop(0), intended))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        n += 1
        if len(inflight) > 10_000:  # bounded: a stuck gateway cannot grow this without limit
            await asyncio.sleep(0.01)
    if inflight:
        await asyncio.wait(inflight, timeout=6)


def _demo_config(backend: str) -> Any:
    from gateway.config import parse_config

    return parse_config({
        "gateway": {"name": "scp-demo", "workers": 1, "backend": backend},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "h2c"}],
        "registry": {"enabled": True, "store": "memory", "heartbeat_timer_s": 10},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "logging": {"level": "warning", "access_log": False},
    })


async def _run(duration: float | None, as_json: bool, rate: float, backend: str,
               secure: bool = False, rotate_every: float | None = None) -> dict:
    from dataplane.client import H2Client
    from gateway.app import Gateway

    sec = None
    if secure:  # mTLS on every hop, a token on every request (perf/secure_demo.py)
        from perf.secure_demo import SecureMesh, TokenClient

        sec = SecureMesh(rotate_every)
    gw = Gateway(sec.config(backend) if sec else _demo_config(backend))
    await gw.start()
    gw_root = f"{'https' if sec else 'http'}://127.0.0.1:{gw.ports['sbi']}"
    nfs = [EmulatedNF("AUSF", backend=backend), EmulatedNF("UDM", backend=backend),
           EmulatedNF("UDM", backend=backend), EmulatedNF("SMF", backend=backend)]
    client = H2Client(backend, ssl_context=sec.client_context() if sec else None)
    rotation = None
    if sec:
        sec.gw, sec.backend, sec.gw_root = gw, backend, gw_root
        for nf in nfs:
            sec.secure_nf(nf)
        client = sec.client = TokenClient(client, backend, gw_root, sec.consumer_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pairs: dict[str, PairStats] = {}
    counts: dict[str, int] = {}
    view = LiveView(sys.stderr if as_json else sys.stdout)
    n2_task = None
    started = time.perf_counter()
    hb = None
    try:
        # imported before the traffic phase: its NGAP codec (pycrate) takes seconds to load
        from perf.n2_demo import run_n2_demo
    except ImportError:
        run_n2_demo = None
    try:
        for nf in nfs:
            await nf.start()
            await _register(client, gw_root, nf)
        counts["registered_nfs"] = len(nfs)
        if sec:  # the consumer registers too: the NRF checks a token requester's profile
            r = await client.request(
                "PUT", f"{gw_root}/nnrf-nfm/v1/nf-instances/{sec.consumer_id}",
                headers=[("content-type", "application/json"), ("user-agent", "AMF-demo-1")],
                body=json.dumps(sec.consumer_profile()).encode())
            if r.status not in (200, 201):
                raise RuntimeError(f"consumer registration failed: {r.status} {r.body[:200]!r}")
        await _snapshot_caught_up(gw)
        udm_root = await _discover_udm(client, gw_root)
        hb = asyncio.create_task(_heartbeats(client, gw_root, nfs, 2.0, counts))
        counts["setup_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()  # the traffic phase lasts `duration`
        deadline = started + (duration if duration else 10 * 365 * 86400)
        if run_n2_demo is not None:
            n2_task = asyncio.create_task(run_n2_demo(duration or 3600.0, gnbs=2, ues=20))
        consumer = asyncio.create_task(_consumer(client, gw_root, udm_root, rate, deadline, pairs, stop))
        if sec and sec.rotate_every:
            rotation = asyncio.create_task(sec.rotate_loop())
        while not consumer.done():
            await asyncio.wait({consumer}, timeout=1.0)
            gw_total = gw.stats.total
            view.show(time.perf_counter() - started, pairs,
                      f"gateway {gw_root}  metrics :{gw.metrics_port}  proxied={gw_total}")
        await consumer
    finally:
        stop.set()
        view.close()
        if hb:
            hb.cancel()
        if rotation is not None:
            rotation.cancel()
        n2 = {"available": False, "reason": "N2 demo not built", "ngap_messages": 0, "ngap_errors": 0}
        if n2_task is not None:
            if not n2_task.done():
                n2_task.cancel()
            try:
                n2 = await n2_task
            except asyncio.CancelledError:
                n2 = {"available": False, "reason": "interrupted", "ngap_messages": 0, "ngap_errors": 0}
            except Exception as exc:  # noqa: BLE001 - reported in the summary, never hidden
                n2 = {"available": True, "reason": f"N2 demo failed: {exc}", "ngap_messages": 0, "ngap_errors": 1}
        await client.close()
        producers = {}
        for nf in nfs:
            name = f"{nf.nf_type}-{nf.instance_id[:8]}"
            producers[name] = nf.handler.counters.requests if nf.handler else 0
            await nf.close()
        await gw.stop(drain=True)
    total = HdrHistogram(1, 60_000_000, 3)
    for st in pairs.values():
        total.add(st.hist)
    elapsed = time.perf_counter() - started
    requests = sum(s.requests for s in pairs.values())
    errors = sum(s.errors for s in pairs.values())
    secure_summary = sec.summary() if sec else {}
    if sec:
        sec.cleanup()
    return {
        **secure_summary,
        "requests": requests,
        "errors": errors,
        "p50_ms": round(total.get_value_at_percentile(50) / 1000, 3),
        "p99_ms": round(total.get_value_at_percentile(99) / 1000, 3),
        "duration_s": round(elapsed, 2),
        "rps": round(requests / elapsed, 1) if elapsed else 0.0,
        "pairs": {
            name: {"requests": s.requests, "errors": s.errors,
                   "p50_ms": round(s.hist.get_value_at_percentile(50) / 1000, 3),
                   "p99_ms": round(s.hist.get_value_at_percentile(99) / 1000, 3),
                   **({"last_error": s.last_error} if s.last_error else {})}
            for name, s in sorted(pairs.items())
        },
        "registry": counts,
        # requests each producer served: model D spreads the UDM load over both instances
        "producers": producers,
        "http2_backend": gw.backend.NAME,
        "ngap_available": bool(n2.get("available")),
        "ngap_messages": int(n2.get("ngap_messages", 0)),
        "ngap_errors": int(n2.get("ngap_errors", 0)),
        **({"ngap_note": n2["reason"]} if n2.get("reason") else {}),
    }


def run_demo(duration: float | None, as_json: bool, rate: float = 200.0, backend: str = "auto",
             secure: bool = False, rotate_every: float | None = None) -> int:
    """Entry point of ``nfmesh demo``; returns the exit status (1 when any request failed)."""
    import uvloop

    random.seed(5)
    summary = uvloop.run(_run(duration, as_json, rate, backend, secure, rotate_every))
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"\n{summary['requests']} requests, {summary['errors']} errors, "
              f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms "
              f"({summary['rps']} req/s over {summary['duration_s']} s, backend {summary['http2_backend']})")
        print("producers: " + ", ".join(f"{k} {v}" for k, v in summary["producers"].items()))
        if summary.get("tls"):
            print(f"secure: mTLS on every hop, {summary['tokens_issued']} tokens issued, "
                  f"{summary['requests_with_token']} requests with a token, "
                  f"{summary['token_rejections']} rejected, {summary['rotations']} rotations")
        print(f"N2: {summary['ngap_messages']} NGAP messages, {summary['ngap_errors']} errors"
              + (f" ({summary['ngap_note']})" if summary.get("ngap_note") else ""))
        for name, p in summary["pairs"].items():
            if p.get("last_error"):
                print(f"  {name} last error: {p['last_error']}")
    return 0 if summary["errors"] == 0 and summary["requests"] > 0 else 1
