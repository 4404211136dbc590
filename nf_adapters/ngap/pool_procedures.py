"""The N2 router's non-UE-associated procedures: how the gateway stands for the AMF pool.

Toward gNBs the gateway answers NG Setup itself (checking the gNB's Supported TA List against
what the AMFs serve, ``check_tas``), takes RAN Configuration Updates, tells them when the pool's
GUAMIs change (AMF Configuration Update) and delivers Paging to the gNBs serving a TAI of it.
Toward AMFs it reads their NG Setup answers, AMF Configuration Updates, AMF Status Indications
and Overload Start, and announces the TAs its gNBs serve (RAN Configuration Update).  The
module doc of ``nf_adapters.ngap.ngap_router`` describes the behaviour; ``PoolProcedures`` is
one part of ``NgapRouter`` (a mixin over the router's peers, ``stats``, ``_send``, ``_error``,
``_broadcast_gnbs`` and ``_update_overload``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.peers import (
    CAUSE_SLICE_NOT_SUPPORTED,
    CAUSE_TRANSFER_SYNTAX,
    CAUSE_UNKNOWN_PLMN,
    AmfPeer,
    GatewayIdentity,
    GnbPeer,
    Link,
    slices_meet,
)
from nf_adapters.ngap.ue_table import UeRecord

log = logging.getLogger("nfmesh.n2")


class PoolProcedures:
    """NG Setup, configuration updates, status, overload and paging (see the module doc)."""

    # from the router
    identity: GatewayIdentity
    amfs: list[AmfPeer]
    gnbs: list[GnbPeer]
    stats: dict[str, int]
    overloaded: bool
    standby: dict[str, dict[int, UeRecord]]
    _gnb_by_global: dict[str, GnbPeer]
    _advertised: list[c.Guami]
    _backup: dict[c.Guami, str]
    _tas_to_amfs: dict[tuple[bytes, int], frozenset]
    _profiles_differ: bool
    _send: Callable[[Link, bytes, int], None]
    _error: Callable[..., None]
    _broadcast_gnbs: Callable[[bytes], None]
    _update_overload: Callable[[], None]
    adopt: Callable[[GnbPeer], int]

    # ---- toward gNBs ------------------------------------------------------------------------

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

    # ---- from AMFs --------------------------------------------------------------------------

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
