# =============================================================================================
# dataplane/_nghttp2_conn.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# ``_Conn``: what both connection kinds share (the session, the transport, the write path
# into its loop's output buffer, feeding received bytes), the session options and SETTINGS
# we send, the data providers that relay bodies inside mem_send, and the stream memo.
# =============================================================================================

cdef class _Conn:
    """What both connection kinds share: the session, the transport, the write path."""

    cdef nghttp2_session *session
    cdef readonly object transport
    cdef object _write
    cdef object loop
    cdef _LoopQueues q                   # its event loop's flush and completion queues
    cdef bint paused
    cdef bint dirty
    cdef _Conn next_dirty                # the next connection to flush after this one
    cdef bint upstream                   # a ClientConnection: its flush may wait (_hold)
    cdef bint lost
    cdef bint closing
    cdef bint draining
    cdef bint goaway_recv
    cdef dict streams
    cdef readonly int open_streams
    cdef object settings
    cdef size_t olen                     # bytes of this flush in q.obuf
    cdef size_t max_header_list
    cdef size_t max_retained
    cdef int32_t win_base                # a client's INITIAL_WINDOW_SIZE (_relay_base)
    cdef size_t win_full                 # ... and the window its own requests get
    cdef size_t relay_stream, relay_conn  # H2Settings.relay_*_buffer
    cdef readonly size_t peak_buffered   # largest per-stream engine buffer seen (test hook)
    cdef int32_t cur_sid                 # _user_stream's memo: the last stream asked ...
    cdef object cur_st                   # ... and its _Stream (None: nothing remembered)
    cdef unsigned long early_tick        # the read in which it was last flushed early
    # frames of a lazily made session's first output that were sent before it existed
    # (ServerConnection's dormant handshake): our SETTINGS, connection WINDOW_UPDATEs, the
    # ACKs of client SETTINGS; _out_strip drops them by their frame headers
    cdef int strip_set, strip_wu, strip_ack
    cdef size_t strip_skip               # bytes left of a frame crossing a mem_send chunk
    cdef bint strip_drop                 # ... and whether they are dropped

    def __cinit__(self, *args, **kwargs):
        self.session = NULL
        self.streams = {}
        self.q = _queues_here()  # looked up again in connection_made

    def __dealloc__(self):
        self._del_session()

    cdef void _del_session(self) noexcept:
        self.cur_st = None
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    cdef void _set_settings(self, object settings) except *:
        if settings is None:
            settings = _DEFAULT_SETTINGS
        self.settings = settings
        self.max_header_list = settings.max_header_list_size
        self.max_retained = settings.max_retained_body
        self.win_base = _relay_base(settings)
        self.win_full = settings.initial_window_size
        self.relay_stream = settings.relay_stream_buffer
        self.relay_conn = settings.relay_connection_buffer

    cdef int _out(self, const uint8_t *p, size_t n) except -1:
        # the one output buffer of the loop (q.obuf): a flush fills it and empties it before
        # it returns, and flushes never nest, so no connection holds a buffer while idle
        cdef _LoopQueues q = self.q
        cdef size_t cap
        cdef char *nb
        if self.olen + n > q.ocap:
            cap = q.ocap * 2 if q.ocap else 65536
            while cap < self.olen + n:
                cap *= 2
            nb = <char *>realloc(q.obuf, cap)
            if nb == NULL:
                raise MemoryError()
            q.obuf = nb
            q.ocap = cap
        memcpy(q.obuf + self.olen, p, n)
        self.olen += n
        return 0

    cdef int _out_strip(self, const uint8_t *p, size_t n) except -1:
        """``_out`` minus the frames counted in ``strip_*`` (found by their 9-byte headers;
        mem_send chunks start at a frame boundary, a frame may go on in the next chunk)."""
        cdef size_t k, flen
        cdef uint8_t t, fl
        cdef uint32_t sid
        cdef bint drop
        while n:
            if self.strip_skip:
                k = n if n < self.strip_skip else self.strip_skip
                if not self.strip_drop:
                    self._out(p, k)
                self.strip_skip -= k
            elif n < 9 or not (self.strip_set or self.strip_wu or self.strip_ack):
                self.strip_set = self.strip_wu = self.strip_ack = 0
                self._out(p, n)
                return 0
            else:
                flen = 9 + ((<size_t>p[0] << 16) | (<size_t>p[1] << 8) | p[2])
                t = p[3]
                fl = p[4]
                sid = ((<uint32_t>p[5] & 0x7f) << 24) | (<uint32_t>p[6] << 16) \
                    | (<uint32_t>p[7] << 8) | p[8]
                drop = 0
                if sid == 0 and t == NGHTTP2_SETTINGS:
                    if fl & NGHTTP2_FLAG_ACK:
                        if self.strip_ack:
                            self.strip_ack -= 1
                            drop = 1
                    elif self.strip_set:
                        self.strip_set -= 1
                        drop = 1
                elif sid == 0 and t == NGHTTP2_WINDOW_UPDATE and self.strip_wu:
                    self.strip_wu -= 1
                    drop = 1
                k = n if n < flen else flen
                if not drop:
                    self._out(p, k)
                self.strip_skip = flen - k
                self.strip_drop = drop
            p += k
            n -= k
        return 0

    cdef int _write_out(self) except -1:
        cdef bytes b
        if self.olen:
            b = PyBytes_FromStringAndSize(self.q.obuf, self.olen)
            self.olen = 0
            if not self.closing:
                self._write(b)
        return 0

    cdef int _flush(self) except -1:
        cdef const uint8_t *p
        cdef ssize_t n
        if self.session == NULL or self.transport is None or self.paused or self.closing:
            return 0
        self.olen = 0
        while True:
            n = nghttp2_session_mem_send(self.session, &p)
            if n < 0:
                log.error("nghttp2 mem_send: %s", nghttp2_strerror(<int>n).decode())
                self._write_out()
                self._close_transport()
                return 0
            if n == 0:
                self.strip_set = self.strip_wu = self.strip_ack = 0
                self.strip_skip = 0
                break
            if self.strip_set or self.strip_wu or self.strip_ack or self.strip_skip:
                self._out_strip(p, <size_t>n)
            else:
                self._out(p, <size_t>n)
            if self.olen >= _WRITE_CHUNK:
                self._write_out()
                if self.paused or self.session == NULL:
                    return 0
        self._write_out()
        if self.session != NULL and not nghttp2_session_want_read(self.session) \
                and not nghttp2_session_want_write(self.session):
            self._close_transport()
        return 0

    cdef void _close_transport(self) noexcept:
        if self.transport is not None and not self.closing:
            self.closing = 1
            try:
                self.transport.close()
            except BaseException:
                pass

    cdef void _kick(self) noexcept:
        """Mark for flushing; flush now unless a batch is in progress."""
        _mark(self)
        _run(self.q)

    cdef void _feed(self, data) except *:
        cdef bytes b = data if type(data) is bytes else bytes(data)
        self._feed_ptr(<const uint8_t *>PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b))

    cdef void _feed_ptr(self, const uint8_t *p, size_t n) except *:
        """Hand ``n`` received bytes at ``p`` to the session (the caller keeps them alive)."""
        cdef _LoopQueues q = self.q
        cdef ssize_t rv
        if self.session == NULL:
            return
        q.io_ticks += 1
        q.busy += 1
        try:
            rv = nghttp2_session_mem_recv(self.session, p, n)
        finally:
            q.busy -= 1
            q.last_finished = None  # early flushes are per upstream read
        if rv < 0 and self.session != NULL:
            # a fatal error of the session (a CONTINUATION or other flood, a bad preface...):
            # GOAWAY with a code before the close below (a no-op when one is queued already)
            nghttp2_session_terminate_session(
                self.session, NGHTTP2_ENHANCE_YOUR_CALM if rv == -904 or rv == -905  # FLOODED,
                else NGHTTP2_INTERNAL_ERROR if rv == NGHTTP2_ERR_CALLBACK_FAILURE  # CONTINUATIONS
                else NGHTTP2_PROTOCOL_ERROR)
        _mark(self)
        if self.upstream or q.busy:
            _run(q)
        else:  # a downstream read: what it sends upstream waits for the iteration's end
            q.hold_loop = self.loop
            try:
                _run(q)
            finally:
                q.hold_loop = None
        if rv < 0:
            log.info("nghttp2: closing connection: %s", nghttp2_strerror(<int>rv).decode())
            self._close_transport()

    # asyncio.Protocol -----------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.paused = 1

    def resume_writing(self) -> None:
        self.paused = 0
        self._kick()

    def data_received(self, data) -> None:
        self._feed(data)

    def eof_received(self):
        return None

    cdef void _note_buffered(self, _Stream st) noexcept:
        cdef size_t n = (st.rq.end - st.rq.start) + (st.rs.end - st.rs.start)
        if n > self.peak_buffered:
            self.peak_buffered = n

    def close(self) -> None:
        """Abort the connection now."""
        if self.transport is not None and not self.lost:
            self.closing = 1
            self.transport.abort()


cdef nghttp2_option *_new_option(object settings, bint server) except NULL:
    cdef nghttp2_option *opt
    cdef unsigned long long rate
    if nghttp2_option_new(&opt) != 0:
        raise MemoryError()
    nghttp2_option_set_no_auto_window_update(opt, 1)
    nghttp2_option_set_no_closed_streams(opt, 1)
    if server:
        # our own per-second counter answers GOAWAY(ENHANCE_YOUR_CALM) first; nghttp2's
        # token bucket stays as a backstop at twice the limit
        rate = 2 * <unsigned long long>settings.max_resets_per_second
        if rate < 2:
            rate = 2
        nghttp2_option_set_stream_reset_rate_limit(opt, rate, rate)
    return opt


cdef int32_t _relay_base(object st):
    """The stream window an upstream (client) session advertises: what a producer may send
    on any stream before the grant made when its request goes out (_cli_frame_send)."""
    return min(st.initial_window_size, st.relay_stream_buffer, 16384)


cdef int _submit_settings(nghttp2_session *s, object st, bint server) except -1:
    cdef nghttp2_settings_entry iv[8]
    cdef int n = 0
    if server:
        iv[n].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[n].value = st.max_concurrent_streams
        n += 1
    else:
        iv[n].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        iv[n].value = 0
        n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
    iv[n].value = st.initial_window_size if server else _relay_base(st)
    n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_MAX_FRAME_SIZE
    iv[n].value = st.max_frame_size
    n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
    iv[n].value = st.max_header_list_size
    n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_HEADER_TABLE_SIZE
    iv[n].value = st.header_table_size
    n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES
    iv[n].value = 1
    n += 1
    rv = nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, n)
    if rv != 0:
        raise ValueError(f"bad HTTP/2 settings: {nghttp2_strerror(rv).decode()}")
    if st.connection_window_size > 65535:
        nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, st.connection_window_size)
    return 0


cdef dict _greetings = {}
cdef nghttp2_session_callbacks *_bare_callbacks = NULL


cdef tuple _greeting(object st):
    """``(bytes, SETTINGS frames, WINDOW_UPDATE frames)``: exactly what a new server session
    with these settings sends first (our SETTINGS, the connection WINDOW_UPDATE), taken from
    a throwaway session once per distinct settings."""
    global _bare_callbacks
    cdef nghttp2_session *s = NULL
    cdef nghttp2_option *opt
    cdef const uint8_t *p
    cdef ssize_t n
    cdef size_t i, flen
    cdef const uint8_t *g
    key = (st.max_concurrent_streams, st.initial_window_size, st.max_frame_size,
           st.max_header_list_size, st.header_table_size, st.connection_window_size)
    got = _greetings.get(key)
    if got is not None:
        return got
    if _bare_callbacks == NULL and nghttp2_session_callbacks_new(&_bare_callbacks) != 0:
        raise MemoryError()
    opt = _new_option(st, 1)
    rv = nghttp2_session_server_new3(&s, _bare_callbacks, NULL, opt, NULL)
    nghttp2_option_del(opt)
    if rv != 0:
        raise MemoryError()
    out = bytearray()
    try:
        _submit_settings(s, st, 1)
        while True:
            n = nghttp2_session_mem_send(s, &p)
            if n <= 0:
                break
            out += (<char *>p)[:n]
    finally:
        nghttp2_session_del(s)
    data = bytes(out)
    g = <const uint8_t *>PyBytes_AS_STRING(data)
    nset = nwu = 0
    i = 0
    while i + 9 <= <size_t>len(data):
        flen = (<size_t>g[i] << 16) | (<size_t>g[i + 1] << 8) | g[i + 2]
        if g[i + 3] == NGHTTP2_SETTINGS:
            nset += 1
        elif g[i + 3] == NGHTTP2_WINDOW_UPDATE:
            nwu += 1
        else:
            raise RuntimeError(f"unexpected frame type {g[i + 3]} in the server greeting")
        i += 9 + flen
    got = (data, nset, nwu)
    if len(_greetings) < 64:
        _greetings[key] = got
    return got


# ---------------------------------------------------------------------------------------------
# data providers (run inside mem_send of the session that sends the DATA)

cdef ssize_t _read_bytes(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) noexcept:
    """A whole local body (respond / request): ``out_body`` then ``out_trailers``."""
    cdef _Stream st = <_Stream>src.ptr
    cdef size_t total = PyBytes_GET_SIZE(st.out_body) if st.out_body is not None else 0
    cdef size_t n = total - st.out_off
    if n > length:
        n = length
    if n:
        memcpy(buf, PyBytes_AS_STRING(st.out_body) + st.out_off, n)
        st.out_off += n
    if st.out_off == total:
        flags[0] |= NGHTTP2_DATA_FLAG_EOF
        if st.out_trailers:
            if _submit_trailer(s, stream_id, st.out_trailers) == 0:
                flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
        st.out_body = None
    return n


cdef int _submit_trailer(nghttp2_session *s, int32_t stream_id, list trailers) noexcept:
    cdef list keep = []
    cdef nghttp2_nv *nva
    cdef int rv
    try:
        nva = _nva_from(trailers, keep, 0)
    except BaseException:
        return -1
    rv = nghttp2_submit_trailer(s, stream_id, nva, len(trailers))
    free(nva)
    return rv


cdef ssize_t _read_request(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud) noexcept:
    """Upstream side of a splice: relay the held/arriving request body, then trailers."""
    cdef _Stream st = <_Stream>src.ptr
    cdef size_t n = st.rq_total - st.rq_sent
    cdef ServerConnection srv
    if n > length:
        n = length
    if n:
        memcpy(buf, st.rq.data + st.rq.start + (st.rq_sent - st.rq_base), n)
        st.rq_sent += n
        if not st.retain or st.retain_lost:
            st._drop_sent()
        if st.rq_sent > st.rq_acked:
            srv = st.server
            if not st.down_closed and srv.session != NULL:
                nghttp2_session_consume(srv.session, st.sid, st.rq_sent - st.rq_acked)
                _mark(srv)
            st.rq_acked = st.rq_sent
    if st.rq_sent == st.rq_total and st.req_end:
        flags[0] |= NGHTTP2_DATA_FLAG_EOF
        if st.req_trailers:
            if _submit_trailer(s, stream_id, st.req_trailers) == 0:
                flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
        return n
    if n == 0:
        st.up_deferred = 1
        return NGHTTP2_ERR_DEFERRED
    return n


cdef ssize_t _read_response(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud) noexcept:
    """Downstream side of a splice: relay the upstream response body, then trailers."""
    cdef _Stream st = <_Stream>src.ptr
    cdef size_t n = st.rs.end - st.rs.start
    cdef ClientConnection cli
    cdef list keep
    cdef size_t cnt
    cdef nghttp2_nv *nva
    if n > length:
        n = length
    if n:
        memcpy(buf, st.rs.data + st.rs.start, n)
        st.rs.start += n
        if st.rs.start == st.rs.end:
            st.rs.start = st.rs.end = 0
        cli = st.client
        if cli is not None and cli.session != NULL:
            # the stream window only: the connection window was acknowledged on arrival
            nghttp2_session_consume_stream(cli.session, st.cid, n)
            _mark(cli)
    if st.rs.start == st.rs.end and st.resp_end:
        flags[0] |= NGHTTP2_DATA_FLAG_EOF
        if st.rh_n > st.rh_base:  # trailers
            keep = []
            try:
                nva = st._rh_nva(None, keep, &cnt)
            except BaseException:
                nva = NULL
            if nva != NULL:
                if nghttp2_submit_trailer(s, stream_id, nva, cnt) == 0:
                    flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
                free(nva)
            st._rh_clear()
        return n
    if n == 0:
        st.down_deferred = 1
        return NGHTTP2_ERR_DEFERRED
    return n


cdef inline void *_user_stream(_Conn c, nghttp2_session *s, int32_t sid) noexcept:
    """The stream's ``_Stream`` (its nghttp2 user data), remembering the last one asked: every
    field of a header block asks for the same stream, and nghttp2 answers each from its stream
    map.  The memo holds a reference and is dropped when the stream closes (its user data
    goes then too) and with the session."""
    cdef void *p
    if sid == c.cur_sid and c.cur_st is not None:
        return <void *>c.cur_st
    p = nghttp2_session_get_stream_user_data(s, sid)
    if p != NULL:
        c.cur_sid = sid
        c.cur_st = <object>p
    return p


cdef inline void _forget_stream(_Conn c, int32_t sid) noexcept:
    if c.cur_sid == sid:
        c.cur_st = None
