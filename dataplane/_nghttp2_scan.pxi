# =============================================================================================
# dataplane/_nghttp2_scan.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# The server side's walk of the client's frame headers before libnghttp2 parses them
# (``_scan``): the RFC 9113 connection errors libnghttp2 lets through, the control-frame
# budget, and each header block's encoded size for the HPACK-bomb test (``_bomb``).
# =============================================================================================


cdef void _record_block(ServerConnection c, int32_t sid, uint32_t enc_len) noexcept:
    c.enc_sid[c.enc_next] = sid
    c.enc_len[c.enc_next] = enc_len
    c.enc_next = (c.enc_next + 1) % ENC_RING
    c.enc_pending += 1

cdef uint32_t _scan(ServerConnection c, const uint8_t *p, size_t n) except? 0xffffffff:
    """Walk the frame headers in the client's bytes (a few compares per frame) for the
    RFC 9113 connection errors libnghttp2 lets through here: PRIORITY on stream 0 (it
    ignores PRIORITY frames once RFC 7540 priorities are off, so they are counted as
    control frames here too) and a HEADERS opening a stream id lower than one already
    used (§5.1.1; libnghttp2 keeps no closed streams).  Returns the error code, 0: none.
    Also notes each header block's encoded size for ``_bomb``; when the ring of those would
    drop one not yet decoded, it stops after that HEADERS frame header (``scan_stop``: the
    bytes walked) for ``data_received`` to feed the session first."""
    cdef size_t k
    cdef size_t consumed = 0
    cdef uint8_t t
    cdef int32_t sid
    cdef uint8_t *h
    cdef unsigned int e
    while n:
        if c.scan_pre:
            k = n if n < c.scan_pre else c.scan_pre
            c.scan_pre -= k
        elif c.scan_skip:
            k = n if n < c.scan_skip else c.scan_skip
            c.scan_skip -= k
        else:
            k = <size_t>(9 - c.scan_hn)
            if k > n:
                k = n
            memcpy(c.scan_hdr + c.scan_hn, p, k)
            c.scan_hn += <int>k
            if c.scan_hn == 9:
                c.scan_hn = 0
                h = c.scan_hdr
                c.scan_skip = (<size_t>h[0] << 16) | (<size_t>h[1] << 8) | h[2]
                t = h[3]
                sid = <int32_t>(((<uint32_t>h[5] & 0x7f) << 24) | (<uint32_t>h[6] << 16)
                                | (<uint32_t>h[7] << 8) | h[8])
                if t == NGHTTP2_PRIORITY:
                    if sid == 0:
                        return NGHTTP2_PROTOCOL_ERROR
                    c._count_control()
                    if c.calmed:
                        return 0
                elif t == NGHTTP2_CONTINUATION:
                    e = (c.enc_next + ENC_RING - 1) % ENC_RING
                    if c.enc_sid[e] == sid:
                        c.enc_len[e] += <uint32_t>c.scan_skip
                elif t == NGHTTP2_HEADERS and sid & 1:
                    if c.enc_pending >= ENC_RING - 1:
                        # the ring would drop a block not yet decoded: stop after this
                        # frame header; the caller feeds what came before, then records it
                        c.held_sid = sid
                        c.held_len = <uint32_t>c.scan_skip
                        c.scan_stop = consumed + k
                    else:
                        _record_block(c, sid, <uint32_t>c.scan_skip)
                    if sid > c.scan_top:
                        c.scan_top = sid
                    elif sid < c.scan_top and not _known_stream(c, sid):
                        return NGHTTP2_PROTOCOL_ERROR
        p += k
        n -= k
        consumed += k
        if c.scan_stop:
            return 0
    return 0

cdef bint _bomb(ServerConnection c, int32_t sid, size_t decoded) noexcept:
    """An over-the-limit header block decoded from BOMB_RATIO times fewer bytes (its
    HEADERS and CONTINUATION payloads as _scan saw them) and to more than four times our
    dynamic table: the same table entries referenced over and over, an HPACK bomb, not a
    client with a big header (that one is sent literally, and answered 431)."""
    cdef unsigned int i
    if decoded <= c.bomb_floor:
        return 0
    for i in range(ENC_RING):
        if c.enc_sid[i] == sid and c.enc_len[i]:
            return decoded > <size_t>BOMB_RATIO * c.enc_len[i]
    return 0

cdef bint _known_stream(ServerConnection c, int32_t sid) noexcept:
    cdef unsigned int i
    if c.session != NULL and nghttp2_session_get_stream_user_data(c.session, sid) != NULL:
        return 1
    for i in range(RST_RING):
        if c.rst_ring[i] == sid:
            return 1
    return 0
