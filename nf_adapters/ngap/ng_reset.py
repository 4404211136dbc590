"""NG Reset through the N2 router, either way, whole interface or per-UE list.

Each peer concerned on the other side gets an NG Reset of its own UEs (a partial one: its
association carries other peers' UEs too) with the ids it knows, the contexts are dropped at
once, and the origin's NG Reset Acknowledge (echoing its list) is sent when all have
acknowledged, or after ``Limits.reset_timeout_s`` (the router's ``sweep``).  ``NgReset`` is one
part of ``NgapRouter`` (a mixin over the router's UE table, ``stats``, ``clock``, ``_send``,
``_error`` and ``_update_overload``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.peers import CAUSE_TRANSFER_SYNTAX, AmfPeer, GnbPeer, Limits, Link
from nf_adapters.ngap.routing_key import NONE
from nf_adapters.ngap.ue_table import UeContext


@dataclass(eq=False, slots=True)
class PendingReset:
    """An NG Reset the gateway relayed: acknowledged to ``origin`` once every peer in
    ``waiting`` has acknowledged its part (or at ``deadline``)."""

    origin: object  # GnbPeer | AmfPeer
    items: list[tuple[int | None, int | None]] | None  # the origin's list; None: whole NG
    waiting: set = field(default_factory=set)
    deadline: float = 0.0


class NgReset:
    """NG Reset from gNBs and AMFs (see the module doc)."""

    # from the router
    limits: Limits
    stats: dict[str, int]
    clock: Callable[[], float]
    _resets: list[PendingReset]
    _by_gnb_ran: dict[tuple[int, int], UeContext]
    _by_gw_ran: dict[int, UeContext]
    _by_gw_amf: dict[int, UeContext]
    _by_amf_ue: dict[tuple[int, int], UeContext]
    _send: Callable[[Link, bytes, int], None]
    _error: Callable[..., None]
    _forget: Callable[[UeContext], None]
    _update_overload: Callable[[], None]

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
