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
* NG Setup from a gNB is checked against what the AMFs serve (their PLMN Support Lists with
  slices, and the TACs configured for their pool): no served PLMN or TAC gives NG Setup
  Failure misc/unknown-PLMN-or-SNPN, no common slice radioNetwork/slice-not-supported
  (``check_tas``); RAN Configuration Update is checked the same way and updates the gNB's
  TAIs, which route Paging: an AMF's Paging goes to the gNBs serving a TAI of its list.
  The TAs the gNBs serve reach the AMFs in the gateway's own NG Setup and, when a gNB adds
  one, in a RAN Configuration Update (so that the AMFs page there).
* AMF selection for a new UE (several AMF sets): among AMFs that are up, not overloaded and
  with an available GUAMI (AMF Status Indication marks GUAMIs unavailable, AMF Configuration
  Update lists them again; a UE whose 5G-S-TMSI names an unavailable GUAMI goes to the Backup
  AMF the indication named, when it can take it), those serving the AMF set (and pointer) of the 5G-S-TMSI (or the
  AMFSetID IE) first; without one, those serving the UE's PLMN and requested slices (read by
  pycrate only when the AMFs' PLMN/slice sets differ); then smooth weighted round robin over
  relative capacity less the load reduction an AMF's Overload Start asked for, so UEs
  arriving one at a time spread by capacity too.
* NG Reset, either way, whole interface or per-UE list: each peer concerned on the other
  side gets an NG Reset of its own UEs (a partial one: its association carries other
  peers' UEs too) with the ids it knows, the contexts are dropped at once, and the origin's
  NG Reset Acknowledge (echoing its list) is sent when all have acknowledged, or after
  ``reset_timeout_s``.
* Timers (``sweep``): UE contexts stuck in a release (Release Complete never came after an
  AMF failure, or the AMF never released after a gNB loss) are dropped after
  ``ue_release_timeout_s`` (``stats['ue_contexts_expired']``).

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
import time

from nf_adapters.ngap import NgapDecodeError, extract, rewrite_ue_ids
from nf_adapters.ngap import codec as c
from nf_adapters.ngap.amf_selection import AmfSelection
from nf_adapters.ngap.ng_reset import NgReset, PendingReset
from nf_adapters.ngap.peers import (
    CAUSE_AMF_FAILURE,
    CAUSE_INCONSISTENT_ID,
    CAUSE_NOT_COMPATIBLE,
    CAUSE_OVERLOAD,
    CAUSE_RADIO_LOST,
    CAUSE_SLICE_NOT_SUPPORTED,
    CAUSE_TRANSFER_SYNTAX,
    CAUSE_UNKNOWN_LOCAL_ID,
    CAUSE_UNKNOWN_PLMN,
    NGAP_PPID,
    STAT_NAMES,
    AmfPeer,
    GatewayIdentity,
    GnbPeer,
    Limits,
    Link,
    slices_meet,
)
from nf_adapters.ngap.pool_procedures import PoolProcedures
from nf_adapters.ngap.routing_key import (
    AMF_POINTER,
    AMF_REGION,
    AMF_SET_ID,
    AMF_UE_ID,
    NONE,
    PDU_TYPE,
    PROCEDURE_CODE,
    RAN_UE_ID,
)
from nf_adapters.ngap.ue_table import MAX_AMF_ID, MAX_RAN_ID, UeContext, UeRecord, UeTable

__all__ = [
    "CAUSE_AMF_FAILURE", "CAUSE_INCONSISTENT_ID", "CAUSE_NOT_COMPATIBLE", "CAUSE_OVERLOAD",
    "CAUSE_RADIO_LOST", "CAUSE_SLICE_NOT_SUPPORTED", "CAUSE_TRANSFER_SYNTAX",
    "CAUSE_UNKNOWN_LOCAL_ID", "CAUSE_UNKNOWN_PLMN", "MAX_AMF_ID", "MAX_RAN_ID", "NGAP_PPID",
    "STAT_NAMES", "AmfPeer", "GatewayIdentity", "GnbPeer", "Limits", "Link", "NgapRouter",
    "PendingReset", "UeContext", "UeRecord", "slices_meet",
]

log = logging.getLogger("nfmesh.n2")


class NgapRouter(UeTable, AmfSelection, PoolProcedures, NgReset):
    """Routes NGAP between gNB links and AMF links (see the module doc).

    The state is set up here; the procedures come in parts: ``UeTable`` (ue_table.py: UE
    contexts, ids, replication, releases), ``AmfSelection`` (amf_selection.py),
    ``PoolProcedures`` (pool_procedures.py: NG Setup, configuration updates, status, overload
    indications, paging) and ``NgReset`` (ng_reset.py).  This class keeps the peers, the
    message dispatch of each side, UE-associated relaying both ways, timers and sending."""

    def __init__(self, identity: GatewayIdentity, limits: Limits = Limits(),
                 replica: int | None = None) -> None:
        self.identity = identity
        self.limits = limits
        self.amfs: list[AmfPeer] = []
        self.gnbs: list[GnbPeer] = []
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.overloaded = False
        self._init_ue_table(replica)
        self._gnb_by_global: dict[str, GnbPeer] = {}  # set-up gNBs by Global RAN Node ID
        self._next_index = 0
        self._advertised: list[c.Guami] = []
        self._resets: list[PendingReset] = []
        self._backup: dict[c.Guami, str] = {}  # unavailable GUAMI -> Backup AMF Name
        # the TAs the gateway announces to the AMFs (as their gNB): its own, then the gNBs'
        self._tas_to_amfs: dict[tuple[bytes, int], frozenset] = {
            (identity.plmn, identity.tac): frozenset()}
        self._profiles_differ = False  # AMFs serve different PLMN/slice sets
        self.clock = time.monotonic

    # ---- peers --------------------------------------------------------------------------

    def add_amf(self, link: Link, name: str, relative_capacity: int | None = None,
                pool: str = "", tacs: tuple[int, ...] = ()) -> AmfPeer:
        """A new AMF association is up: run the gateway's own NG Setup on it.  ``pool``
        names its configured AMF set, ``tacs`` the TACs that set serves (empty: any)."""
        self._next_index += 1
        amf = AmfPeer(name, link, self._next_index, configured_capacity=relative_capacity,
                      pool=pool, tacs=frozenset(tacs))
        self.amfs.append(amf)
        ident = self.identity
        self._send(link, c.ng_setup_request(ident.gnb_id, ident.plmn, ident.tac,
                                            ident.ran_node_name,
                                            ta_list=c.ta_list_of(self._tas_to_amfs)), 0)
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
        for pend in list(self._resets):
            if pend.origin is amf:
                self._resets.remove(pend)
            else:
                self._reset_part_done(pend, amf)
        self._pool_changed()
        self._update_overload()

    def gnb_lost(self, gnb: GnbPeer) -> None:
        gnb.up = False
        for key in [k for k, ue in self._by_gnb_ran.items() if ue.gnb is gnb]:
            ue = self._by_gnb_ran.pop(key)
            if ue.amf is not None and ue.amf.state == "up" and ue.amf_ue_id != NONE:
                self._set_state(ue, "gnb_lost")
                self._send(ue.amf.link, c.ue_context_release_request(
                    ue.amf_ue_id, ue.gw_ran_id, CAUSE_RADIO_LOST), ue.amf_stream)
            else:
                self._forget(ue)
        if gnb in self.gnbs:
            self.gnbs.remove(gnb)
        if self._gnb_by_global.get(gnb.global_id) is gnb:
            del self._gnb_by_global[gnb.global_id]
        for pend in list(self._resets):
            if pend.origin is gnb:
                self._resets.remove(pend)
            else:
                self._reset_part_done(pend, gnb)

    # ---- timers -----------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Run the timers (call about once a second): UE contexts stuck in a release (the
        gateway released them after an AMF failure, or asked the AMF after a gNB loss, and the
        Release Complete / Command never came) are dropped after ``ue_release_timeout_s``;
        NG Resets still waiting for a peer are acknowledged after ``reset_timeout_s``.
        Returns the number of UE contexts dropped (``stats['ue_contexts_expired']``)."""
        now = self.clock() if now is None else now
        limit = now - self.limits.ue_release_timeout_s
        stuck = [ue for ue in self._by_gw_ran.values()
                 if ue.state != "active" and ue.since <= limit]
        for ue in stuck:
            self._forget(ue)
        self.stats["ue_contexts_expired"] += len(stuck)
        for pend in [p for p in self._resets if p.deadline <= now]:
            self.stats["ng_reset_timeouts"] += 1
            pend.waiting.clear()
            self._reset_part_done(pend, None)
        if stuck and self.overloaded:
            self._update_overload()
        return len(stuck)

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

    # ---- gNB side -------------------------------------------------------------------------

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
            self._reset_from_gnb(gnb, data)
        elif pdu == c.SUCCESSFUL and proc == c.PROC_NG_RESET:
            self._reset_acknowledged(gnb)
        elif pdu == c.INITIATING and proc == c.PROC_RAN_CONFIGURATION_UPDATE:
            self._ran_configuration_update(gnb, data)
        elif proc == c.PROC_AMF_CONFIGURATION_UPDATE and pdu != c.INITIATING:
            if pdu == c.UNSUCCESSFUL:
                log.warning("gNB %d refused the AMF Configuration Update", gnb.index)
        else:
            self.stats["out_of_sequence"] += 1
            self._error(gnb.link, CAUSE_NOT_COMPATIBLE, stream)

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
        set_id = key[AMF_SET_ID]
        plmn, slices = self._requested(data) if set_id == NONE else (None, frozenset())
        amf = self.select_amf(set_id, key[AMF_POINTER], key[AMF_REGION], plmn, slices)
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
            self._overload_start(amf, data)
        elif pdu == c.INITIATING and proc == c.PROC_OVERLOAD_STOP:
            amf.overloaded = False
            amf.load_reduction = 0
            self._update_overload()
        elif pdu == c.INITIATING and proc == c.PROC_NG_RESET:
            self._reset_from_amf(amf, data)
        elif pdu == c.SUCCESSFUL and proc == c.PROC_NG_RESET:
            self._reset_acknowledged(amf)
        elif pdu == c.INITIATING and proc == c.PROC_AMF_CONFIGURATION_UPDATE:
            self._amf_configuration_update(amf, data)
        elif pdu == c.INITIATING and proc == c.PROC_PAGING:
            self._paging(data)
        elif pdu == c.INITIATING and proc == c.PROC_AMF_STATUS_INDICATION:
            self._amf_status_indication(amf, data)
        elif proc == c.PROC_RAN_CONFIGURATION_UPDATE and pdu != c.INITIATING:
            if pdu == c.UNSUCCESSFUL:
                log.warning("AMF %s refused the gateway's RAN Configuration Update", amf.name)
        else:
            self.stats["out_of_sequence"] += 1
            self._error(amf.link, CAUSE_NOT_COMPATIBLE, stream)

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
                if self.replicate is not None and ue.gnb.global_id:
                    self._publish(ue)
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
