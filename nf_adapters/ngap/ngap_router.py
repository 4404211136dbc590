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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from nf_adapters.ngap import NgapDecodeError, extract, rewrite_ue_ids
from nf_adapters.ngap import codec as c
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
CAUSE_UNKNOWN_PLMN = ("misc", "unknown-PLMN-or-SNPN")
CAUSE_SLICE_NOT_SUPPORTED = ("radioNetwork", "slice-not-supported")


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
    ue_release_timeout_s: float = 10.0  # a releasing UE context is dropped after this
    reset_timeout_s: float = 5.0  # an NG Reset is acknowledged after this at the latest


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
    load_reduction: int = 0  # % from Overload Start's Traffic Load Reduction Indication
    ues: int = 0
    messages: int = 0
    pool: str = ""  # the configured AMF pool (set) it belongs to
    tacs: frozenset[int] = frozenset()  # TACs the pool serves (empty: any)
    slices: dict[bytes, frozenset] = field(default_factory=dict)  # PLMN -> {(SST, SD)}
    unavailable: set[c.Guami] = field(default_factory=set)  # from AMF Status Indication
    current: float = 0.0  # smooth weighted round robin state

    @property
    def capacity(self) -> int:
        return max(1, self.configured_capacity or self.relative_capacity)

    @property
    def weight(self) -> float:
        """Share of new UEs: relative capacity, less the load reduction the AMF asked for."""
        return self.capacity * (100 - self.load_reduction) / 100

    def available_guamis(self) -> list[c.Guami]:
        return [g for g in self.guamis if g not in self.unavailable]

    def takes_new_ues(self) -> bool:
        return (self.state == "up" and not self.overloaded
                and (not self.guamis or bool(self.available_guamis())))

    def serves_set(self, set_id: int, pointer: int = NONE, region: int = NONE) -> bool:
        return any(g.set_id == set_id and (pointer == NONE or g.pointer == pointer)
                   and (region == NONE or g.region_id == region)
                   for g in self.available_guamis())

    def serves(self, plmn: bytes | None, slices: frozenset) -> bool:
        """Serves the PLMN (when given) and, for it, at least one of ``slices`` (when any)."""
        if plmn is not None and self.slices and plmn not in self.slices:
            return False
        if not slices:
            return True
        offered = (self.slices.get(plmn, frozenset()) if plmn is not None
                   else frozenset().union(*self.slices.values()) if self.slices else frozenset())
        return not offered or slices_meet(slices, offered)


def slices_meet(wanted: frozenset, offered: frozenset) -> bool:
    """Some slice of ``wanted`` is in ``offered``; an absent SD on either side matches any SD
    of the same SST."""
    return any(w == o or (w[0] == o[0] and (w[1] is None or o[1] is None))
               for w in wanted for o in offered)


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
    tais: set[tuple[bytes, int]] = field(default_factory=set)  # (PLMN, TAC) it serves
    global_id: str = ""  # its Global RAN Node ID (from NG Setup): the key of its UEs' records


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
    since: float = 0.0  # when it entered ``state`` (the release timer)
    replicated: bool = False  # its record is in the shared UE store


@dataclass(eq=False, slots=True)
class PendingReset:
    """An NG Reset the gateway relayed: acknowledged to ``origin`` once every peer in
    ``waiting`` has acknowledged its part (or at ``deadline``)."""

    origin: object  # GnbPeer | AmfPeer
    items: list[tuple[int | None, int | None]] | None  # the origin's list; None: whole NG
    waiting: set = field(default_factory=set)
    deadline: float = 0.0


STAT_NAMES = (
    "messages_from_gnb", "messages_from_amf", "forwarded_uplink", "forwarded_downlink",
    "decode_errors", "unknown_ue", "out_of_sequence", "ppid_mismatch", "error_indications_sent",
    "error_indications_received", "rejected_overload", "ues_released_amf_failure",
    "overload_starts_sent", "overload_stops_sent", "send_failures", "ng_setups_answered",
    "initial_ue_messages", "ue_context_releases", "amf_configuration_updates_sent",
    "ng_setup_failures", "ng_resets_from_gnb", "ng_resets_from_amf", "ng_reset_timeouts",
    "paging_delivered", "paging_unrouted", "amf_status_indications", "ue_contexts_expired",
    "ran_configuration_updates", "amf_configuration_updates_received", "ues_adopted",
    "ran_configuration_updates_sent",
)

# a replicated UE record: (AMF name, AMF UE NGAP ID, gateway RAN UE id, gateway AMF UE id,
# gNB stream, AMF stream), stored under "<gNB global id>/<gNB RAN UE NGAP ID>"
UeRecord = tuple[str, int, int, int, int, int]


class NgapRouter:
    """Routes NGAP between gNB links and AMF links (see the module doc)."""

    def __init__(self, identity: GatewayIdentity, limits: Limits = Limits(),
                 replica: int | None = None) -> None:
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
        # replicas share the AMFs' view of one gNB: each allocates ids in its own range
        # (replica number in the top 8 bits), so adopted UEs never collide with local ones
        self.replica = replica
        if replica is None:
            self._ran_lo, self._ran_hi, self._amf_lo, self._amf_hi = 1, MAX_RAN_ID, 1, MAX_AMF_ID
        else:
            if not 0 <= replica <= 255:
                raise ValueError("replica must be 0..255")
            self._ran_lo, self._ran_hi = (replica << 24) | 1, (replica << 24) | 0xFFFFFF
            self._amf_lo, self._amf_hi = (replica << 32) | 1, (replica << 32) | 0xFFFFFFFF
        self._next_ran = self._ran_lo
        self._next_amf = self._amf_lo
        # replication: ``replicate(key, record or None)`` is called when an established UE's
        # record appears or goes; ``standby`` holds the other replicas' records by gNB
        self.replicate: Callable[[str, UeRecord | None], None] | None = None
        self.standby: dict[str, dict[int, UeRecord]] = {}
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

    def _set_state(self, ue: UeContext, state: str) -> None:
        ue.state = state
        ue.since = self.clock()

    # ---- replication ------------------------------------------------------------------------

    def _publish(self, ue: UeContext) -> None:
        assert ue.amf is not None and self.replicate is not None
        ue.replicated = True
        self.replicate(f"{ue.gnb.global_id}/{ue.gnb_ran_id}",
                       (ue.amf.name, ue.amf_ue_id, ue.gw_ran_id, ue.gw_amf_id,
                        ue.gnb_stream, ue.amf_stream))

    def established(self) -> list[tuple[str, UeRecord]]:
        """(key, record) of every UE this replica publishes (to write them all again)."""
        return [(f"{ue.gnb.global_id}/{ue.gnb_ran_id}",
                 (ue.amf.name, ue.amf_ue_id, ue.gw_ran_id, ue.gw_amf_id, ue.gnb_stream,
                  ue.amf_stream))
                for ue in self._by_gw_ran.values() if ue.replicated and ue.amf is not None]

    def standby_update(self, key: str, record: UeRecord | None) -> None:
        """Another replica's UE record appeared (``record``) or went (None)."""
        gnb_id, _, ran = key.rpartition("/")
        try:
            ran_id = int(ran)
        except ValueError:
            return
        if record is None:
            recs = self.standby.get(gnb_id)
            if recs is not None:
                recs.pop(ran_id, None)
                if not recs:
                    del self.standby[gnb_id]
        else:
            self.standby.setdefault(gnb_id, {})[ran_id] = tuple(record)  # type: ignore[assignment]
            gnb = self._gnb_by_global.get(gnb_id)
            if gnb is not None and gnb.up and gnb.setup:  # it reconnected before the record
                self.adopt(gnb)                           # arrived: adopt it now

    def adopt(self, gnb: GnbPeer) -> int:
        """Take over the established UEs another replica held for this gNB (it reconnected
        here after that replica died): each goes back into the tables with the ids both sides
        know, on the AMF of the same name, and its record is now this replica's."""
        recs = self.standby.pop(gnb.global_id, None)
        if not recs:
            return 0
        by_name = {a.name: a for a in self.amfs if a.state == "up"}
        adopted = 0
        for ran, (amf_name, amf_ue_id, gw_ran, gw_amf, g_stream, a_stream) in recs.items():
            amf = by_name.get(amf_name)
            if (amf is None or gw_ran in self._by_gw_ran or gw_amf in self._by_gw_amf
                    or (gnb.index, ran) in self._by_gnb_ran):
                continue
            out = amf.link.out_streams
            ue = UeContext(gnb, ran, g_stream, gw_ran, amf,
                           a_stream if a_stream < out else 1 + gw_ran % (out - 1) if out > 1
                           else 0, amf_ue_id, gw_amf)
            self._by_gnb_ran[(gnb.index, ran)] = ue
            self._by_gw_ran[gw_ran] = ue
            self._by_gw_amf[gw_amf] = ue
            self._by_amf_ue[(amf.index, amf_ue_id)] = ue
            amf.ues += 1
            gnb.ues += 1
            adopted += 1
            if self.replicate is not None:
                self._publish(ue)
        self.stats["ues_adopted"] += adopted
        return adopted

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

    def releasing_count(self) -> int:
        """UE contexts waiting for a release to complete (the timer's gauge)."""
        return sum(1 for ue in self._by_gw_ran.values() if ue.state != "active")

    # ---- ids and tables -----------------------------------------------------------------

    @property
    def ue_count(self) -> int:
        return len(self._by_gw_ran)

    def _alloc_ran(self) -> int:
        for _ in range(len(self._by_gw_ran) + 1):
            v = self._next_ran
            self._next_ran = v + 1 if v < self._ran_hi else self._ran_lo
            if v not in self._by_gw_ran:
                return v
        raise RuntimeError("RAN UE NGAP id space exhausted")

    def _alloc_amf(self) -> int:
        for _ in range(len(self._by_gw_amf) + 1):
            v = self._next_amf
            self._next_amf = v + 1 if v < self._amf_hi else self._amf_lo
            if v not in self._by_gw_amf:
                return v
        raise RuntimeError("AMF UE NGAP id space exhausted")

    def _forget(self, ue: UeContext) -> None:
        if ue.replicated:
            ue.replicated = False
            if self.replicate is not None:
                self.replicate(f"{ue.gnb.global_id}/{ue.gnb_ran_id}", None)
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

    def select_amf(self, set_id: int = NONE, pointer: int = NONE, region: int = NONE,
                   plmn: bytes | None = None, slices: frozenset = frozenset()
                   ) -> AmfPeer | None:
        """The AMF for a new UE (see the module doc); None when none can take it."""
        candidates = [a for a in self.amfs if a.takes_new_ues()]
        if not candidates:
            return None
        if set_id != NONE:
            backup = self._backup_for(candidates, set_id, pointer, region)
            if backup is not None:
                return backup
            exact = [a for a in candidates if a.serves_set(set_id, pointer, region)]
            in_set = exact or [a for a in candidates if a.serves_set(set_id, NONE, region)]
            if in_set:
                candidates = in_set
        elif plmn is not None or slices:
            fit = [a for a in candidates if a.serves(plmn, slices)]
            if fit:
                candidates = fit
        return self._weighted_pick(candidates)

    def _backup_for(self, candidates: list[AmfPeer], set_id: int, pointer: int,
                     region: int) -> AmfPeer | None:
        """The Backup AMF an AMF Status Indication named for the UE's (unavailable) GUAMI,
        when it can take the UE and no AMF still serves that GUAMI."""
        if not self._backup or pointer == NONE:
            return None
        for g, name in self._backup.items():
            if g.set_id == set_id and g.pointer == pointer and region in (NONE, g.region_id):
                if any(a.serves_set(set_id, pointer, region) for a in candidates):
                    return None
                return next((a for a in candidates if a.amf_name == name), None)
        return None

    @staticmethod
    def _weighted_pick(candidates: list[AmfPeer]) -> AmfPeer:
        """Smooth weighted round robin (nginx's): each candidate gains its weight, the one
        with the most is chosen and pays the total.  Over any run of picks each AMF gets its
        share of ``weight`` (relative capacity less its requested load reduction), interleaved,
        whether UEs arrive together or one at a time."""
        if len(candidates) == 1:
            return candidates[0]
        total = 0.0
        best = candidates[0]
        for a in candidates:
            a.current += a.weight
            total += a.weight
            if a.current > best.current:
                best = a
        best.current -= total
        return best

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

    def gnb_lost_ue(self, ue: UeContext) -> None:
        """One UE of a gNB is gone (NG Reset from the gNB): tell its AMF."""
        self._by_gnb_ran.pop((ue.gnb.index, ue.gnb_ran_id), None)
        if ue.amf is not None and ue.amf.state == "up" and ue.amf_ue_id != NONE:
            self._set_state(ue, "gnb_lost")
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
            guamis += [g for g in a.available_guamis() if g not in guamis]
            plmns += [p for p in a.plmns if p not in plmns]
        if not plmns:
            plmns = [self.identity.plmn]
        capacity = self.identity.relative_capacity
        if capacity is None:
            capacity = min(255, sum(a.capacity for a in up))
        return guamis, plmns, capacity

    def _pool_changed(self) -> None:
        """Tell set-up gNBs when the served GUAMIs change (an AMF came or went, or declared
        GUAMIs unavailable): AMF Configuration Update, as the AMF itself would (TS 38.413
        §8.7.3)."""
        up = [a for a in self.amfs if a.state == "up"]
        self._profiles_differ = len({(frozenset(a.plmns), tuple(sorted(
            (p, tuple(sorted(v, key=repr))) for p, v in a.slices.items())))
            for a in up}) > 1
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
            self.stats["ng_setup_failures"] += 1
            self._send(gnb.link, c.ng_setup_failure(("misc", "om-intervention"), "v5s"), 0)
            return
        try:
            tas = c.supported_tas(msg.ies.get(c.IE_SUPPORTED_TA_LIST, []))
        except (KeyError, TypeError, ValueError):
            tas = []
        cause = self.check_tas(tas)
        if cause is not None:
            self.stats["ng_setup_failures"] += 1
            log.warning("gNB %d (%s): NG Setup refused, %s", gnb.index, gnb.name, cause[1])
            self._send(gnb.link, c.ng_setup_failure(cause, None), 0)
            return
        gnb.tais = {(p, t) for p, t, _s in tas}
        self._announce_tas(tas)
        gnb.global_id = c.ran_node_key(msg.ies.get(c.IE_GLOBAL_RAN_NODE_ID))
        if gnb.global_id:
            self._gnb_by_global[gnb.global_id] = gnb
        guamis, plmns, capacity = self._pool_view()
        self._advertised = guamis
        gnb.setup = True
        if gnb.global_id in self.standby:
            n = self.adopt(gnb)
            log.info("gNB %s: %d UE(s) adopted from another replica", gnb.global_id, n)
        self._send(gnb.link, c.ng_setup_response(self.identity.pool_name, guamis, capacity,
                                                 plmns), 0)
        if self.overloaded:
            self._send(gnb.link, c.overload_start(), 0)

    def check_tas(self, tas: list[tuple[bytes, int, frozenset]]) -> tuple[str, str] | None:
        """Whether the pool serves a gNB's Supported TA List [(PLMN, TAC, slices), ...], as
        an AMF checks NG Setup (TS 38.413 §8.7.1.4; TS 23.501 §5.15): None when some TA
        is served, else the cause for NG Setup Failure.  No broadcast PLMN the AMFs serve, or
        none of those TAs in a TAC the pool serves: misc/unknown-PLMN-or-SNPN (TS 38.413 has
        no TAC cause; Open5GS's AMF answers the same).  No slice in common with the AMFs'
        for those TAs: radioNetwork/slice-not-supported."""
        up = [a for a in self.amfs if a.state == "up"]
        served: dict[bytes, set] = {}
        for a in up:
            for p in a.plmns or [self.identity.plmn]:
                served.setdefault(p, set()).update(a.slices.get(p, ()))
        in_plmn = [t for t in tas if t[0] in served]
        if not in_plmn:
            return CAUSE_UNKNOWN_PLMN
        in_tac = [t for t in in_plmn
                  if any(not a.tacs or t[1] in a.tacs for a in up
                         if t[0] in (a.plmns or [self.identity.plmn]))]
        if not in_tac:
            return CAUSE_UNKNOWN_PLMN
        if not any(not t[2] or not served[t[0]] or slices_meet(t[2], frozenset(served[t[0]]))
                   for t in in_tac):
            return CAUSE_SLICE_NOT_SUPPORTED
        return None

    def _ran_configuration_update(self, gnb: GnbPeer, data: bytes) -> None:
        """RAN Configuration Update (TS 38.413 §8.7.2): a new Supported TA List is checked as
        at NG Setup and, when served, replaces the TAs paging is routed by."""
        self.stats["ran_configuration_updates"] += 1
        try:
            ies = c.decode(data).ies
            tas = c.supported_tas(ies[c.IE_SUPPORTED_TA_LIST]) if (
                c.IE_SUPPORTED_TA_LIST in ies) else None
        except (c.NgapCodecError, KeyError, TypeError, ValueError):
            self.stats["decode_errors"] += 1
            self._error(gnb.link, CAUSE_TRANSFER_SYNTAX, 0)
            return
        if tas is not None:
            cause = self.check_tas(tas)
            if cause is not None:
                self._send(gnb.link, c.encode(c.UNSUCCESSFUL, c.PROC_RAN_CONFIGURATION_UPDATE,
                                              [(c.IE_CAUSE, cause)]), 0)
                return
            gnb.tais = {(p, t) for p, t, _s in tas}
            self._announce_tas(tas)
        self._send(gnb.link, c.encode(c.SUCCESSFUL, c.PROC_RAN_CONFIGURATION_UPDATE, []), 0)

    def _announce_tas(self, tas: list[tuple[bytes, int, frozenset]]) -> None:
        """Propagate to the AMFs the TAs (and slices) the gNBs behind the gateway serve: a RAN
        Configuration Update (TS 38.413 §8.7.2) when a gNB brings a TA or slice the AMFs have
        not heard of, so that they page there (TAs are only added: a TA another gNB still
        serves must stay)."""
        changed = False
        for p, t, slices in tas:
            old = self._tas_to_amfs.get((p, t), frozenset())
            if (p, t) not in self._tas_to_amfs or not slices <= old:
                self._tas_to_amfs[(p, t)] = old | slices
                changed = True
        if not changed:
            return
        msg = c.encode(c.INITIATING, c.PROC_RAN_CONFIGURATION_UPDATE, [
            (c.IE_SUPPORTED_TA_LIST, c.ta_list_of(self._tas_to_amfs))])
        for amf in self.amfs:
            if amf.state == "up":
                self.stats["ran_configuration_updates_sent"] += 1
                self._send(amf.link, msg, 0)

    def _requested(self, data: bytes) -> tuple[bytes | None, frozenset]:
        """PLMN (of the TAI in the User Location Information) and slices (Allowed NSSAI) of an
        InitialUEMessage without a 5G-S-TMSI: decoded by pycrate only when the AMFs serve
        different PLMNs or slices (else the answer would not change the choice)."""
        if not self._profiles_differ:
            return None, frozenset()
        try:
            ies = c.decode(data).ies
        except c.NgapCodecError:
            return None, frozenset()
        plmn = None
        uli = ies.get(c.IE_USER_LOCATION_INFORMATION)
        if uli and isinstance(uli[1], dict) and "tAI" in uli[1]:
            plmn = uli[1]["tAI"]["pLMNIdentity"]
        slices = frozenset(c.slice_key(i) for i in ies.get(c.IE_ALLOWED_NSSAI, []))
        return plmn, slices

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
        self._learn_plmns(amf, ies)
        amf.relative_capacity = int(ies.get(c.IE_RELATIVE_AMF_CAPACITY, 1))
        amf.state = "up"
        self._pool_changed()
        self._update_overload()

    @staticmethod
    def _learn_plmns(amf: AmfPeer, ies: dict) -> None:
        items = ies.get(c.IE_PLMN_SUPPORT_LIST, [])
        amf.plmns = [item["pLMNIdentity"] for item in items]
        amf.slices = {item["pLMNIdentity"]: frozenset(
            c.slice_key(i) for i in item.get("sliceSupportList", [])) for item in items}

    def _overload_start(self, amf: AmfPeer, data: bytes) -> None:
        """Overload Start: with a Traffic Load Reduction Indication the AMF keeps getting new
        UEs at that much less weight; without one it gets none until Overload Stop."""
        reduction = None
        try:
            reduction = c.decode(data).ies.get(c.IE_AMF_TRAFFIC_LOAD_REDUCTION)
        except c.NgapCodecError:
            pass
        if reduction:
            amf.overloaded = False
            amf.load_reduction = max(1, min(99, int(reduction)))
        else:
            amf.overloaded = True
        self._update_overload()

    def _amf_configuration_update(self, amf: AmfPeer, data: bytes) -> None:
        """AMF Configuration Update (TS 38.413 §8.7.3) from one AMF: its served GUAMIs (which
        become available again), PLMNs/slices and relative capacity are taken over; the gNBs
        hear of the pool's change through the gateway's own AMF Configuration Update."""
        self.stats["amf_configuration_updates_received"] += 1
        try:
            ies = c.decode(data).ies
            if c.IE_SERVED_GUAMI_LIST in ies:
                amf.guamis = [c.Guami.from_value(i["gUAMI"]) for i in ies[c.IE_SERVED_GUAMI_LIST]]
                amf.unavailable -= set(amf.guamis)
                for g in amf.guamis:
                    self._backup.pop(g, None)
            if c.IE_PLMN_SUPPORT_LIST in ies:
                self._learn_plmns(amf, ies)
            if c.IE_RELATIVE_AMF_CAPACITY in ies:
                amf.relative_capacity = int(ies[c.IE_RELATIVE_AMF_CAPACITY])
        except (c.NgapCodecError, KeyError, TypeError, ValueError):
            self.stats["decode_errors"] += 1
            self._error(amf.link, CAUSE_TRANSFER_SYNTAX, 0)
            return
        self._send(amf.link, c.encode(c.SUCCESSFUL, c.PROC_AMF_CONFIGURATION_UPDATE, []), 0)
        self._pool_changed()
        self._update_overload()

    def _amf_status_indication(self, amf: AmfPeer, data: bytes) -> None:
        """AMF Status Indication (TS 38.413 §8.7.6, TS 23.501 §5.21.2.2): the listed GUAMIs
        are unavailable (whichever AMF of the pool serves them).  New UEs, including those
        whose 5G-S-TMSI names such a GUAMI, go to other AMFs (of the same set first); UEs
        already there stay until their AMF releases them.  An AMF left without an available
        GUAMI takes no new UEs; the gNBs get an AMF Configuration Update without them."""
        self.stats["amf_status_indications"] += 1
        try:
            items = c.decode(data).ies.get(c.IE_UNAVAILABLE_GUAMI_LIST, [])
            gone = {c.Guami.from_value(i["gUAMI"]) for i in items}
            for i in items:
                if i.get("backupAMFName"):
                    self._backup[c.Guami.from_value(i["gUAMI"])] = i["backupAMFName"]
        except (c.NgapCodecError, KeyError, TypeError):
            self.stats["decode_errors"] += 1
            self._error(amf.link, CAUSE_TRANSFER_SYNTAX, 0)
            return
        for a in self.amfs:
            a.unavailable |= gone & set(a.guamis)
        self._pool_changed()
        self._update_overload()

    def _paging(self, data: bytes) -> None:
        """Paging (TS 38.413 §8.5.1) goes to the set-up gNBs that serve a TAI of its TAI List
        for Paging (from their NG Setup / RAN Configuration Update)."""
        try:
            tais = c.paging_tais(c.decode(data).ies)
        except (c.NgapCodecError, KeyError, TypeError):
            self.stats["decode_errors"] += 1
            return
        sent = 0
        for gnb in self.gnbs:
            if gnb.setup and gnb.up and gnb.tais & tais:
                self._send(gnb.link, data, 0)
                sent += 1
        self.stats["paging_delivered"] += sent
        if not sent:
            self.stats["paging_unrouted"] += 1

    # ---- NG Reset ---------------------------------------------------------------------------

    def _decode_reset(self, link: Link, data: bytes
                      ) -> tuple[tuple[str, str], list[tuple[int | None, int | None]] | None] | None:
        """(cause, the per-UE list or None for the whole interface); None when undecodable."""
        try:
            ies = c.decode(data).ies
            rtype = ies[c.IE_RESET_TYPE]
            cause = ies.get(c.IE_CAUSE, ("misc", "unspecified"))
            items = c.reset_items(rtype[1]) if rtype[0] == "partOfNG-Interface" else None
        except (c.NgapCodecError, KeyError, TypeError, IndexError):
            self.stats["decode_errors"] += 1
            self._error(link, CAUSE_TRANSFER_SYNTAX, 0)
            return None
        return cause, items

    def _reset_from_gnb(self, gnb: GnbPeer, data: bytes) -> None:
        """NG Reset from a gNB (TS 38.413 §8.7.4.2.2).  Each AMF shares its association with
        other gNBs, so the gateway sends each AMF concerned an NG Reset of its part only (the
        UEs' ids as that AMF knows them: its AMF UE id, the gateway's RAN UE id), drops the
        contexts, and acknowledges to the gNB (with its per-UE list as received) once every
        AMF concerned has acknowledged."""
        self.stats["ng_resets_from_gnb"] += 1
        got = self._decode_reset(gnb.link, data)
        if got is None:
            return
        cause, items = got
        if items is None:
            ues = [ue for ue in self._by_gw_ran.values() if ue.gnb is gnb]
        else:
            ues = []
            for amf_id, ran_id in items:
                ue = self._by_gw_amf.get(amf_id) if amf_id is not None else None
                if ue is None and ran_id is not None:
                    ue = self._by_gnb_ran.get((gnb.index, ran_id))
                if ue is not None and ue.gnb is gnb and ue not in ues:
                    ues.append(ue)
        parts: dict[AmfPeer, list[tuple[int | None, int | None]]] = {}
        for ue in ues:
            amf = ue.amf
            if amf is not None and amf.state == "up" and ue.state != "gnb_lost":
                parts.setdefault(amf, []).append(
                    (ue.amf_ue_id if ue.amf_ue_id != NONE else None, ue.gw_ran_id))
            self._forget(ue)
        for amf, part in parts.items():
            self._send(amf.link, c.ng_reset_part(part, cause), 0)
        self._start_reset(gnb, items, set(parts))

    def _reset_from_amf(self, amf: AmfPeer, data: bytes) -> None:
        """NG Reset from an AMF (TS 38.413 §8.7.4.2.1): whole interface = every UE of that
        AMF, else its per-UE list (its AMF UE ids, the gateway's RAN UE ids).  Each gNB
        concerned gets an NG Reset of its UEs (the ids it knows: the gateway's AMF UE id, its
        RAN UE id); the AMF's acknowledgement waits for theirs."""
        self.stats["ng_resets_from_amf"] += 1
        got = self._decode_reset(amf.link, data)
        if got is None:
            return
        cause, items = got
        if items is None:
            ues = [ue for ue in self._by_gw_ran.values() if ue.amf is amf]
        else:
            ues = []
            for amf_id, ran_id in items:
                ue = self._by_amf_ue.get((amf.index, amf_id)) if amf_id is not None else None
                if ue is None and ran_id is not None:
                    ue = self._by_gw_ran.get(ran_id)
                if ue is not None and ue.amf is amf and ue not in ues:
                    ues.append(ue)
        parts: dict[GnbPeer, list[tuple[int | None, int | None]]] = {}
        for ue in ues:
            if ue.gnb.up and ue.gnb.setup and ue.state == "active":
                if ue.gw_amf_id == NONE:
                    part_id = None
                else:
                    part_id = ue.gw_amf_id
                parts.setdefault(ue.gnb, []).append((part_id, ue.gnb_ran_id))
            self._forget(ue)
        for gnb, part in parts.items():
            self._send(gnb.link, c.ng_reset_part(part, cause), 0)
        self._start_reset(amf, items, set(parts))
        self._update_overload()

    def _start_reset(self, origin: GnbPeer | AmfPeer, items: list | None, waiting: set) -> None:
        pend = PendingReset(origin, items, waiting, self.clock() + self.limits.reset_timeout_s)
        if waiting:
            self._resets.append(pend)
        else:
            self._finish_reset(pend)

    def _reset_acknowledged(self, peer: GnbPeer | AmfPeer) -> None:
        """A peer's NG Reset Acknowledge: the oldest reset waiting for it."""
        for pend in self._resets:
            if peer in pend.waiting:
                self._reset_part_done(pend, peer)
                return

    def _reset_part_done(self, pend: PendingReset, peer: object) -> None:
        pend.waiting.discard(peer)
        if not pend.waiting and pend in self._resets:
            self._resets.remove(pend)
            self._finish_reset(pend)

    def _finish_reset(self, pend: PendingReset) -> None:
        link = pend.origin.link  # type: ignore[attr-defined]
        self._send(link, c.ng_reset_acknowledge(pend.items), 0)

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
            self._set_state(ue, "releasing")
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

