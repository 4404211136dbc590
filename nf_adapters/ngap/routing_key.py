# cython: annotation_typing=False, boundscheck=False, wraparound=False
"""NGAP routing keys without a full decode.

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
take ``bytes`` (anything else: TypeError) and raise ``NgapDecodeError`` on anything they cannot
read: every read is checked against the message's end, so a hostile message costs at most one
pass over its IE headers; the proxy answers that error with an ErrorIndication.  An id out of
its range is a ValueError whether or not the message carries that id.  pycrate is the oracle
for both in tests/test_ngap_routing_key.py.

One source, two twins: this file is the pure module and, compiled a second time with
``routing_key.pxd`` beside it (Cython's pure-Python mode, setup.py's TWINS),
``nf_adapters._ngap_fast``, with C integers and C-level copies; ``nf_adapters.ngap`` exports
the compiled functions when built (``FAST`` says which).

Limits (documented, tested): fragmented lengths (a message of 16 KiB or more) are refused;
ids are read only from the top-level IEs (RAN-UE-NGAP-ID 85, AMF-UE-NGAP-ID 10,
UE-NGAP-IDs 114, FiveG-S-TMSI 26, GUAMI 28, AMFSetID 3).
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # no Cython here: this file runs as plain Python
    from dataplane import _no_cython as cython

from nf_adapters.ngap_decode_error import NgapDecodeError  # one class for both twins

if not cython.compiled:
    # Uncompiled stand-ins for what routing_key.pxd gives the compiled twin as C helpers:
    # writing into the output buffer at ``o`` (a slice of the message, one byte), returning
    # the position after, and the bytes of a piece of the buffer
    def _copy(out: bytearray, o: int, data: bytes, begin: int, stop: int) -> int:
        out[o:o + stop - begin] = data[begin:stop]
        return o + stop - begin

    def _put(out: bytearray, o: int, b: int) -> int:
        out[o] = b
        return o + 1

    def _bytes(out: bytearray, begin: int, stop: int) -> bytes:
        return bytes(out[begin:stop])

# the routing-key tuple
PDU_TYPE, PROCEDURE_CODE, RAN_UE_ID, AMF_UE_ID, AMF_SET_ID, AMF_POINTER, TMSI, AMF_REGION = range(8)
KEY_FIELDS = ("pdu_type", "procedure_code", "ran_ue_ngap_id", "amf_ue_ngap_id", "amf_set_id",
              "amf_pointer", "five_g_tmsi", "amf_region_id")
NONE = -1  # an absent field
MAX_RAN_UE_ID = 0xFFFFFFFF  # RAN-UE-NGAP-ID 0..2^32-1
MAX_AMF_UE_ID = 0xFFFFFFFFFF  # AMF-UE-NGAP-ID 0..2^40-1

_IE_AMF_SET_ID = 3
_IE_AMF_UE = 10
_IE_FIVEG_S_TMSI = 26
_IE_GUAMI = 28
_IE_RAN_UE = 85
_IE_UE_NGAP_IDS = 114


def _truncated() -> NgapDecodeError:
    return NgapDecodeError("truncated NGAP message")


def _length(data: bytes, end: int, pos: int) -> int:
    """The APER unconstrained length determinant at ``pos`` (1 or 2 bytes before ``end``)."""
    if pos < end:
        b = data[pos]
        if b < 0x80:
            return b
        if b < 0xC0 and pos + 1 < end:
            return ((b & 0x3F) << 8) | data[pos + 1]
    raise _length_error(data, end, pos)


def _length_error(data: bytes, end: int, pos: int) -> NgapDecodeError:
    if pos < end and data[pos] >= 0xC0:
        return NgapDecodeError("fragmented length (message of 16 KiB or more)")
    return _truncated()


def _uint(data: bytes, pos: int, n: int) -> int:
    v = 0
    for i in range(pos, pos + n):
        v = (v << 8) | data[i]
    return v


def _octets(v: int) -> int:
    n = 1
    while v > 0xFF:
        v >>= 8
        n += 1
    return n


def _message(data: bytes) -> int:
    """Check the NGAP-PDU header; the end of the message (its start: 4, or 5 after a two-byte
    length)."""
    if type(data) is not bytes:
        raise TypeError(f"NGAP message must be bytes, not {type(data).__name__}")
    if len(data) < 4:
        raise _truncated()
    b = data[0]
    if b & 0x80:
        raise NgapDecodeError("NGAP-PDU extension choice")
    if ((b >> 5) & 3) == 3:
        raise NgapDecodeError("bad NGAP-PDU choice")
    if data[2] >= 0xC0:
        raise NgapDecodeError("bad procedure criticality")
    length = _length(data, len(data), 3)
    end = (4 if data[3] < 0x80 else 5) + length
    if end > len(data) or length < 3:
        raise NgapDecodeError("message shorter than its length")
    return end


def extract(data: bytes) -> tuple:
    """The routing key of one NGAP message (see ``KEY_FIELDS``; absent fields are -1)."""
    end = _message(data)
    start = 4 if data[3] < 0x80 else 5
    ran = amf = set_id = pointer = tmsi = region = NONE
    count = (data[start + 1] << 8) | data[start + 2]
    pos = start + 3
    for _i in range(count):
        if pos + 3 >= end:
            raise _truncated()
        ie = (data[pos] << 8) | data[pos + 1]
        vlen = _length(data, end, pos + 3)
        vpos = pos + (4 if data[pos + 3] < 0x80 else 5)
        pos = vpos + vlen
        if pos > end:
            raise NgapDecodeError("IE overruns the message")
        if ie == _IE_RAN_UE:
            if vlen < 1:
                raise _truncated()
            k = (data[vpos] >> 6) + 1
            if vlen < k + 1:
                raise NgapDecodeError("short RAN-UE-NGAP-ID")
            ran = _uint(data, vpos + 1, k)
        elif ie == _IE_AMF_UE:
            if vlen < 1:
                raise _truncated()
            k = (data[vpos] >> 5) + 1
            if k > 5 or vlen < k + 1:
                raise NgapDecodeError("bad AMF-UE-NGAP-ID")
            amf = _uint(data, vpos + 1, k)
        elif ie == _IE_UE_NGAP_IDS:  # CHOICE (no extension marker): pair or AMF id alone
            if vlen < 1:
                raise _truncated()
            b = data[vpos]
            if (b >> 6) == 0:  # uE-NGAP-ID-pair: SEQUENCE ext, opt, the AMF id's 3-bit length
                k = ((b >> 1) & 7) + 1
                if k > 5 or vlen < k + 3:
                    raise NgapDecodeError("bad UE-NGAP-ID-pair")
                amf = _uint(data, vpos + 1, k)
                m = (data[vpos + 1 + k] >> 6) + 1
                if vlen < k + m + 2:
                    raise NgapDecodeError("short UE-NGAP-ID-pair")
                ran = _uint(data, vpos + 2 + k, m)
            elif (b >> 6) == 1:  # aMF-UE-NGAP-ID alone
                k = ((b >> 3) & 7) + 1
                if k > 5 or vlen < k + 1:
                    raise NgapDecodeError("bad UE-NGAP-IDs")
                amf = _uint(data, vpos + 1, k)
            else:
                raise NgapDecodeError("UE-NGAP-IDs extension choice")
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
    return (data[0] >> 5) & 3, data[1], ran, amf, set_id, pointer, tmsi, region


def _put_length(out: bytearray, o: int, n: int) -> int:
    """Write the length determinant of ``n`` at ``o``; the position after it."""
    if n < 0x80:
        return _put(out, o, n)
    if n < 0x4000:
        return _put(out, _put(out, o, 0x80 | (n >> 8)), n & 0xFF)
    raise NgapDecodeError("message would need a fragmented length")


def _put_uint(out: bytearray, o: int, v: int, n: int) -> int:
    """Write ``v`` in ``n`` big-endian bytes at ``o``; the position after them."""
    while n > 0:
        n -= 1
        o = _put(out, o, (v >> (8 * n)) & 0xFF)
    return o


def encode_ran_id(v: int) -> bytes:
    """APER of RAN-UE-NGAP-ID (0..2^32-1)."""
    if not 0 <= v <= MAX_RAN_UE_ID:
        raise ValueError(f"RAN-UE-NGAP-ID out of range: {v}")
    n = _octets(v)
    return bytes(((n - 1) << 6,)) + v.to_bytes(n, "big")


def encode_amf_id(v: int) -> bytes:
    """APER of AMF-UE-NGAP-ID (0..2^40-1)."""
    if not 0 <= v <= MAX_AMF_UE_ID:
        raise ValueError(f"AMF-UE-NGAP-ID out of range: {v}")
    n = _octets(v)
    return bytes(((n - 1) << 5,)) + v.to_bytes(n, "big")


def rewrite_ue_ids(data: bytes, ran_ue_id: int, amf_ue_id: int) -> bytes:
    """Copy of ``data`` with the RAN / AMF UE NGAP ids replaced (-1: leave that one as is).

    Covers the top-level RAN-UE-NGAP-ID and AMF-UE-NGAP-ID IEs and UE-NGAP-IDs (UE Context
    Release Command); lengths of the IE and of the message are re-encoded.  ``data`` itself
    when nothing was replaced."""
    if ran_ue_id > MAX_RAN_UE_ID:
        raise ValueError(f"RAN-UE-NGAP-ID out of range: {ran_ue_id}")
    if amf_ue_id > MAX_AMF_UE_ID:
        raise ValueError(f"AMF-UE-NGAP-ID out of range: {amf_ue_id}")
    end = _message(data)
    start = 4 if data[3] < 0x80 else 5
    count = (data[start + 1] << 8) | data[start + 2]
    pos = start + 3
    # one buffer: an id IE of 5 bytes or more becomes at most 15 (3x), plus 2 of length; the
    # body is written from offset 5, the header and the body's length just before it at the end
    out = bytearray(3 * len(data) + 64)
    body = 5
    o = _copy(out, body, data, start, pos)
    changed = False
    for _i in range(count):
        if pos + 3 >= end:
            raise _truncated()
        ie = (data[pos] << 8) | data[pos + 1]
        vlen = _length(data, end, pos + 3)
        vpos = pos + (4 if data[pos + 3] < 0x80 else 5)
        nxt = vpos + vlen
        if nxt > end:
            raise NgapDecodeError("IE overruns the message")
        if ie == _IE_RAN_UE and ran_ue_id >= 0:
            k = _octets(ran_ue_id)
            o = _put_length(out, _copy(out, o, data, pos, pos + 3), k + 1)
            o = _put_uint(out, _put(out, o, (k - 1) << 6), ran_ue_id, k)
            changed = True
        elif ie == _IE_AMF_UE and amf_ue_id >= 0:
            k = _octets(amf_ue_id)
            o = _put_length(out, _copy(out, o, data, pos, pos + 3), k + 1)
            o = _put_uint(out, _put(out, o, (k - 1) << 5), amf_ue_id, k)
            changed = True
        elif ie == _IE_UE_NGAP_IDS and (ran_ue_id >= 0 or amf_ue_id >= 0):
            if vlen < 1:
                raise _truncated()
            b = data[vpos]
            if (b >> 6) == 0:  # the pair: both ids, each re-encoded
                if b & 0x30:
                    raise NgapDecodeError("UE-NGAP-ID-pair with extensions: not rewritable")
                k = ((b >> 1) & 7) + 1
                if k > 5 or vlen < k + 3:
                    raise NgapDecodeError("bad UE-NGAP-ID-pair")
                old_amf = _uint(data, vpos + 1, k)
                m = (data[vpos + 1 + k] >> 6) + 1
                if vlen < k + m + 2:
                    raise NgapDecodeError("short UE-NGAP-ID-pair")
                old_ran = _uint(data, vpos + 2 + k, m)
                if amf_ue_id >= 0:
                    old_amf = amf_ue_id
                if ran_ue_id >= 0:
                    old_ran = ran_ue_id
                k = _octets(old_amf)
                m = _octets(old_ran)
                o = _put_length(out, _copy(out, o, data, pos, pos + 3), k + m + 2)
                o = _put_uint(out, _put(out, o, (k - 1) << 1), old_amf, k)
                o = _put_uint(out, _put(out, o, (m - 1) << 6), old_ran, m)
            elif (b >> 6) == 1:  # the AMF id alone
                k = ((b >> 3) & 7) + 1
                if k > 5 or vlen < k + 1:
                    raise NgapDecodeError("bad UE-NGAP-IDs")
                old_amf = amf_ue_id if amf_ue_id >= 0 else _uint(data, vpos + 1, k)
                k = _octets(old_amf)
                o = _put_length(out, _copy(out, o, data, pos, pos + 3), k + 1)
                o = _put_uint(out, _put(out, o, 0x40 | ((k - 1) << 3)), old_amf, k)
            else:
                raise NgapDecodeError("UE-NGAP-IDs extension choice")
            changed = True
        else:
            o = _copy(out, o, data, pos, nxt)
        pos = nxt
    if not changed:
        return data
    o = _copy(out, o, data, pos, end)
    # the header and the body's length, written just before the body
    n = o - body
    first = body - 3 - (1 if n < 0x80 else 2)
    _put_length(out, _copy(out, first, data, 0, 3), n)
    return _bytes(out, first, o)

FUNCTIONS = (extract, rewrite_ue_ids)  # what nf_adapters.ngap.load_routing_keys hands out
