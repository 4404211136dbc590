"""Which AMF takes a new UE: the N2 router's AMF selection (several AMF sets).

Among AMFs that are up, not overloaded and with an available GUAMI: the Backup AMF an AMF
Status Indication named for the UE's unavailable GUAMI; else those serving the AMF set (and
pointer) of the 5G-S-TMSI (or the AMFSetID IE); without one, those serving the UE's PLMN and
requested slices (read by pycrate only when the AMFs' PLMN/slice sets differ); then smooth
weighted round robin over relative capacity less the load reduction an AMF's Overload Start
asked for.  ``AmfSelection`` is one part of ``NgapRouter`` (a mixin over the router's
``amfs``, ``_backup`` and ``_profiles_differ``).
"""

from __future__ import annotations

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.peers import AmfPeer
from nf_adapters.ngap.routing_key import NONE


class AmfSelection:
    """AMF selection for new UEs (see the module doc)."""

    # from the router
    amfs: list[AmfPeer]
    _backup: dict[c.Guami, str]
    _profiles_differ: bool

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
