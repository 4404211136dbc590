"""Emulated gNB for N2 tests and load: NG Setup, then registration-like sequences per UE.

``GnbLogic`` is sans-IO.  Each UE: InitialUEMessage (NAS-PDU = a tag naming gNB and UE) ->
DownlinkNASTransport / UplinkNASTransport x k -> InitialContextSetupRequest/Response ->
UEContextReleaseCommand/Complete.  Every message the gNB receives is checked: PPID 60, the
UE's own stream, a RAN UE NGAP ID it allocated, the same AMF UE NGAP ID throughout, and a
NAS-PDU echoing that UE's tag (so a message delivered to the wrong UE or gNB is caught).
Messages are stamped from templates (``nf_adapters.ngap.templates``: pycrate once, ids by the
fast path), so the emulator costs a few µs per message, not pycrate's ~0.5 ms.
Latency per procedure step is recorded.

``GnbClient`` runs one ``GnbLogic`` over a kernel-SCTP association; ``write_pcap`` writes what
it sent and received as IP/SCTP/NGAP packets (scapy) that Wireshark decodes (PPID 60).

CLI: ``python -m perf.gnb_emulator --target 127.0.0.1 --port 38412 --ues 10 [--pcap f.pcap]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

from dataplane.sctp import SctpAssociation, SctpParams, connect
from nf_adapters.ngap import codec as c
from nf_adapters.ngap import extract
from nf_adapters.ngap.routing_key import (
    AMF_UE_ID,
    NONE,
    PDU_TYPE,
    PROCEDURE_CODE,
    RAN_UE_ID,
)
from nf_adapters.ngap.templates import UeTemplates, find_nas, nas_tag

NGAP_PPID = 60


@dataclass(slots=True)
class GnbUe:
    ran_ue_id: int
    stream: int
    tag: bytes
    amf_ue_id: int = NONE
    sent_at: float = 0.0
    started_at: float = 0.0
    step: str = "initial"
    done: bool = False


@dataclass
class GnbLogic:
    """One emulated gNB with its UEs."""

    gnb_id: int = 1
    plmn: bytes = c.plmn_bytes("001", "01")
    streams: int = 16
    s_tmsi_set_id: int | None = None  # give UEs a 5G-S-TMSI naming this AMF set
    tacs: tuple[int, ...] = (1,)  # the TACs it serves (Supported TA List)
    ssts: tuple[int, ...] = (1,)  # the slices (SSTs) it supports in each TA
    hold: bool = False  # UEs stop after the first downlink: established and idle (tests)
    ues: dict[int, GnbUe] = field(default_factory=dict)
    setup_ok: bool | None = None
    completed: int = 0
    released_by_network: int = 0  # released before Initial Context Setup (AMF failure)
    overload: bool = False
    violations: list[str] = field(default_factory=list)
    error_indications: int = 0
    messages_in: int = 0
    messages_out: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)
    amf_ids_seen: set[int] = field(default_factory=set)
    done: int = 0  # UEs whose context was released (finished)
    config_updates: int = 0  # AMF Configuration Updates received
    pagings: int = 0  # Paging messages received
    resets: list = field(default_factory=list)  # NG Resets received: per-UE list or None
    reset_acks: list = field(default_factory=list)  # NG Reset Acknowledges: list or None

    def __post_init__(self) -> None:
        self.templates = UeTemplates(self.plmn)

    def ng_setup(self) -> tuple[bytes, int]:
        self.messages_out += 1
        return c.ng_setup_request(self.gnb_id, self.plmn, name=f"gnb{self.gnb_id}",
                                  tacs=self.tacs, ssts=self.ssts), 0

    def start_ue(self, ran_ue_id: int, now: float | None = None) -> tuple[bytes, int]:
        now = time.perf_counter() if now is None else now
        stream = 1 + ran_ue_id % (self.streams - 1) if self.streams > 1 else 0
        tag = nas_tag(f"gnb{self.gnb_id}/ue{ran_ue_id}")
        ue = GnbUe(ran_ue_id, stream, tag, sent_at=now, started_at=now)
        self.ues[ran_ue_id] = ue
        self.messages_out += 1
        if self.s_tmsi_set_id is not None:
            s_tmsi = (self.s_tmsi_set_id, 1, (self.gnb_id << 20) | ran_ue_id)
            return c.initial_ue_message(ran_ue_id, tag, self.plmn, s_tmsi=s_tmsi), stream
        return self.templates.initial_ue.stamp(ran_ue_id, -1, tag), stream

    def resume_ue(self, ran_ue_id: int, now: float | None = None) -> tuple[bytes, int]:
        """The next uplink of a UE held after its first downlink (``hold``): an Uplink NAS
        Transport with the ids it knows; the registration then runs to its end."""
        ue = self.ues[ran_ue_id]
        ue.sent_at = time.perf_counter() if now is None else now
        self.messages_out += 1
        return self.templates.uplink_nas.stamp(ran_ue_id, ue.amf_ue_id, ue.tag), ue.stream

    def _lat(self, step: str, ue: GnbUe, now: float) -> None:
        self.latency.setdefault(step, []).append(now - ue.sent_at)
        ue.sent_at = now

    def _violation(self, what: str) -> None:
        if len(self.violations) < 100:
            self.violations.append(what)

    def handle(self, data: bytes, stream: int, ppid: int,
               now: float | None = None) -> list[tuple[bytes, int]]:
        now = time.perf_counter() if now is None else now
        self.messages_in += 1
        if ppid != NGAP_PPID:
            self._violation(f"ppid {ppid}")
        key = extract(data)
        pdu, proc, ran, amf = key[PDU_TYPE], key[PROCEDURE_CODE], key[RAN_UE_ID], key[AMF_UE_ID]
        if proc == c.PROC_NG_SETUP:
            self.setup_ok = pdu == c.SUCCESSFUL
            return []
        if proc == c.PROC_OVERLOAD_START:
            self.overload = True
            return []
        if proc == c.PROC_OVERLOAD_STOP:
            self.overload = False
            return []
        if proc == c.PROC_ERROR_INDICATION:
            self.error_indications += 1
            return []
        if proc == c.PROC_PAGING:
            self.pagings += 1
            return []
        if proc == c.PROC_RAN_CONFIGURATION_UPDATE:
            return []
        if proc == c.PROC_NG_RESET:
            return self._ng_reset(data, pdu)
        if proc == c.PROC_AMF_CONFIGURATION_UPDATE and pdu == c.INITIATING:
            self.config_updates += 1
            self.messages_out += 1
            return [(c.encode(c.SUCCESSFUL, c.PROC_AMF_CONFIGURATION_UPDATE, []), 0)]
        ue = self.ues.get(ran)
        if ue is None or ue.done:
            self._violation(f"message {proc} for unknown RAN UE id {ran}")
            return []
        if stream != ue.stream:
            self._violation(f"UE {ran}: stream {stream}, expected {ue.stream}")
        if ue.amf_ue_id == NONE:
            ue.amf_ue_id = amf
            self.amf_ids_seen.add(amf)
        elif amf != ue.amf_ue_id:
            self._violation(f"UE {ran}: AMF UE id {amf}, expected {ue.amf_ue_id}")
        out: list[tuple[bytes, int]] = []
        t = self.templates
        if pdu == c.INITIATING and proc == c.PROC_DOWNLINK_NAS_TRANSPORT:
            if find_nas(data) != ue.tag:
                self._violation(f"UE {ran}: NAS of another UE")
            self._lat("initial_ue->downlink_nas" if ue.step == "initial"
                      else "uplink_nas->downlink", ue, now)
            ue.step = "nas"
            if not self.hold:
                out.append((t.uplink_nas.stamp(ran, amf, ue.tag), ue.stream))
        elif pdu == c.INITIATING and proc == c.PROC_INITIAL_CONTEXT_SETUP:
            if find_nas(data) != ue.tag:
                self._violation(f"UE {ran}: NAS of another UE")
            self._lat("uplink_nas->initial_context_setup", ue, now)
            ue.step = "ics"
            out.append((t.ics_response.stamp(ran, amf), ue.stream))
        elif pdu == c.INITIATING and proc == c.PROC_UE_CONTEXT_RELEASE:
            if ue.step == "ics":
                self._lat("ics_response->release_command", ue, now)
                self.latency.setdefault("registration", []).append(now - ue.started_at)
                self.completed += 1
            else:
                self.released_by_network += 1
            ue.done = True
            self.done += 1
            out.append((t.release_complete.stamp(ran, amf), ue.stream))
        else:
            self._violation(f"UE {ran}: unexpected procedure {proc}/{pdu}")
        self.messages_out += len(out)
        return out

    def _ng_reset(self, data: bytes, pdu: int) -> list[tuple[bytes, int]]:
        """NG Reset from the network: the listed UEs (all for a whole reset) are gone;
        acknowledged with the list as received.  An acknowledgement is recorded."""
        ies = c.decode(data).ies
        if pdu != c.INITIATING:
            self.reset_acks.append(c.reset_items(ies.get(c.IE_UE_ASSOCIATED_LIST, [])) or None)
            return []
        rtype = ies[c.IE_RESET_TYPE]
        items = c.reset_items(rtype[1]) if rtype[0] == "partOfNG-Interface" else None
        self.resets.append(items)
        for ue in list(self.ues.values()):
            if not ue.done and (items is None or any(
                    ran == ue.ran_ue_id for _amf, ran in items)):
                ue.done = True
                self.done += 1
                self.released_by_network += 1
        self.messages_out += 1
        return [(c.ng_reset_acknowledge(items), 0)]

    def finished(self) -> int:
        return self.done


@dataclass
class PacketLog:
    """What one gNB sent and received, for ``write_pcap``."""

    local: tuple[str, int] = ("127.0.0.1", 0)
    remote: tuple[str, int] = ("127.0.0.1", 38412)
    packets: list[tuple[float, bool, bytes, int, int]] = field(default_factory=list)
    limit: int = 200_000

    def add(self, outbound: bool, data: bytes, stream: int, ppid: int) -> None:
        if len(self.packets) < self.limit:
            self.packets.append((time.time(), outbound, data, stream, ppid))


def write_pcap(path: str, logs: list[PacketLog]) -> int:
    """Write the logged messages as IP/SCTP DATA packets (one chunk each); returns the count."""
    from scapy.layers.inet import IP
    from scapy.layers.sctp import SCTP, SCTPChunkData
    from scapy.utils import wrpcap

    pkts = []
    for log in logs:
        tsn = {True: 1, False: 1}
        for ts, outbound, data, stream, ppid in log.packets:
            (src, sport), (dst, dport) = ((log.local, log.remote) if outbound
                                          else (log.remote, log.local))
            p = (IP(src=src, dst=dst) / SCTP(sport=sport, dport=dport, tag=1)
                 / SCTPChunkData(tsn=tsn[outbound], stream_id=stream, proto_id=ppid,
                                 beginning=1, ending=1, data=data))
            tsn[outbound] += 1
            p.time = ts
            pkts.append(p)
    pkts.sort(key=lambda p: p.time)
    wrpcap(path, pkts)
    return len(pkts)


class GnbClient:
    """One emulated gNB on a kernel-SCTP association."""

    def __init__(self, logic: GnbLogic, log: PacketLog | None = None) -> None:
        self.logic = logic
        self.log = log
        self.assoc: SctpAssociation | None = None
        self.closed: asyncio.Future[None] | None = None
        self._progress = asyncio.Event()
        self._target = 0  # wake the waiter only when this many UEs are done (or on close)

    async def connect(self, addresses: list[str], port: int,
                      params: SctpParams = SctpParams(), timeout: float = 10.0) -> None:
        self.closed = asyncio.get_running_loop().create_future()
        self.assoc = await connect(addresses, port, self, params, timeout=timeout)
        if self.log is not None:
            self.log.remote = (addresses[0], port)
            local = self.assoc.sock.getsockname()
            self.log.local = (local[0], local[1])
        self._send(*self.logic.ng_setup())
        deadline = time.monotonic() + timeout
        while self.logic.setup_ok is None:
            if time.monotonic() > deadline or self.closed.done():
                raise TimeoutError("no NG Setup answer")
            await self._wait(0.2)
        if not self.logic.setup_ok:
            raise ConnectionRefusedError("NG Setup Failure")

    async def _wait(self, timeout: float) -> None:
        self._progress.clear()
        try:
            await asyncio.wait_for(self._progress.wait(), timeout)
        except TimeoutError:
            pass

    def _send(self, data: bytes, stream: int) -> None:
        assert self.assoc is not None
        if self.log is not None:
            self.log.add(True, data, stream, NGAP_PPID)
        self.assoc.send(data, stream, NGAP_PPID)

    def start_ue(self, ran_ue_id: int) -> None:
        self._send(*self.logic.start_ue(ran_ue_id))

    async def wait_finished(self, count: int, timeout: float) -> bool:
        self._target = count
        deadline = time.monotonic() + timeout
        while self.logic.finished() < count:
            left = deadline - time.monotonic()
            if left <= 0 or (self.closed is not None and self.closed.done()):
                return False
            await self._wait(min(left, 0.5))
        return True

    # SctpHandler
    def on_message(self, assoc: SctpAssociation, data: bytes, stream: int, ppid: int) -> None:
        if self.log is not None:
            self.log.add(False, data, stream, ppid)
        try:
            replies = self.logic.handle(data, stream, ppid)
        except Exception as exc:  # a message the emulator cannot read is a finding
            self.logic._violation(f"undecodable message: {exc}")
            replies = []
        for out, sid in replies:
            self._send(out, sid)
        if self.logic.setup_ok is None or self.logic.done >= self._target:
            self._progress.set()

    def on_event(self, assoc: SctpAssociation, kind: str, detail: dict) -> None:
        pass

    def on_closed(self, assoc: SctpAssociation, exc: BaseException | None) -> None:
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self._progress.set()

    def close(self) -> None:
        if self.assoc is not None:
            self.assoc.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="emulated gNB on kernel SCTP")
    ap.add_argument("--target", action="append", default=None)
    ap.add_argument("--port", type=int, default=38412)
    ap.add_argument("--gnb-id", type=int, default=1)
    ap.add_argument("--ues", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--pcap", default=None)
    args = ap.parse_args(argv)
    logic = GnbLogic(args.gnb_id)
    log = PacketLog() if args.pcap else None

    async def run() -> dict:
        client = GnbClient(logic, log)
        await client.connect(args.target or ["127.0.0.1"], args.port)
        for i in range(1, args.ues + 1):
            client.start_ue(i)
        ok = await client.wait_finished(args.ues, args.timeout)
        client.close()
        return {"ok": ok, "completed": logic.completed, "violations": logic.violations[:10]}

    result = asyncio.run(run())
    if args.pcap and log is not None:
        result["pcap_packets"] = write_pcap(args.pcap, [log])
    print(json.dumps(result))
    return 0 if result["ok"] and not result["violations"] else 1


if __name__ == "__main__":
    sys.exit(main())
