"""NGAP routing keys without a full decode: the pure-Python twin of ``nf_adapters._ngap_fast``.

The N2 proxy needs only a few fields of each message, and they sit at fixed places in the
APER encoding (X.691 aligned PER) of TS 38.413::

    NGAP-PDU CHOICE (ext bit, 2-bit index, padding)       -> byte 0: 0x00 / 0x20 / 0x40
    procedureCode INTEGER (0..255)                         -> byte 1
    criticality ENUMERATED                                 -> byte 2 (2 bits + padding)
    value: open type = length determinant + message        -> bytes 3..
      message SEQUENCE { protocolIEs, ... }: ext bit byte, 16-bit IE count
      each IE: id (16 bits), criticality (1 byte), open type (length + value)

``extract(data)`` walks the IE list by lengths (skipping what it does not need) and returns
the routing key as a tuple (field indices below); ``rewrite_ue_ids`` re-encodes the two UE
NGAP ids (their APER length varies with the value) and fixes the enclosing lengths.  Both
raise ``NgapDecodeError`` on anything they cannot read; the proxy answers that with an
ErrorIndication.  pycrate is the oracle for both in tests/test_ngap_routing_key.py.

Limits (documented, tested): fragmented lengths (a message of 16 KiB or more) are refused;
ids are read only from the top-level IEs (RAN-UE-NGAP-ID 85, AMF-UE-NGAP-ID 10,
UE-NGAP-IDs 114, FiveG-S-TMSI 26, GUAMI 28, AMFSetID 3).
"""

from __future__ import annotations


class NgapDecodeError(ValueError):
    """The bytes are not an NGAP message the fast path can read."""


# the routing-key tuple
PDU_TYPE, PROCEDURE_CODE, RAN_UE_ID, AMF_UE_ID, AMF_SET_ID, AMF_POINTER, TMSI, AMF_REGION = range(8)
KEY_FIELDS = ("pdu_type", "procedure_code", "ran_ue_ngap_id", "amf_ue_ngap_id", "amf_set_id",
              "amf_pointer", "five_g_tmsi", "amf_region_id")
NONE = -1  # an absent field

_IE_AMF_SET_ID = 3
_IE_AMF_UE = 10
_IE_FIVEG_S_TMSI = 26
_IE_GUAMI = 28
_IE_RAN_UE = 85
_IE_UE_NGAP_IDS = 114


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """APER unconstrained length determinant at ``pos`` -> (length, position after it)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    if b < 0xC0:
        return ((b & 0x3F) << 8) | data[pos + 1], pos + 2
    raise NgapDecodeError("fragmented length (message of 16 KiB or more)")


def _uint(data: bytes, pos: int, n: int) -> int:
    v = 0
    for i in range(pos, pos + n):
        v = (v << 8) | data[i]
    return v


def _ran_id(data: bytes, pos: int, vlen: int) -> int:
    n = (data[pos] >> 6) + 1
    if vlen < n + 1:
        raise NgapDecodeError("short RAN-UE-NGAP-ID")
    return _uint(data, pos + 1, n)


def _amf_id(data: bytes, pos: int, vlen: int) -> int:
    n = (data[pos] >> 5) + 1
    if n > 5 or vlen < n + 1:
        raise NgapDecodeError("bad AMF-UE-NGAP-ID")
    return _uint(data, pos + 1, n)


def _ue_ngap_ids(data: bytes, pos: int, vlen: int) -> tuple[int, int]:
    """UE-NGAP-IDs CHOICE (no extension marker): pair or AMF id alone -> (amf, ran)."""
    b = data[pos]
    idx = b >> 6
    if idx == 0:  # uE-NGAP-ID-pair: SEQUENCE ext, opt, then the AMF id's 3-bit length
        n = ((b >> 1) & 7) + 1
        if n > 5 or vlen < n + 3:
            raise NgapDecodeError("bad UE-NGAP-ID-pair")
        amf = _uint(data, pos + 1, n)
        p = pos + 1 + n
        m = (data[p] >> 6) + 1
        if vlen < n + m + 2:
            raise NgapDecodeError("short UE-NGAP-ID-pair")
        return amf, _uint(data, p + 1, m)
    if idx == 1:  # aMF-UE-NGAP-ID alone
        n = ((b >> 3) & 7) + 1
        if n > 5 or vlen < n + 1:
            raise NgapDecodeError("bad UE-NGAP-IDs")
        return _uint(data, pos + 1, n), NONE
    raise NgapDecodeError("UE-NGAP-IDs extension choice")


def _header(data: bytes) -> tuple[int, int, int, int]:
    """-> (pdu type, procedure code, message start, message end)."""
    b0 = data[0]
    if b0 & 0x80:
        raise NgapDecodeError("NGAP-PDU extension choice")
    pdu = (b0 >> 5) & 3
    if pdu == 3:
        raise NgapDecodeError("bad NGAP-PDU choice")
    if data[2] >= 0xC0:
        raise NgapDecodeError("bad procedure criticality")
    length, start = _length(data, 3)
    end = start + length
    if end > len(data) or length < 3:
        raise NgapDecodeError("message shorter than its length")
    return pdu, data[1], start, end


def extract(data: bytes) -> tuple:
    """The routing key of one NGAP message (see ``KEY_FIELDS``; absent fields are -1)."""
    try:
        pdu, proc, start, end = _header(data)
        count = (data[start + 1] << 8) | data[start + 2]
        pos = start + 3
        ran = amf = set_id = pointer = tmsi = region = NONE
        for _ in range(count):
            ie = (data[pos] << 8) | data[pos + 1]
            vlen, vpos = _length(data, pos + 3)
            pos = vpos + vlen
            if pos > end:
                raise NgapDecodeError("IE overruns the message")
            if ie == _IE_RAN_UE:
                ran = _ran_id(data, vpos, vlen)
            elif ie == _IE_AMF_UE:
                amf = _amf_id(data, vpos, vlen)
            elif ie == _IE_UE_NGAP_IDS:
                amf, r = _ue_ngap_ids(data, vpos, vlen)
                if r != NONE:
                    ran = r
            elif ie == _IE_FIVEG_S_TMSI:
                if vlen < 7:
                    raise NgapDecodeError("short FiveG-S-TMSI")
                bits = (data[vpos] << 16) | (data[vpos + 1] << 8) | data[vpos + 2]
                set_id = (bits >> 12) & 0x3FF
                pointer = (bits >> 6) & 0x3F
                tmsi = _uint(data, vpos + 3, 4)
            elif ie == _IE_GUAMI:
                if vlen < 7:
                    raise NgapDecodeError("short GUAMI")
                region = data[vpos + 4]
                if set_id == NONE:
                    set_id = (data[vpos + 5] << 2) | (data[vpos + 6] >> 6)
                    pointer = data[vpos + 6] & 0x3F
            elif ie == _IE_AMF_SET_ID:
                if vlen < 2:
                    raise NgapDecodeError("short AMFSetID")
                if set_id == NONE:
                    set_id = (data[vpos] << 2) | (data[vpos + 1] >> 6)
        return (pdu, proc, ran, amf, set_id, pointer, tmsi, region)
    except IndexError:
        raise NgapDecodeError("truncated NGAP message") from None


def _put_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((0x80 | (n >> 8), n & 0xFF))
    raise NgapDecodeError("message would need a fragmented length")


def _octets(v: int) -> int:
    return max(1, (v.bit_length() + 7) >> 3)


def encode_ran_id(v: int) -> bytes:
    """APER of RAN-UE-NGAP-ID (0..2^32-1)."""
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"RAN-UE-NGAP-ID out of range: {v}")
    n = _octets(v)
    return bytes(((n - 1) << 6,)) + v.to_bytes(n, "big")


def encode_amf_id(v: int) -> bytes:
    """APER of AMF-UE-NGAP-ID (0..2^40-1)."""
    if not 0 <= v <= 0xFFFFFFFFFF:
        raise ValueError(f"AMF-UE-NGAP-ID out of range: {v}")
    n = _octets(v)
    return bytes(((n - 1) << 5,)) + v.to_bytes(n, "big")


def _encode_ue_ngap_ids(old: bytes, amf: int, ran: int) -> bytes:
    b = old[0]
    idx = b >> 6
    if idx == 0:
        if b & 0x30:
            raise NgapDecodeError("UE-NGAP-ID-pair with extensions: not rewritable")
        n = _octets(amf)
        m = _octets(ran)
        return (bytes(((n - 1) << 1,)) + amf.to_bytes(n, "big") + bytes(((m - 1) << 6,))
                + ran.to_bytes(m, "big"))
    if idx == 1:
        n = _octets(amf)
        return bytes((0x40 | ((n - 1) << 3),)) + amf.to_bytes(n, "big")
    raise NgapDecodeError("UE-NGAP-IDs extension choice")


def rewrite_ue_ids(data: bytes, ran_ue_id: int, amf_ue_id: int) -> bytes:
    """Copy of ``data`` with the RAN / AMF UE NGAP ids replaced (-1: leave that one as is).

    Covers the top-level RAN-UE-NGAP-ID and AMF-UE-NGAP-ID IEs and UE-NGAP-IDs (UE Context
    Release Command); lengths of the IE and of the message are re-encoded."""
    try:
        pdu, proc, start, end = _header(data)
        count = (data[start + 1] << 8) | data[start + 2]
        pos = start + 3
        parts = [data[start:pos]]
        changed = False
        for _ in range(count):
            ie = (data[pos] << 8) | data[pos + 1]
            vlen, vpos = _length(data, pos + 3)
            nxt = vpos + vlen
            if nxt > end:
                raise NgapDecodeError("IE overruns the message")
            value = None
            if ie == _IE_RAN_UE and ran_ue_id >= 0:
                value = encode_ran_id(ran_ue_id)
            elif ie == _IE_AMF_UE and amf_ue_id >= 0:
                value = encode_amf_id(amf_ue_id)
            elif ie == _IE_UE_NGAP_IDS and (ran_ue_id >= 0 or amf_ue_id >= 0):
                old_amf, old_ran = _ue_ngap_ids(data, vpos, vlen)
                value = _encode_ue_ngap_ids(
                    data[vpos:nxt], amf_ue_id if amf_ue_id >= 0 else old_amf,
                    ran_ue_id if ran_ue_id >= 0 and old_ran != NONE else old_ran)
            if value is None:
                parts.append(data[pos:nxt])
            else:
                changed = True
                parts.append(data[pos:pos + 3])
                parts.append(_put_length(len(value)))
                parts.append(value)
            pos = nxt
        if not changed:
            return bytes(data)
        parts.append(data[pos:end])
        body = b"".join(parts)
        return data[:3] + _put_length(len(body)) + body
    except IndexError:
        raise NgapDecodeError("truncated NGAP message") from None
