"""The N2 router's vocabulary: its peers, who the gateway is, its limits, causes and counters.

``AmfPeer`` and ``GnbPeer`` are the associations the router holds (one per SCTP association,
registered by ``NgapRouter.add_amf`` / ``add_gnb``); an AMF peer answers the selection
questions about itself (does it take new UEs, serve this AMF set, this PLMN and slices).
``Link`` is all the router needs of an association: ``send`` and its outbound stream count.
``GatewayIdentity`` is who the gateway is toward AMFs (a gNB) and gNBs (the pool's AMF);
``Limits`` bounds the UE table and the timers.  No I/O here, and nothing of the router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.routing_key import NONE

NGAP_PPID = 60

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
