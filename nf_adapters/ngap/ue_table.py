"""The N2 router's UE table: UE contexts, their ids on both sides, replication and release.

A UE of the N2 proxy is ``(gNB, RAN UE NGAP ID) <-> (AMF, AMF UE NGAP ID)``; the gateway
allocates its own RAN UE ids toward the AMFs and AMF UE ids toward the gNBs (a replica in its
own range, so adopted UEs never collide), and finds a ``UeContext`` by any of the four.  An
established UE's record (``UeRecord``) is published through ``replicate`` so that another
replica can ``adopt`` the UEs of a gNB that reconnects to it.  When an AMF is lost its UEs are
released toward their gNBs (``_release_ues_of_amf``; the module doc of
``nf_adapters.ngap.ngap_router`` says why), and a context stuck in a release is dropped by the
router's ``sweep``.

``UeTable`` is one part of ``NgapRouter`` (a mixin: the router calls ``_init_ue_table`` and
owns the peers, ``stats``, ``clock`` and ``_send`` used here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.peers import (
    CAUSE_AMF_FAILURE,
    CAUSE_RADIO_LOST,
    AmfPeer,
    GnbPeer,
    Link,
)
from nf_adapters.ngap.routing_key import NONE

MAX_RAN_ID = 2**32 - 1
MAX_AMF_ID = 2**40 - 1

# a replicated UE record: (AMF name, AMF UE NGAP ID, gateway RAN UE id, gateway AMF UE id,
# gNB stream, AMF stream), stored under "<gNB global id>/<gNB RAN UE NGAP ID>"
UeRecord = tuple[str, int, int, int, int, int]


@dataclass(eq=False, slots=True)
class UeContext:
    """One UE: the ids and streams each side knows it by, and where its release stands."""

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


class UeTable:
    """The UE contexts of an ``NgapRouter`` and the operations on them."""

    # from the router
    amfs: list[AmfPeer]
    stats: dict[str, int]
    clock: Callable[[], float]
    _gnb_by_global: dict[str, GnbPeer]
    _send: Callable[[Link, bytes, int], None]

    def _init_ue_table(self, replica: int | None) -> None:
        """The empty table and id allocators (``replica``: 0..255, its own id range)."""
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

    # ---- contexts and ids -------------------------------------------------------------------

    def _set_state(self, ue: UeContext, state: str) -> None:
        ue.state = state
        ue.since = self.clock()

    @property
    def ue_count(self) -> int:
        return len(self._by_gw_ran)

    def ue_table(self) -> list[dict]:
        """A snapshot of the UE table (for tests, the CLI and debugging)."""
        return [{"gnb": ue.gnb.index, "gnb_ran_id": ue.gnb_ran_id, "gw_ran_id": ue.gw_ran_id,
                 "amf": ue.amf.name if ue.amf else None, "amf_ue_id": ue.amf_ue_id,
                 "gw_amf_id": ue.gw_amf_id, "gnb_stream": ue.gnb_stream,
                 "amf_stream": ue.amf_stream, "state": ue.state}
                for ue in self._by_gw_ran.values()]

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

    def releasing_count(self) -> int:
        """UE contexts waiting for a release to complete (the timer's gauge)."""
        return sum(1 for ue in self._by_gw_ran.values() if ue.state != "active")

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

    # ---- releases ---------------------------------------------------------------------------

    def gnb_lost_ue(self, ue: UeContext) -> None:
        """One UE of a gNB is gone (NG Reset from the gNB): tell its AMF."""
        self._by_gnb_ran.pop((ue.gnb.index, ue.gnb_ran_id), None)
        if ue.amf is not None and ue.amf.state == "up" and ue.amf_ue_id != NONE:
            self._set_state(ue, "gnb_lost")
            self._send(ue.amf.link, c.ue_context_release_request(
                ue.amf_ue_id, ue.gw_ran_id, CAUSE_RADIO_LOST), ue.amf_stream)
        else:
            self._forget(ue)

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
