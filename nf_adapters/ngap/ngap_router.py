"""The N2 proxy's logic, sans-IO: gNB associations on one side, an AMF pool on the other.

The router takes messages as ``(bytes, stream, ppid)`` from a peer and sends through
``Link`` objects (``dataplane.sctp.SctpAssociation`` is one; tests use in-memory links).  It
never does I/O itself, so every behaviour below is testable without a kernel SCTP.

Roles
-----
* Toward gNBs the gateway stands for the AMF pool: it answers NG Setup itself with an NG Setup
  Response built from the pool's configuration and the AMFs' own NG Setup answers (AMF name =
  the pool's, served GUAMIs = union of the AMFs', PLMN support, relative capacity = the pool's
  configured figure, else the sum of the AMFs' capped at 255).  Without any AMF up it answers
  NG Setup Failure (misc/om-intervention, TimeToWait 5 s).
* Toward each AMF it is one gNB (``GatewayIdentity``) that runs its own NG Setup.
* UE-associated signalling: an InitialUEMessage selects an AMF, then the gateway keeps
  ``(gNB, RAN UE NGAP ID) <-> (AMF, AMF UE NGAP ID)``.  Both ids are rewritten (several gNBs
  share one association toward an AMF and several AMFs share one toward a gNB, so ids would
  collide): the AMF sees RAN UE NGAP IDs allocated by the gateway, the gNB sees AMF UE NGAP IDs
  allocated by the gateway.  A UE keeps its stream on both sides (the gNB's choice toward the
  gNB; 1 + id mod (streams - 1) toward the AMF); non-UE-associated messages use stream 0.
  UE Context Release Complete removes the entry.
* AMF selection for a new UE: among AMFs that are up and not overloaded, those serving the
  AMF set (and pointer) of the 5G-S-TMSI (or the AMFSetID IE) first; then the one with the
  lowest ``(UEs + 1) / relative capacity`` (weighted by capacity and load, deterministic).

AMF failure (the behaviour chosen, TS 23.501 §5.21.2.3 / TS 38.413 §8.3.3)
-------------------------------------------------------------------------
When an AMF association is lost (or the AMF sends NG Reset), new UEs go to the remaining AMFs
at once.  The gateway cannot move the UE contexts of the failed AMF (they live in that AMF, or
in a UDSF the gateway does not see), so for each of its UEs it sends the gNB a **UE Context
Release Command** (cause misc/hardware-failure) on the UE's stream, as the AMF would, and
absorbs the gNB's UE Context Release Complete.  The gNB releases the RRC connection; the UE
comes back with a Service Request or Registration in a new InitialUEMessage, which carries its
5G-S-TMSI and is routed to an AMF of the same AMF set when one is up (so an AMF set sharing
UE contexts takes it over), else to any AMF (which re-registers the UE).  This is preferred
over an ErrorIndication, which would leave the gNB holding a UE context that can never work.

gNB failure: each of its UEs gets a UE Context Release Request (radioNetwork /
radio-connection-with-ue-lost) toward its AMF; the gateway answers the AMF's UE Context
Release Command with a UE Context Release Complete itself.

Overload
--------
An AMF's Overload Start removes it from the selection of new UEs until its Overload Stop
(existing UEs keep flowing).  The gateway itself is overloaded when its UE table reaches
``max_ues`` or no AMF can take a new UE: it sends Overload Start (reject non-emergency
mobile-originated data transfer) to every set-up gNB, and Overload Stop when the table is back
under ``resume_ratio * max_ues`` and some AMF can take UEs.  An InitialUEMessage that arrives
while no AMF can take it gets an ErrorIndication (misc/control-processing-overload).

Errors
------
Undecodable messages get an ErrorIndication (protocol/transfer-syntax-error), a message before
NG Setup or for a procedure the gateway does not relay gets one with
protocol/message-not-compatible-with-receiver-state, and one naming a UE the gateway does not
know gets radioNetwork/unknown-local-UE-NGAP-ID (or inconsistent-remote-UE-NGAP-ID when the ids
do not match).  The association stays up and ``stats`` counters move.  Non-NGAP PPIDs are
counted and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from nf_adapters.ngap import NgapDecodeError, extract, rewrite_ue_ids
from nf_adapters.ngap import codec as c
from nf_adapters.ngap.routing_key import (
    AMF_POINTER,
    AMF_SET_ID,
    AMF_UE_ID,
    NONE,
    PDU_TYPE,
    PROCEDURE_CODE,
    RAN_UE_ID,
)

log = logging.getLogger("nfmesh.n2")

NGAP_PPID = 60
MAX_RAN_ID = 2**32 - 1
MAX_AMF_ID = 2**40 - 1

CAUSE_TRANSFER_SYNTAX = ("protocol", "transfer-syntax-error")
CAUSE_NOT_COMPATIBLE = ("protocol", "message-not-compatible-with-receiver-state")
CAUSE_UNKNOWN_LOCAL_ID = ("radioNetwork", "unknown-local-UE-NGAP-ID")
CAUSE_INCONSISTENT_ID = ("radioNetwork", "inconsistent-remote-UE-NGAP-ID")
CAUSE_OVERLOAD = ("misc", "control-processing-overload")
CAUSE_AMF_FAILURE = ("misc", "hardware-failure")
CAUSE_RADIO_LOST = ("radioNetwork", "radio-connection-with-ue-lost")


class Link(Protocol):
    """Where the router sends: one SCTP association (``dataplane.sctp.SctpAssociation``)."""

    out_streams: int

    def send(self, data: bytes, stream: int, ppid: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    """Who the gateway is toward AMFs (a gNB) and toward gNBs (the pool's AMF)."""

    plmn: bytes
    gnb_id: int = 1  # Global gNB ID toward AMFs (32 bits)
    tac: int = 1
    ran_node_name: str = "nfmesh-n2"
    pool_name: str = "nfmesh-amf-pool"  # AMF Name toward gNBs
    relative_capacity: int | None = None  # toward gNBs; None: from the AMFs' answers


@dataclass(frozen=True, slots=True)
class Limits:
    max_ues: int = 100_000
    resume_ratio: float = 0.9


@dataclass(eq=False, slots=True)
class AmfPeer:
    """One AMF association of the pool."""

    name: str
    link: Link
    index: int
    state: str = "setup"  # setup -> up | rejected; down when lost
    amf_name: str = ""
    guamis: list[c.Guami] = field(default_factory=list)
    plmns: list[bytes] = field(default_factory=list)
    relative_capacity: int = 1
    configured_capacity: int | None = None
    overloaded: bool = False
    ues: int = 0
    messages: int = 0

    @property
    def capacity(self) -> int:
        return max(1, self.configured_capacity or self.relative_capacity)

    def takes_new_ues(self) -> bool:
        return self.state == "up" and not self.overloaded

    def serves_set(self, set_id: int, pointer: int = NONE) -> bool:
        return any(g.set_id == set_id and (pointer == NONE or g.pointer == pointer)
                   for g in self.guamis)


@dataclass(eq=False, slots=True)
class GnbPeer:
    """One gNB association."""

    link: Link
    index: int
    setup: bool = False
    name: str = ""
    up: bool = True
    ues: int = 0
    messages: int = 0


@dataclass(eq=False, slots=True)
class UeContext:
    gnb: GnbPeer
    gnb_ran_id: int
    gnb_stream: int
    gw_ran_id: int
    amf: AmfPeer | None
    amf_stream: int
    amf_ue_id: int = NONE
    gw_amf_id: int = NONE
    state: str = "active"  # active | releasing (gateway released it: AMF lost) | gnb_lost


STAT_NAMES = (
    "messages_from_gnb", "messages_from_amf", "forwarded_uplink", "forwarded_downlink",
    "decode_errors", "unknown_ue", "out_of_sequence", "ppid_mismatch", "error_indications_sent",
    "error_indications_received", "rejected_overload", "ues_released_amf_failure",
    "overload_starts_sent", "overload_stops_sent", "send_failures", "ng_setups_answered",
    "initial_ue_messages", "ue_context_releases", "amf_configuration_updates_sent",
)


class NgapRouter:
    """Routes NGAP between gNB links and AMF links (see the module doc)."""

    def __init__(self, identity: GatewayIdentity, limits: Limits = Limits()) -> None:
        self.identity = identity
        self.limits = limits
        self.amfs: list[AmfPeer] = []
        self.gnbs: list[GnbPeer] = []
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.overloaded = False
        self._by_gnb_ran: dict[tuple[int, int], UeContext] = {}
        self._by_gw_ran: dict[int, UeContext] = {}
        self._by_gw_amf: dict[int, UeContext] = {}
        self._by_amf_ue: dict[tuple[int, int], UeContext] = {}
        self._next_ran = 1
        self._next_amf = 1
        self._next_index = 0
        self._advertised: list[c.Guami] = []

    # ---- peers --------------------------------------------------------------------------

    def add_amf(self, link: Link, name: str, relative_capacity: int | None = None) -> AmfPeer:
        """A new AMF association is up: run the gateway's own NG Setup on it."""
        self._next_index += 1
        amf = AmfPeer(name, link, self._next_index, configured_capacity=relative_capacity)
        self.amfs.append(amf)
        ident = self.identity
        self._send(link, c.ng_setup_request(ident.gnb_id, ident.plmn, ident.tac,
                                            ident.ran_node_name), 0)
        return amf

    def add_gnb(self, link: Link) -> GnbPeer:
        self._next_index += 1
        gnb = GnbPeer(link, self._next_index)
        self.gnbs.append(gnb)
        return gnb

    def amf_lost(self, amf: AmfPeer) -> None:
        """The AMF association is gone: see "AMF failure" in the module doc."""
        if amf.state == "down":
            return
        amf.state = "down"
        self._release_ues_of_amf(amf)
        if amf in self.amfs:
            self.amfs.remove(amf)
        self._pool_changed()
        self._update_overload()

    def gnb_lost(self, gnb: GnbPeer) -> None:
        gnb.up = False
        for key in [k for k, ue in self._by_gnb_ran.items() if ue.gnb is gnb]:
            ue = self._by_gnb_ran.pop(key)
            if ue.amf is not None and ue.amf.state == "up" and ue.amf_ue_id != NONE:
                ue.state = "gnb_lost"
                self._send(ue.amf.link, c.ue_context_release_request(
                    ue.amf_ue_id, ue.gw_ran_id, CAUSE_RADIO_LOST), ue.amf_stream)
            else:
                self._forget(ue)
        if gnb in self.gnbs:
            self.gnbs.remove(gnb)

    # ---- ids and tables -----------------------------------------------------------------

    @property
    def ue_count(self) -> int:
        return len(self._by_gw_ran)

    def _alloc_ran(self) -> int:
        for _ in range(len(self._by_gw_ran) + 1):
            v = self._next_ran
            self._next_ran = v + 1 if v < MAX_RAN_ID else 0
            if v not in self._by_gw_ran:
                return v
        raise RuntimeError("RAN UE NGAP id space exhausted")

    def _alloc_amf(self) -> int:
        for _ in range(len(self._by_gw_amf) + 1):
            v = self._next_amf
            self._next_amf = v + 1 if v < MAX_AMF_ID else 0
            if v not in self._by_gw_amf:
                return v
        raise RuntimeError("AMF UE NGAP id space exhausted")

    def _forget(self, ue: UeContext) -> None:
        if self._by_gnb_ran.get((ue.gnb.index, ue.gnb_ran_id)) is ue:
            del self._by_gnb_ran[(ue.gnb.index, ue.gnb_ran_id)]
        self._by_gw_ran.pop(ue.gw_ran_id, None)
        if ue.gw_amf_id != NONE:
            self._by_gw_amf.pop(ue.gw_amf_id, None)
        if ue.amf is not None:
            if ue.amf_ue_id != NONE:
                self._by_amf_ue.pop((ue.amf.index, ue.amf_ue_id), None)
            ue.amf.ues -= 1
            ue.amf = None
        ue.gnb.ues -= 1

    def ue_table(self) -> list[dict]:
        """A snapshot of the UE table (for tests, the CLI and debugging)."""
        return [{"gnb": ue.gnb.index, "gnb_ran_id": ue.gnb_ran_id, "gw_ran_id": ue.gw_ran_id,
                 "amf": ue.amf.name if ue.amf else None, "amf_ue_id": ue.amf_ue_id,
                 "gw_amf_id": ue.gw_amf_id, "gnb_stream": ue.gnb_stream,
                 "amf_stream": ue.amf_stream, "state": ue.state}
                for ue in self._by_gw_ran.values()]

    # ---- sending --------------------------------------------------------------------------

    def _send(self, link: Link, data: bytes, stream: int) -> None:
        if not link.send(data, stream, NGAP_PPID):
            self.stats["send_failures"] += 1

    def _error(self, link: Link, cause: tuple[str, str], stream: int = 0,
               amf_ue_id: int = NONE, ran_ue_id: int = NONE) -> None:
        self.stats["error_indications_sent"] += 1
        self._send(link, c.error_indication(
            cause, amf_ue_id if amf_ue_id != NONE else None,
            ran_ue_id if ran_ue_id != NONE else None), stream)

    def _broadcast_gnbs(self, data: bytes) -> None:
        for gnb in self.gnbs:
            if gnb.setup and gnb.up:
                self._send(gnb.link, data, 0)

    # ---- overload ---------------------------------------------------------------------------

    def _any_amf_for_new_ues(self) -> bool:
        return any(a.takes_new_ues() for a in self.amfs)

    def _update_overload(self) -> None:
        full = self.ue_count >= self.limits.max_ues
        if not self.overloaded:
            if full or not self._any_amf_for_new_ues():
                self.overloaded = True
                self.stats["overload_starts_sent"] += 1
                self._broadcast_gnbs(c.overload_start())
        else:
            calm = self.ue_count < self.limits.max_ues * self.limits.resume_ratio
            if calm and self._any_amf_for_new_ues():
                self.overloaded = False
                self.stats["overload_stops_sent"] += 1
                self._broadcast_gnbs(c.overload_stop())

    # ---- selection --------------------------------------------------------------------------

    def select_amf(self, set_id: int = NONE, pointer: int = NONE) -> AmfPeer | None:
        """The AMF for a new UE (see the module doc); None when none can take it."""
        candidates = [a for a in self.amfs if a.takes_new_ues()]
        if not candidates:
            return None
        if set_id != NONE:
            exact = [a for a in candidates if a.serves_set(set_id, pointer)]
            in_set = exact or [a for a in candidates if a.serves_set(set_id)]
            if in_set:
                candidates = in_set
        return min(candidates, key=lambda a: ((a.ues + 1) / a.capacity, a.index))

    def _routing_key(self, side: str, name: object, link: object, data: bytes, stream: int,
                     ppid: int) -> tuple | None:
        """The routing key of a received message; None (counted, and answered with an
        ErrorIndication when undecodable) when it is not NGAP or cannot be read."""
        if ppid != NGAP_PPID:
            self.stats["ppid_mismatch"] += 1
            return None
        try:
            return extract(data)
        except NgapDecodeError as exc:
            self.stats["decode_errors"] += 1
            log.info("%s %s: undecodable NGAP (%s)", side, name, exc)
            self._error(link, CAUSE_TRANSFER_SYNTAX, stream)
            return None

    # ---- gNB side -------------------------------------------------------------------------

    def gnb_message(self, gnb: GnbPeer, data: bytes, stream: int, ppid: int) -> None:
        self.stats["messages_from_gnb"] += 1
        gnb.messages += 1
        key = self._routing_key("gNB", gnb.index, gnb.link, data, stream, ppid)
        if key is None:
            return
        pdu, proc = key[PDU_TYPE], key[PROCEDURE_CODE]
        if pdu == c.INITIATING and proc == c.PROC_NG_SETUP:
            self._answer_ng_setup(gnb, data)
            return
        if not gnb.setup:
            self.stats["out_of_sequence"] += 1
            self._error(gnb.link, CAUSE_NOT_COMPATIBLE, stream)
            return
        if pdu == c.INITIATING and proc == c.PROC_INITIAL_UE_MESSAGE:
            self._initial_ue(gnb, data, stream, key)
        elif pdu == c.INITIATING and proc == c.PROC_ERROR_INDICATION:
            self.stats["error_indications_received"] += 1
            if key[AMF_UE_ID] != NONE or key[RAN_UE_ID] != NONE:
                self._uplink(gnb, data, stream, key, quiet=True)
        elif key[AMF_UE_ID] != NONE or key[RAN_UE_ID] != NONE:
            self._uplink(gnb, data, stream, key)
        elif pdu == c.INITIATING and proc == c.PROC_NG_RESET:
            for k in [k for k, ue in self._by_gnb_ran.items() if ue.gnb is gnb]:
                ue = self._by_gnb_ran[k]
                self.gnb_lost_ue(ue)
            self._send(gnb.link, c.ng_reset_acknowledge(), 0)
        elif pdu == c.INITIATING and proc == c.PROC_RAN_CONFIGURATION_UPDATE:
            self._send(gnb.link, c.encode(c.SUCCESSFUL, c.PROC_RAN_CONFIGURATION_UPDATE, []), 0)
        elif proc == c.PROC_AMF_CONFIGURATION_UPDATE and pdu != c.INITIATING:
            if pdu == c.UNSUCCESSFUL:
                log.warning("gNB %d refused the AMF Configuration Update", gnb.index)
        else:
            self.stats["out_of_sequence"] += 1
            self._error(gnb.link, CAUSE_NOT_COMPATIBLE, stream)

    def gnb_lost_ue(self, ue: UeContext) -> None:
        """One UE of a gNB is gone (NG Reset from the gNB): tell its AMF."""
        self._by_gnb_ran.pop((ue.gnb.index, ue.gnb_ran_id), None)
        if ue.amf is not None and ue.amf.state == "up" and ue.amf_ue_id != NONE:
            ue.state = "gnb_lost"
            self._send(ue.amf.link, c.ue_context_release_request(
                ue.amf_ue_id, ue.gw_ran_id, CAUSE_RADIO_LOST), ue.amf_stream)
        else:
            self._forget(ue)

    def _pool_view(self) -> tuple[list[c.Guami], list[bytes], int]:
        """What the gateway advertises to gNBs: served GUAMIs, PLMNs, relative capacity."""
        up = [a for a in self.amfs if a.state == "up"]
        guamis: list[c.Guami] = []
        plmns: list[bytes] = []
        for a in up:
            guamis += [g for g in a.guamis if g not in guamis]
            plmns += [p for p in a.plmns if p not in plmns]
        if not plmns:
            plmns = [self.identity.plmn]
        capacity = self.identity.relative_capacity
        if capacity is None:
            capacity = min(255, sum(a.capacity for a in up))
        return guamis, plmns, capacity

    def _pool_changed(self) -> None:
        """Tell set-up gNBs when the served GUAMIs change (an AMF came or went): AMF
        Configuration Update, as the AMF itself would (TS 38.413 §8.7.3)."""
        guamis, plmns, capacity = self._pool_view()
        if not guamis or guamis == self._advertised:
            return
        self._advertised = guamis
        self.stats["amf_configuration_updates_sent"] += 1
        self._broadcast_gnbs(c.amf_configuration_update(guamis, capacity, plmns))

    def _answer_ng_setup(self, gnb: GnbPeer, data: bytes) -> None:
        self.stats["ng_setups_answered"] += 1
        try:
            msg = c.decode(data)
            ran_node = msg.ies.get(c.IE_RAN_NODE_NAME)
            gnb.name = ran_node if isinstance(ran_node, str) else ""
        except c.NgapCodecError:
            self.stats["decode_errors"] += 1
            self._error(gnb.link, CAUSE_TRANSFER_SYNTAX, 0)
            return
        if not any(a.state == "up" for a in self.amfs):
            self._send(gnb.link, c.ng_setup_failure(("misc", "om-intervention"), "v5s"), 0)
            return
        guamis, plmns, capacity = self._pool_view()
        self._advertised = guamis
        gnb.setup = True
        self._send(gnb.link, c.ng_setup_response(self.identity.pool_name, guamis, capacity,
                                                 plmns), 0)
        if self.overloaded:
            self._send(gnb.link, c.overload_start(), 0)

    def _initial_ue(self, gnb: GnbPeer, data: bytes, stream: int, key: tuple) -> None:
        self.stats["initial_ue_messages"] += 1
        ran = key[RAN_UE_ID]
        if ran == NONE:
            self.stats["decode_errors"] += 1
            self._error(gnb.link, ("protocol", "abstract-syntax-error-falsely-constructed-message"),
                        stream)
            return
        old = self._by_gnb_ran.get((gnb.index, ran))
        if old is not None:  # the gNB reused the id: its old UE is gone
            self._forget(old)
        amf = self.select_amf(key[AMF_SET_ID], key[AMF_POINTER])
        if amf is None or self.ue_count >= self.limits.max_ues:
            self.stats["rejected_overload"] += 1
            self._error(gnb.link, CAUSE_OVERLOAD, stream, ran_ue_id=ran)
            self._update_overload()
            return
        gw_ran = self._alloc_ran()
        out = amf.link.out_streams
        ue = UeContext(gnb, ran, stream, gw_ran, amf,
                       1 + gw_ran % (out - 1) if out > 1 else 0)
        self._by_gnb_ran[(gnb.index, ran)] = ue
        self._by_gw_ran[gw_ran] = ue
        amf.ues += 1
        gnb.ues += 1
        self.stats["forwarded_uplink"] += 1
        self._send(amf.link, rewrite_ue_ids(data, gw_ran, -1), ue.amf_stream)
        if self.ue_count >= self.limits.max_ues:
            self._update_overload()

    def _uplink(self, gnb: GnbPeer, data: bytes, stream: int, key: tuple,
                quiet: bool = False) -> None:
        ran, amf_id = key[RAN_UE_ID], key[AMF_UE_ID]
        ue = self._by_gw_amf.get(amf_id) if amf_id != NONE else None
        if ue is None and ran != NONE:
            ue = self._by_gnb_ran.get((gnb.index, ran))
        if ue is None or ue.gnb is not gnb:
            self.stats["unknown_ue"] += 1
            if not quiet:
                self._error(gnb.link, CAUSE_UNKNOWN_LOCAL_ID, stream, amf_id, ran)
            return
        if (ran != NONE and ran != ue.gnb_ran_id) or (
                amf_id != NONE and ue.gw_amf_id != NONE and amf_id != ue.gw_amf_id):
            self.stats["unknown_ue"] += 1
            if not quiet:
                self._error(gnb.link, CAUSE_INCONSISTENT_ID, stream, amf_id, ran)
            return
        is_release_complete = (key[PDU_TYPE] == c.SUCCESSFUL
                               and key[PROCEDURE_CODE] == c.PROC_UE_CONTEXT_RELEASE)
        if ue.state == "releasing":  # the gateway released it after its AMF failed
            if is_release_complete:
                self._forget(ue)
            return
        if ue.amf is None or ue.amf.state != "up":
            self.stats["unknown_ue"] += 1
            if not quiet:
                self._error(gnb.link, CAUSE_UNKNOWN_LOCAL_ID, stream, amf_id, ran)
            return
        if amf_id != NONE and ue.amf_ue_id == NONE:
            self.stats["unknown_ue"] += 1
            if not quiet:
                self._error(gnb.link, CAUSE_INCONSISTENT_ID, stream, amf_id, ran)
            return
        try:
            out = rewrite_ue_ids(data, ue.gw_ran_id, ue.amf_ue_id if amf_id != NONE else -1)
        except NgapDecodeError:
            self.stats["decode_errors"] += 1
            self._error(gnb.link, CAUSE_TRANSFER_SYNTAX, stream, amf_id, ran)
            return
        self.stats["forwarded_uplink"] += 1
        self._send(ue.amf.link, out, ue.amf_stream)
        if is_release_complete:
            self.stats["ue_context_releases"] += 1
            self._forget(ue)
            if self.overloaded:
                self._update_overload()

    # ---- AMF side -------------------------------------------------------------------------

    def amf_message(self, amf: AmfPeer, data: bytes, stream: int, ppid: int) -> None:
        self.stats["messages_from_amf"] += 1
        amf.messages += 1
        key = self._routing_key("AMF", amf.name, amf.link, data, stream, ppid)
        if key is None:
            return
        pdu, proc = key[PDU_TYPE], key[PROCEDURE_CODE]
        if proc == c.PROC_NG_SETUP and pdu != c.INITIATING:
            self._amf_setup_answer(amf, data, pdu)
            return
        if amf.state != "up":
            self.stats["out_of_sequence"] += 1
            self._error(amf.link, CAUSE_NOT_COMPATIBLE, stream)
            return
        if pdu == c.INITIATING and proc == c.PROC_ERROR_INDICATION:
            self.stats["error_indications_received"] += 1
            if key[RAN_UE_ID] != NONE or key[AMF_UE_ID] != NONE:
                self._downlink(amf, data, stream, key, quiet=True)
        elif key[RAN_UE_ID] != NONE or key[AMF_UE_ID] != NONE:
            self._downlink(amf, data, stream, key)
        elif pdu == c.INITIATING and proc == c.PROC_OVERLOAD_START:
            amf.overloaded = True
            self._update_overload()
        elif pdu == c.INITIATING and proc == c.PROC_OVERLOAD_STOP:
            amf.overloaded = False
            self._update_overload()
        elif pdu == c.INITIATING and proc == c.PROC_NG_RESET:
            self._release_ues_of_amf(amf)
            self._send(amf.link, c.ng_reset_acknowledge(), 0)
        elif pdu == c.INITIATING and proc == c.PROC_AMF_CONFIGURATION_UPDATE:
            self._send(amf.link, c.encode(c.SUCCESSFUL, c.PROC_AMF_CONFIGURATION_UPDATE, []), 0)
        elif pdu == c.INITIATING and proc == c.PROC_PAGING:
            self._broadcast_gnbs(data)
        elif pdu == c.SUCCESSFUL and proc == c.PROC_NG_RESET:
            pass
        else:
            self.stats["out_of_sequence"] += 1
            self._error(amf.link, CAUSE_NOT_COMPATIBLE, stream)

    def _amf_setup_answer(self, amf: AmfPeer, data: bytes, pdu: int) -> None:
        if pdu == c.UNSUCCESSFUL:
            amf.state = "rejected"
            log.warning("AMF %s refused the gateway's NG Setup", amf.name)
            return
        try:
            msg = c.decode(data)
        except c.NgapCodecError:
            self.stats["decode_errors"] += 1
            self._error(amf.link, CAUSE_TRANSFER_SYNTAX, 0)
            return
        ies = msg.ies
        name = ies.get(c.IE_AMF_NAME)
        amf.amf_name = name if isinstance(name, str) else amf.name
        amf.guamis = [c.Guami.from_value(item["gUAMI"])
                      for item in ies.get(c.IE_SERVED_GUAMI_LIST, [])]
        amf.plmns = [item["pLMNIdentity"] for item in ies.get(c.IE_PLMN_SUPPORT_LIST, [])]
        amf.relative_capacity = int(ies.get(c.IE_RELATIVE_AMF_CAPACITY, 1))
        amf.state = "up"
        self._pool_changed()
        self._update_overload()

    def _downlink(self, amf: AmfPeer, data: bytes, stream: int, key: tuple,
                  quiet: bool = False) -> None:
        ran, amf_id = key[RAN_UE_ID], key[AMF_UE_ID]
        ue = self._by_gw_ran.get(ran) if ran != NONE else None
        if ue is None and amf_id != NONE:
            ue = self._by_amf_ue.get((amf.index, amf_id))
        if ue is None or ue.amf is not amf:
            self.stats["unknown_ue"] += 1
            if not quiet:
                self._error(amf.link, CAUSE_UNKNOWN_LOCAL_ID, stream, amf_id, ran)
            return
        if amf_id != NONE:
            if ue.amf_ue_id == NONE:  # the AMF's first message for this UE: learn its id
                ue.amf_ue_id = amf_id
                ue.gw_amf_id = self._alloc_amf()
                self._by_amf_ue[(amf.index, amf_id)] = ue
                self._by_gw_amf[ue.gw_amf_id] = ue
            elif amf_id != ue.amf_ue_id:
                self.stats["unknown_ue"] += 1
                if not quiet:
                    self._error(amf.link, CAUSE_INCONSISTENT_ID, stream, amf_id, ran)
                return
        is_release_cmd = (key[PDU_TYPE] == c.INITIATING
                          and key[PROCEDURE_CODE] == c.PROC_UE_CONTEXT_RELEASE)
        if ue.state == "gnb_lost":  # the gNB is gone: the gateway completes the release
            if is_release_cmd:
                self._send(amf.link, c.ue_context_release_complete(ue.amf_ue_id, ue.gw_ran_id),
                           ue.amf_stream)
                self._forget(ue)
            return
        try:
            out = rewrite_ue_ids(data, ue.gnb_ran_id if ran != NONE else -1,
                                 ue.gw_amf_id if amf_id != NONE else -1)
        except NgapDecodeError:
            self.stats["decode_errors"] += 1
            self._error(amf.link, CAUSE_TRANSFER_SYNTAX, stream, amf_id, ran)
            return
        self.stats["forwarded_downlink"] += 1
        self._send(ue.gnb.link, out, ue.gnb_stream)

    def _release_ues_of_amf(self, amf: AmfPeer) -> None:
        """Release toward the gNBs every UE that ``amf`` served (module doc: AMF failure)."""
        for ue in [ue for ue in self._by_gw_ran.values() if ue.amf is amf]:
            if ue.amf_ue_id != NONE:
                self._by_amf_ue.pop((amf.index, ue.amf_ue_id), None)
            amf.ues -= 1
            ue.amf = None
            if ue.state == "gnb_lost" or not ue.gnb.up:
                self._forget(ue)
                continue
            if ue.gw_amf_id == NONE:
                ue.gw_amf_id = self._alloc_amf()
                self._by_gw_amf[ue.gw_amf_id] = ue
            ue.state = "releasing"
            self.stats["ues_released_amf_failure"] += 1
            self._send(ue.gnb.link, c.ue_context_release_command(
                ue.gw_amf_id, ue.gnb_ran_id, CAUSE_AMF_FAILURE), ue.gnb_stream)

    # ---- introspection ----------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {
            "stats": dict(self.stats), "ue_contexts": self.ue_count, "overloaded": self.overloaded,
            "amfs": [{"name": a.name, "state": a.state, "amf_name": a.amf_name, "ues": a.ues,
                      "capacity": a.capacity, "overloaded": a.overloaded,
                      "guamis": len(a.guamis)} for a in self.amfs],
            "gnbs": [{"index": g.index, "name": g.name, "setup": g.setup, "ues": g.ues}
                     for g in self.gnbs],
        }

