# =============================================================================================
# dataplane/_nghttp2_stream.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# ``_Stream``: the state of one exchange, shared by both sides of a splice (downstream and
# upstream stream ids, mode, request body held or relayed, response header rcbufs, local
# body, observer), and what it lets go of while its completion report waits.
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# stream state shared by both sides of a splice

cdef enum:
    HDR_SLOTS = 16              # request header fields a new stream's list has room for

cdef enum:
    TAP_UNKNOWN = 0             # the observer's on_response_headers not looked up yet
    TAP_HOOK = 1                # it has one: tapped fields go to it
    TAP_NONE = 2                # it has none: tapped fields are relayed unchanged

cdef enum:
    RH_INLINE_FIELDS = 8        # header fields a stream holds in itself (a typical SBI
    RH_INLINE = 16              # response); a longer block moves to the heap

cdef enum Mode:
    M_HELD = 0      # announced to the handler, body held, nothing decided
    M_WAIT = 1      # upstream failed before a response; observer must act
    M_SPLICE = 2    # joined to an upstream stream
    M_READ = 3      # collecting the body for read_body
    M_READDONE = 4  # body delivered, waiting for respond()
    M_LOCAL = 5     # local response submitted
    M_DISCARD = 6   # reset by us; data is dropped
    M_CLIENT = 7    # a ClientConnection.request of our own


@cython.freelist(256)
cdef class _Stream:
    cdef int32_t sid                 # downstream stream id (server side)
    cdef object sid_obj              # ... as the int object handed to Python (made once;
                                     # observers, set by splice, exist on server streams only)
    cdef int32_t cid                 # upstream stream id (client side), 0 when none
    cdef object cid_obj              # ... as the int object keying the client's streams
    cdef int mode
    cdef ServerConnection server
    cdef ClientConnection client
    cdef list headers                # request headers until announced
    cdef Py_ssize_t hn               # fields in it (the first HDR_SLOTS filled in place)
    cdef list req_trailers
    cdef size_t hsize                # header list size accounting
    cdef bint too_large
    cdef bint announced
    cdef bint req_end                # END_STREAM received from downstream
    cdef bint up_sent                # request HEADERS written upstream
    cdef bint up_closed
    cdef bint up_deferred            # upstream data provider returned DEFERRED
    cdef bint down_closed
    cdef bint down_deferred
    cdef bint resp_submitted         # final response HEADERS submitted downstream / received
    cdef bint resp_end               # END_STREAM received from upstream
    cdef bint retain
    cdef bint retain_lost
    cdef bint completed
    cdef bint stall_told             # observer.on_response_stalled was called
    cdef _Stream next_done           # the next completion to report after this one
    cdef bint hdr_sent               # response HEADERS written downstream
    cdef bint rst_after_hdr          # reset() came before the response HEADERS were written
    cdef uint32_t pending_rst
    cdef uint32_t down_err
    cdef uint32_t up_err
    cdef int status                  # status received from upstream (tentative)
    cdef int sent_status             # final status submitted downstream
    # request body: bytes [rq.start, rq.end) have absolute offsets [rq_base, rq_total)
    cdef Buf rq
    cdef size_t rq_base, rq_sent, rq_total, rq_acked
    cdef size_t limit
    # response body buffered between upstream and downstream (or a whole client response)
    cdef Buf rs
    cdef size_t win_extra            # upstream window granted beyond the base (server's budget)
    # response header/trailer block from upstream kept as nghttp2 rcbufs (name, value, ...)
    cdef nghttp2_rcbuf **rh          # rh_inline, or a heap array once it outgrew that
    cdef uint8_t *rh_flags
    cdef int rh_n, rh_cap
    cdef int rh_base                 # rh[:rh_base]: the final response HEADERS, submitted
                                     # uncopied (nghttp2 reads them when it sends the frame)
    cdef nghttp2_rcbuf *rh_inline[RH_INLINE]
    cdef uint8_t rh_flags_inline[RH_INLINE_FIELDS]
    # local body (respond / request) and trailers
    cdef bytes out_body
    cdef size_t out_off
    cdef list out_trailers
    cdef object observer
    cdef list extra
    cdef object callback             # read_body callback or request callback
    cdef object up_hold              # the header fields of requests submitted upstream, kept
                                     # until the stream goes (nghttp2 sends them uncopied)
    cdef list resp_headers           # M_CLIENT
    cdef list resp_trailers          # M_CLIENT
    cdef list tapped                 # tapped fields of the final response HEADERS (or None)
    cdef object tap_hook             # observer.on_response_headers, looked up at the first
    cdef uint8_t tap_state           # tapped field: TAP_UNKNOWN, TAP_HOOK or TAP_NONE

    def __dealloc__(self):
        buf_clear(&self.rq)
        buf_clear(&self.rs)
        cdef int i
        for i in range(self.rh_n):
            nghttp2_rcbuf_decref(self.rh[i])
        if self.rh != self.rh_inline:
            free(self.rh)
            free(self.rh_flags)

    cdef void _shed(self) noexcept:
        """Let go of all but what the completion report reads (observer, ids, status, codes):
        a finished stream waiting for its report holds no buffers, header fields or rcbufs
        (the session's pool gets them back now, while they are warm)."""
        cdef int i
        buf_clear(&self.rq)
        buf_clear(&self.rs)
        for i in range(self.rh_n):
            nghttp2_rcbuf_decref(self.rh[i])
        self.rh_n = self.rh_base = 0
        self.headers = self.req_trailers = self.out_trailers = self.extra = None
        self.resp_headers = self.resp_trailers = None
        self.out_body = None
        self.callback = self.up_hold = None
        self.client = None
        self.tapped = self.tap_hook = None

    cdef inline void _rh_clear(self) noexcept:
        """Drop the block being collected (those kept for a submitted frame stay)."""
        cdef int i
        for i in range(self.rh_base, self.rh_n):
            nghttp2_rcbuf_decref(self.rh[i])
        self.rh_n = self.rh_base

    cdef int _rh_add(self, nghttp2_rcbuf *name, nghttp2_rcbuf *value, uint8_t flags) noexcept:
        cdef int cap
        cdef void *p
        cdef void *q
        if self.rh_n + 2 > self.rh_cap:
            if self.rh_cap == 0:  # first field of the stream: the inline arrays
                self.rh = self.rh_inline
                self.rh_flags = self.rh_flags_inline
                self.rh_cap = RH_INLINE
            else:
                cap = self.rh_cap * 2
                if self.rh == self.rh_inline:  # outgrown: both arrays move to the heap
                    p = malloc(cap * sizeof(nghttp2_rcbuf *))
                    if p == NULL:
                        return -1
                    q = malloc(cap // 2)
                    if q == NULL:
                        free(p)
                        return -1
                    memcpy(p, self.rh_inline, RH_INLINE * sizeof(nghttp2_rcbuf *))
                    memcpy(q, self.rh_flags_inline, RH_INLINE_FIELDS)
                    self.rh = <nghttp2_rcbuf **>p
                    p = q
                else:
                    p = realloc(self.rh, cap * sizeof(nghttp2_rcbuf *))
                    if p == NULL:
                        return -1
                    self.rh = <nghttp2_rcbuf **>p
                    p = realloc(self.rh_flags, cap // 2)
                    if p == NULL:
                        return -1
                self.rh_flags = <uint8_t *>p
                self.rh_cap = cap
        nghttp2_rcbuf_incref(name)
        nghttp2_rcbuf_incref(value)
        self.rh_flags[self.rh_n // 2] = flags & NGHTTP2_NV_FLAG_NO_INDEX
        self.rh[self.rh_n] = name
        self.rh[self.rh_n + 1] = value
        self.rh_n += 2
        return 0

    cdef nghttp2_nv *_rh_nva(self, list extra, list keep, size_t *count,
                             bint uncopied=False) except? NULL:
        """nv array of the block of rcbufs being collected, followed by ``extra`` Python
        headers.  ``uncopied``: nghttp2 is to use the rcbufs' bytes in place (the caller then
        keeps the block until the stream goes: ``rh_base = rh_n``); the names are lower case,
        as nghttp2 checked them on receipt."""
        cdef int i, n = (self.rh_n - self.rh_base) // 2, b = self.rh_base // 2
        cdef uint8_t nocopy = (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE) \
            if uncopied else 0
        cdef size_t ne = len(extra) if extra else 0
        cdef nghttp2_nv *nva
        cdef nghttp2_vec v
        if ne:
            nva = _nva_from(extra, keep, n)
            # move the extra headers behind the relayed ones
            memmove(nva + n, nva, ne * sizeof(nghttp2_nv))
        else:
            nva = <nghttp2_nv *>malloc((n + 1) * sizeof(nghttp2_nv))
            if nva == NULL:
                raise MemoryError()
        for i in range(n):
            v = nghttp2_rcbuf_get_buf(self.rh[2 * (b + i)])
            nva[i].name = v.base
            nva[i].namelen = v.len
            v = nghttp2_rcbuf_get_buf(self.rh[2 * (b + i) + 1])
            nva[i].value = v.base
            nva[i].valuelen = v.len
            nva[i].flags = self.rh_flags[b + i] | nocopy
        count[0] = n + ne
        return nva

    cdef inline size_t held(self) noexcept:
        return self.rq.end - self.rq.start

    cdef void _drop_sent(self) noexcept:
        """Forget request bytes already taken upstream (no replay possible any more)."""
        cdef size_t n = self.rq_sent - self.rq_base
        if n:
            self.rq.start += n
            self.rq_base += n
            if self.rq.start == self.rq.end:
                self.rq.start = self.rq.end = 0

