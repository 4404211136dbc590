"""NGAP message templates: encoded by pycrate once, then stamped with ids by the fast path.

pycrate costs hundreds of µs per message; the emulated gNBs and AMFs (and any high-rate answer)
need the same few messages with different UE ids and NAS payloads.  A template is a pycrate
encoding with placeholder values; ``stamp`` splices the UE ids with ``rewrite_ue_ids`` and
replaces a fixed-length NAS placeholder byte for byte (an OCTET STRING of the same length
keeps every APER length unchanged).  tests/test_ngap_templates.py checks stamped messages
against pycrate encodings of the same values.
"""

from __future__ import annotations

from nf_adapters.ngap import codec as c
from nf_adapters.ngap import rewrite_ue_ids

NAS_LEN = 24
_PLACEHOLDER = b"\x7e\x00" + b"\xa5" * (NAS_LEN - 2)


def nas_tag(text: str) -> bytes:
    """A NAS-PDU of exactly ``NAS_LEN`` bytes naming a UE (what the emulators echo)."""
    raw = b"\x7e\x00" + text.encode()[: NAS_LEN - 2]
    return raw + b"\x00" * (NAS_LEN - len(raw))


class Template:
    """One message with placeholder ids (and optionally a placeholder NAS-PDU)."""

    __slots__ = ("data", "has_nas")

    def __init__(self, data: bytes, has_nas: bool) -> None:
        self.data = data
        self.has_nas = has_nas

    def stamp(self, ran_ue_id: int = -1, amf_ue_id: int = -1, nas: bytes | None = None) -> bytes:
        out = self.data
        if self.has_nas and nas is not None:
            if len(nas) != NAS_LEN:
                raise ValueError(f"template NAS must be {NAS_LEN} bytes")
            out = out.replace(_PLACEHOLDER, nas, 1)
        return rewrite_ue_ids(out, ran_ue_id, amf_ue_id)


class UeTemplates:
    """The UE-associated messages of a registration, for one PLMN (and one AMF's GUAMI)."""

    def __init__(self, plmn: bytes, guami: c.Guami | None = None, cell_id: int = 1) -> None:
        g = guami or c.Guami(plmn, 1, 1, 1)
        p = _PLACEHOLDER
        self.initial_ue = Template(c.initial_ue_message(1, p, plmn, cell_id), True)
        self.downlink_nas = Template(c.downlink_nas(1, 1, p), True)
        self.uplink_nas = Template(c.uplink_nas(1, 1, p, plmn, cell_id), True)
        self.ics_request = Template(c.initial_context_setup_request(1, 1, g, p), True)
        self.ics_response = Template(c.initial_context_setup_response(1, 1), False)
        self.release_command = Template(c.ue_context_release_command(1, 1), False)
        self.release_complete = Template(c.ue_context_release_complete(1, 1), False)


def find_nas(data: bytes) -> bytes | None:
    """The emulators' NAS tag inside a message (it starts with 0x7e 0x00), without decoding."""
    i = data.find(b"\x7e\x00")
    while i >= 0:
        if i + NAS_LEN <= len(data) and i >= 1 and data[i - 1] == NAS_LEN:
            return data[i:i + NAS_LEN]
        i = data.find(b"\x7e\x00", i + 1)
    return None
