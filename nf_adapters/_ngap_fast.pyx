# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython fast path of the NGAP routing key: same API and results as
``nf_adapters.ngap.routing_key`` (the pure twin, which documents the APER layout).

``extract(data)`` reads with C pointers and explicit bound checks (every read is checked
against the message end; nothing relies on IndexError), so a hostile message costs at most
one pass over its IE headers.  ``rewrite_ue_ids`` splices the re-encoded ids with C-level
copies into one new bytes object.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.string cimport memcpy

from nf_adapters.ngap.routing_key import NgapDecodeError

cdef long long NONE = -1


cdef inline int _length(const unsigned char* d, Py_ssize_t n, Py_ssize_t pos,
                        Py_ssize_t* out_len) except -1:
    """Length determinant at pos; returns its size in bytes (1 or 2)."""
    if pos >= n:
        raise NgapDecodeError("truncated NGAP message")
    cdef unsigned char b = d[pos]
    if b < 0x80:
        out_len[0] = b
        return 1
    if b < 0xC0:
        if pos + 1 >= n:
            raise NgapDecodeError("truncated NGAP message")
        out_len[0] = ((b & 0x3F) << 8) | d[pos + 1]
        return 2
    raise NgapDecodeError("fragmented length (message of 16 KiB or more)")


cdef inline long long _uint(const unsigned char* d, Py_ssize_t pos, int k):
    cdef long long v = 0
    cdef int i
    for i in range(k):
        v = (v << 8) | d[pos + i]
    return v


cdef inline int _octets(unsigned long long v):
    cdef int k = 1
    while v > 0xFF:
        v >>= 8
        k += 1
    return k


def extract(bytes data not None):
    """The routing key of one NGAP message (see routing_key.KEY_FIELDS; absent = -1)."""
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t length, start, end, pos, vpos, vlen
    cdef int pdu, proc, count, i, k, m, ie
    cdef unsigned char b
    cdef long long ran = NONE, amf = NONE, set_id = NONE, pointer = NONE, tmsi = NONE
    cdef long long region = NONE
    cdef unsigned int bits
    if n < 4:
        raise NgapDecodeError("truncated NGAP message")
    b = d[0]
    if b & 0x80:
        raise NgapDecodeError("NGAP-PDU extension choice")
    pdu = (b >> 5) & 3
    if pdu == 3:
        raise NgapDecodeError("bad NGAP-PDU choice")
    if d[2] >= 0xC0:
        raise NgapDecodeError("bad procedure criticality")
    proc = d[1]
    start = 3 + _length(d, n, 3, &length)
    end = start + length
    if end > n or length < 3:
        raise NgapDecodeError("message shorter than its length")
    count = (d[start + 1] << 8) | d[start + 2]
    pos = start + 3
    for i in range(count):
        if pos + 3 >= end:
            raise NgapDecodeError("truncated NGAP message")
        ie = (d[pos] << 8) | d[pos + 1]
        vpos = pos + 3 + _length(d, end, pos + 3, &vlen)
        pos = vpos + vlen
        if pos > end:
            raise NgapDecodeError("IE overruns the message")
        if ie == 85:
            if vlen < 1:
                raise NgapDecodeError("truncated NGAP message")
            k = (d[vpos] >> 6) + 1
            if vlen < k + 1:
                raise NgapDecodeError("short RAN-UE-NGAP-ID")
            ran = _uint(d, vpos + 1, k)
        elif ie == 10:
            if vlen < 1:
                raise NgapDecodeError("truncated NGAP message")
            k = (d[vpos] >> 5) + 1
            if k > 5 or vlen < k + 1:
                raise NgapDecodeError("bad AMF-UE-NGAP-ID")
            amf = _uint(d, vpos + 1, k)
        elif ie == 114:
            if vlen < 1:
                raise NgapDecodeError("truncated NGAP message")
            b = d[vpos]
            if (b >> 6) == 0:
                k = ((b >> 1) & 7) + 1
                if k > 5 or vlen < k + 3:
                    raise NgapDecodeError("bad UE-NGAP-ID-pair")
                amf = _uint(d, vpos + 1, k)
                m = (d[vpos + 1 + k] >> 6) + 1
                if vlen < k + m + 2:
                    raise NgapDecodeError("short UE-NGAP-ID-pair")
                ran = _uint(d, vpos + 2 + k, m)
            elif (b >> 6) == 1:
                k = ((b >> 3) & 7) + 1
                if k > 5 or vlen < k + 1:
                    raise NgapDecodeError("bad UE-NGAP-IDs")
                amf = _uint(d, vpos + 1, k)
            else:
                raise NgapDecodeError("UE-NGAP-IDs extension choice")
        elif ie == 26:
            if vlen < 7:
                raise NgapDecodeError("short FiveG-S-TMSI")
            bits = (d[vpos] << 16) | (d[vpos + 1] << 8) | d[vpos + 2]
            set_id = (bits >> 12) & 0x3FF
            pointer = (bits >> 6) & 0x3F
            tmsi = _uint(d, vpos + 3, 4)
        elif ie == 28:
            if vlen < 7:
                raise NgapDecodeError("short GUAMI")
            region = d[vpos + 4]
            if set_id == NONE:
                set_id = (d[vpos + 5] << 2) | (d[vpos + 6] >> 6)
                pointer = d[vpos + 6] & 0x3F
        elif ie == 3:
            if vlen < 2:
                raise NgapDecodeError("short AMFSetID")
            if set_id == NONE:
                set_id = (d[vpos] << 2) | (d[vpos + 1] >> 6)
    return (pdu, proc, ran, amf, set_id, pointer, tmsi, region)


cdef inline Py_ssize_t _put_length(unsigned char* out, Py_ssize_t v) except -1:
    if v < 0x80:
        out[0] = <unsigned char>v
        return 1
    if v < 0x4000:
        out[0] = <unsigned char>(0x80 | (v >> 8))
        out[1] = <unsigned char>(v & 0xFF)
        return 2
    raise NgapDecodeError("message would need a fragmented length")


cdef inline Py_ssize_t _put_uint(unsigned char* out, unsigned long long v, int k):
    cdef int i
    for i in range(k):
        out[k - 1 - i] = <unsigned char>(v & 0xFF)
        v >>= 8
    return k


def rewrite_ue_ids(bytes data not None, long long ran_ue_id, long long amf_ue_id):
    """Copy of ``data`` with the RAN / AMF UE NGAP ids replaced (-1: leave as is)."""
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t length, start, end, pos, vpos, vlen, nxt, o, body_start, hl
    cdef int count, i, k, m, ie
    cdef unsigned char b
    cdef unsigned char val[16]
    cdef Py_ssize_t val_len
    cdef long long old_amf, old_ran
    cdef bint changed = False
    if ran_ue_id > 0xFFFFFFFF:
        raise ValueError(f"RAN-UE-NGAP-ID out of range: {ran_ue_id}")
    if amf_ue_id > 0xFFFFFFFFFF:
        raise ValueError(f"AMF-UE-NGAP-ID out of range: {amf_ue_id}")
    if n < 4:
        raise NgapDecodeError("truncated NGAP message")
    if d[0] & 0x80 or ((d[0] >> 5) & 3) == 3:
        raise NgapDecodeError("bad NGAP-PDU choice")
    if d[2] >= 0xC0:
        raise NgapDecodeError("bad procedure criticality")
    start = 3 + _length(d, n, 3, &length)
    end = start + length
    if end > n or length < 3:
        raise NgapDecodeError("message shorter than its length")
    # worst case growth: an id IE of >= 5 bytes becomes at most 15 (3x), plus 2 of length
    cdef bytearray buf = bytearray(3 * n + 64)
    cdef unsigned char* out = buf
    body_start = 5  # leave room for header (3) + 2-byte length; moved down at the end
    o = body_start
    memcpy(out + o, d + start, 3)
    o += 3
    count = (d[start + 1] << 8) | d[start + 2]
    pos = start + 3
    for i in range(count):
        if pos + 3 >= end:
            raise NgapDecodeError("truncated NGAP message")
        ie = (d[pos] << 8) | d[pos + 1]
        vpos = pos + 3 + _length(d, end, pos + 3, &vlen)
        nxt = vpos + vlen
        if nxt > end:
            raise NgapDecodeError("IE overruns the message")
        val_len = 0
        if ie == 85 and ran_ue_id >= 0:
            k = _octets(ran_ue_id)
            val[0] = <unsigned char>((k - 1) << 6)
            val_len = 1 + _put_uint(val + 1, ran_ue_id, k)
        elif ie == 10 and amf_ue_id >= 0:
            k = _octets(amf_ue_id)
            val[0] = <unsigned char>((k - 1) << 5)
            val_len = 1 + _put_uint(val + 1, amf_ue_id, k)
        elif ie == 114 and (ran_ue_id >= 0 or amf_ue_id >= 0):
            if vlen < 1:
                raise NgapDecodeError("truncated NGAP message")
            b = d[vpos]
            if (b >> 6) == 0:
                if b & 0x30:
                    raise NgapDecodeError("UE-NGAP-ID-pair with extensions: not rewritable")
                k = ((b >> 1) & 7) + 1
                if k > 5 or vlen < k + 3:
                    raise NgapDecodeError("bad UE-NGAP-ID-pair")
                old_amf = _uint(d, vpos + 1, k)
                m = (d[vpos + 1 + k] >> 6) + 1
                if vlen < k + m + 2:
                    raise NgapDecodeError("short UE-NGAP-ID-pair")
                old_ran = _uint(d, vpos + 2 + k, m)
                if amf_ue_id >= 0:
                    old_amf = amf_ue_id
                if ran_ue_id >= 0:
                    old_ran = ran_ue_id
                k = _octets(old_amf)
                val[0] = <unsigned char>((k - 1) << 1)
                val_len = 1 + _put_uint(val + 1, old_amf, k)
                m = _octets(old_ran)
                val[val_len] = <unsigned char>((m - 1) << 6)
                val_len += 1 + _put_uint(val + val_len + 1, old_ran, m)
            elif (b >> 6) == 1:
                k = ((b >> 3) & 7) + 1
                if k > 5 or vlen < k + 1:
                    raise NgapDecodeError("bad UE-NGAP-IDs")
                old_amf = amf_ue_id if amf_ue_id >= 0 else _uint(d, vpos + 1, k)
                k = _octets(old_amf)
                val[0] = <unsigned char>(0x40 | ((k - 1) << 3))
                val_len = 1 + _put_uint(val + 1, old_amf, k)
            else:
                raise NgapDecodeError("UE-NGAP-IDs extension choice")
        if val_len == 0:
            memcpy(out + o, d + pos, nxt - pos)
            o += nxt - pos
        else:
            changed = True
            memcpy(out + o, d + pos, 3)
            o += 3
            o += _put_length(out + o, val_len)
            memcpy(out + o, val, val_len)
            o += val_len
        pos = nxt
    if not changed:
        return data
    memcpy(out + o, d + pos, end - pos)
    o += end - pos
    # header: 3 bytes + length of the body, written just before the body
    cdef unsigned char lb[2]
    hl = _put_length(lb, o - body_start)
    memcpy(out + body_start - hl, lb, hl)
    memcpy(out + body_start - hl - 3, d, 3)
    return PyBytes_FromStringAndSize(<char*>out + body_start - hl - 3, o - body_start + hl + 3)
