"""Emulated AMF for N2 tests and load: answers NG Setup and runs registration-like UE sequences.

``AmfLogic`` is sans-IO (message in, messages out); ``serve`` puts it on a kernel-SCTP listener.
Per UE: InitialUEMessage -> DownlinkNASTransport; each UplinkNASTransport -> another
DownlinkNASTransport until ``nas_rounds`` are done, then InitialContextSetupRequest;
InitialContextSetupResponse -> UEContextReleaseCommand; UEContextReleaseComplete ends the UE.
The NAS-PDU of every downlink message echoes the NAS-PDU of the UE's InitialUEMessage, so the
emulated gNB can check that each answer reached the right UE.  Every received message is
recorded (procedure, ids, stream, PPID) for the tests.

CLI: ``python -m perf.amf_emulator --listen 127.0.0.1 --port 38413 --name amf1 --set-id 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field

from dataplane.sctp import SctpAssociation, SctpParams, adopt_listener, listen
from nf_adapters.ngap import codec as c
from nf_adapters.ngap import extract
from nf_adapters.ngap.routing_key import AMF_UE_ID, PDU_TYPE, PROCEDURE_CODE, RAN_UE_ID
from nf_adapters.ngap.templates import NAS_LEN, UeTemplates, find_nas

NGAP_PPID = 60


@dataclass(slots=True)
class AmfUe:
    amf_ue_id: int
    ran_ue_id: int
    stream: int
    tag: bytes
    rounds: int = 0


@dataclass
class AmfLogic:
    """One emulated AMF (shared by all the associations it accepts)."""

    name: str = "amf1"
    plmn: bytes = c.plmn_bytes("001", "01")
    region_id: int = 1
    set_id: int = 1
    pointer: int = 1
    capacity: int = 100
    ssts: tuple[int, ...] = (1,)  # slices it serves (SSTs)
    nas_rounds: int = 2
    id_base: int = 1000
    ues: dict[int, AmfUe] = field(default_factory=dict)
    received: list[tuple] = field(default_factory=list)  # (pdu, proc, ran, amf, stream, ppid)
    completed: int = 0
    errors_received: int = 0
    record: bool = True
    resets: list = field(default_factory=list)  # NG Resets received: per-UE list or None
    reset_acks: list = field(default_factory=list)  # NG Reset Acknowledges received
    tas: set = field(default_factory=set)  # (PLMN, TAC) its gNB (the gateway) announced
    _next: int = 0

    def __post_init__(self) -> None:
        self.templates = UeTemplates(self.plmn, self.guami)

    @property
    def guami(self) -> c.Guami:
        return c.Guami(self.plmn, self.region_id, self.set_id, self.pointer)

    def handle(self, data: bytes, stream: int, ppid: int) -> list[tuple[bytes, int]]:
        """Answer one message: returns [(bytes, stream), ...] to send back."""
        key = extract(data)
        pdu, proc, ran, amf = key[PDU_TYPE], key[PROCEDURE_CODE], key[RAN_UE_ID], key[AMF_UE_ID]
        if self.record:
            self.received.append((pdu, proc, ran, amf, stream, ppid))
        if pdu == c.INITIATING and proc == c.PROC_NG_SETUP:
            ies = c.decode(data).ies
            self.tas = {(p, t) for p, t, _s in c.supported_tas(ies.get(c.IE_SUPPORTED_TA_LIST,
                                                                        []))}
            return [(c.ng_setup_response(self.name, [self.guami], self.capacity, [self.plmn],
                                         self.ssts), 0)]
        if proc == c.PROC_NG_RESET:
            return self._ng_reset(data, pdu)
        if proc == c.PROC_RAN_CONFIGURATION_UPDATE and pdu == c.INITIATING:
            ies = c.decode(data).ies
            self.tas = {(p, t) for p, t, _s in c.supported_tas(ies.get(c.IE_SUPPORTED_TA_LIST,
                                                                        []))}
            return [(c.encode(c.SUCCESSFUL, c.PROC_RAN_CONFIGURATION_UPDATE, []), 0)]
        t = self.templates
        if pdu == c.INITIATING and proc == c.PROC_INITIAL_UE_MESSAGE:
            nas = find_nas(data) or c.decode(data).ies[c.IE_NAS_PDU]
            self._next += 1
            ue = AmfUe(self.id_base + self._next, ran, stream, nas)
            self.ues[ue.amf_ue_id] = ue
            return [(self._downlink(ue), stream)]
        ue = self.ues.get(amf)
        if pdu == c.INITIATING and proc == c.PROC_ERROR_INDICATION:
            self.errors_received += 1
            return []
        if ue is None or ue.ran_ue_id != ran:
            return [(c.error_indication(("radioNetwork", "unknown-local-UE-NGAP-ID"),
                                        amf if amf >= 0 else None, ran if ran >= 0 else None),
                     stream)]
        if pdu == c.INITIATING and proc == c.PROC_UPLINK_NAS_TRANSPORT:
            ue.rounds += 1
            if ue.rounds < self.nas_rounds:
                return [(self._downlink(ue), ue.stream)]
            if len(ue.tag) == NAS_LEN:
                return [(t.ics_request.stamp(ran, ue.amf_ue_id, ue.tag), ue.stream)]
            return [(c.initial_context_setup_request(ue.amf_ue_id, ran, self.guami, ue.tag),
                     ue.stream)]
        if pdu == c.SUCCESSFUL and proc == c.PROC_INITIAL_CONTEXT_SETUP:
            return [(t.release_command.stamp(ran, ue.amf_ue_id), ue.stream)]
        if pdu == c.INITIATING and proc == c.PROC_UE_CONTEXT_RELEASE_REQUEST:
            return [(t.release_command.stamp(ran, ue.amf_ue_id), ue.stream)]
        if pdu == c.SUCCESSFUL and proc == c.PROC_UE_CONTEXT_RELEASE:
            del self.ues[ue.amf_ue_id]
            self.completed += 1
            return []
        return []

    def _ng_reset(self, data: bytes, pdu: int) -> list[tuple[bytes, int]]:
        """NG Reset from the gateway: drop the listed UEs (by AMF UE id, else RAN UE id; all
        for a whole reset) and acknowledge with the list as received."""
        ies = c.decode(data).ies
        if pdu != c.INITIATING:
            self.reset_acks.append(c.reset_items(ies.get(c.IE_UE_ASSOCIATED_LIST, [])) or None)
            return []
        rtype = ies[c.IE_RESET_TYPE]
        items = c.reset_items(rtype[1]) if rtype[0] == "partOfNG-Interface" else None
        self.resets.append(items)
        for ue in list(self.ues.values()):
            if items is None or any(a == ue.amf_ue_id or (a is None and r == ue.ran_ue_id)
                                    for a, r in items):
                del self.ues[ue.amf_ue_id]
        return [(c.ng_reset_acknowledge(items), 0)]

    def _downlink(self, ue: AmfUe) -> bytes:
        if len(ue.tag) == NAS_LEN:
            return self.templates.downlink_nas.stamp(ue.ran_ue_id, ue.amf_ue_id, ue.tag)
        return c.downlink_nas(ue.amf_ue_id, ue.ran_ue_id, ue.tag)


class _AmfAssociation:
    """SctpHandler that feeds one accepted association to the AMF logic."""

    def __init__(self, logic: AmfLogic, server: AmfServer) -> None:
        self.logic = logic
        self.server = server

    def on_message(self, assoc: SctpAssociation, data: bytes, stream: int, ppid: int) -> None:
        for out, sid in self.logic.handle(data, stream, ppid):
            assoc.send(out, sid, NGAP_PPID)

    def on_event(self, assoc: SctpAssociation, kind: str, detail: dict) -> None:
        pass

    def on_closed(self, assoc: SctpAssociation, exc: BaseException | None) -> None:
        self.server.associations.discard(assoc)


class AmfServer:
    """An emulated AMF listening on kernel SCTP."""

    def __init__(self, logic: AmfLogic) -> None:
        self.logic = logic
        self.listener = None
        self.associations: set[SctpAssociation] = set()

    async def start(self, addresses: list[str], port: int,
                    params: SctpParams = SctpParams()) -> AmfServer:
        def accept(assoc: SctpAssociation) -> _AmfAssociation:
            self.associations.add(assoc)
            return _AmfAssociation(self.logic, self)

        self.listener = await listen(addresses, port, accept, params)
        return self

    def adopt(self, sock, params: SctpParams = SctpParams()) -> AmfServer:
        """Serve on a socket already listening (made in another network namespace)."""
        def accept(assoc: SctpAssociation) -> _AmfAssociation:
            self.associations.add(assoc)
            return _AmfAssociation(self.logic, self)

        self.listener = adopt_listener(sock, accept, params)
        return self

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.port

    def send_all(self, data: bytes) -> None:
        """Send a non-UE message (Overload Start/Stop...) on every association, stream 0."""
        for assoc in list(self.associations):
            assoc.send(data, 0, NGAP_PPID)

    def stop(self, abort: bool = True) -> None:
        """Stop the AMF: close the listener and its associations (ABORT by default)."""
        if self.listener is not None:
            self.listener.close()
        for assoc in list(self.associations):
            if abort:
                assoc.abort()
            else:
                assoc.close()
        self.associations.clear()


async def serve(addresses: list[str], port: int, logic: AmfLogic,
                params: SctpParams = SctpParams()) -> AmfServer:
    return await AmfServer(logic).start(addresses, port, params)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="emulated AMF on kernel SCTP")
    ap.add_argument("--listen", action="append", default=None)
    ap.add_argument("--port", type=int, default=38412)
    ap.add_argument("--name", default="amf1")
    ap.add_argument("--set-id", type=int, default=1)
    ap.add_argument("--capacity", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    logic = AmfLogic(args.name, set_id=args.set_id, capacity=args.capacity, record=False)

    async def run() -> None:
        server = await serve(args.listen or ["127.0.0.1"], args.port, logic)
        try:
            await asyncio.sleep(args.seconds)
        finally:
            server.stop()
        print(f"{args.name}: {logic.completed} UEs completed")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
