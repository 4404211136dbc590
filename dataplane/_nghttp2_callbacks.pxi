# =============================================================================================
# dataplane/_nghttp2_callbacks.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# The libnghttp2 session callbacks, server (downstream) and client (upstream) side, and the
# two callback tables built once at import.  They run inside mem_recv / mem_send, in C; they
# call Python only for what the engine interface promises (a request, a finished splice).
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# server (downstream) callbacks

cdef int _srv_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef ServerConnection conn = <ServerConnection>ud
    cdef _Stream st
    if f.hd.type != NGHTTP2_HEADERS or f.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    try:
        st = _Stream.__new__(_Stream)
        st.sid = f.hd.stream_id
        st.sid_obj = st.sid
        st.server = conn
        # HDR_SLOTS empty slots filled in place by _srv_header (no growth while the block
        # arrives); _announce cuts the list to the fields received
        st.headers = PyList_New(HDR_SLOTS)
        conn.streams[st.sid_obj] = st
        conn.open_streams += 1
    except BaseException:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    nghttp2_session_set_stream_user_data(s, st.sid, <void *>st)
    return 0


cdef int _srv_header(nghttp2_session *s, const nghttp2_frame *f, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *ud) noexcept:
    cdef ServerConnection conn = <ServerConnection>ud
    cdef void *p = _user_stream(conn, s, f.hd.stream_id)
    cdef _Stream st
    cdef nghttp2_vec nb, vb
    cdef size_t fsize
    nb = nghttp2_rcbuf_get_buf(name)
    vb = nghttp2_rcbuf_get_buf(value)
    fsize = nb.len + vb.len + 32
    conn.hb_count += fsize
    if conn.hb_count > conn.max_hbytes and conn._header_budget_spent(fsize):
        return NGHTTP2_ERR_CALLBACK_FAILURE  # GOAWAY(ENHANCE_YOUR_CALM) is queued
    if p == NULL:
        return 0
    st = <_Stream>p
    st.hsize += fsize
    if st.hsize > conn.hard_header_list:
        conn._calm("header block over the hard size limit (HPACK bomb)")
        return NGHTTP2_ERR_CALLBACK_FAILURE
    if st.hsize > conn.max_header_list:
        if not st.too_large and _bomb(conn, st.sid, st.hsize):
            conn._calm("header block decoded from far fewer bytes over the limit (HPACK bomb)")
            return NGHTTP2_ERR_CALLBACK_FAILURE
        if f.headers.cat == NGHTTP2_HCAT_REQUEST:
            st.too_large = 1
            st.headers = None
            return 0
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    if st.too_large:
        return 0
    try:
        pair = conn._header_pair(name, value, nb, vb)
        if f.headers.cat == NGHTTP2_HCAT_REQUEST:
            if st.hn < HDR_SLOTS:
                Py_INCREF(pair)
                PyList_SET_ITEM(st.headers, st.hn, pair)
            else:
                st.headers.append(pair)
            st.hn += 1
        else:
            if st.req_trailers is None:
                st.req_trailers = []
            st.req_trailers.append(pair)
    except BaseException:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    return 0


cdef int _srv_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef ServerConnection conn = <ServerConnection>ud
    cdef void *p
    cdef uint8_t t = f.hd.type
    try:
        if t == NGHTTP2_DATA or t == NGHTTP2_HEADERS:
            p = nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
            if p == NULL:
                return 0
            if t == NGHTTP2_HEADERS and f.headers.cat == NGHTTP2_HCAT_REQUEST:
                if f.hd.flags & NGHTTP2_FLAG_END_STREAM:
                    (<_Stream>p).req_end = 1
                conn._announce(<_Stream>p)
            elif f.hd.flags & NGHTTP2_FLAG_END_STREAM:
                conn._request_ended(<_Stream>p)
        elif t == NGHTTP2_RST_STREAM:
            conn._count_reset()
        elif t == NGHTTP2_PING:
            if f.hd.flags & NGHTTP2_FLAG_ACK:
                if conn.draining and memcmp8(f.ping.opaque_data, _DRAIN_PING):
                    conn._final_goaway()
            else:
                conn._count_control()
        elif t == NGHTTP2_SETTINGS or t == NGHTTP2_PRIORITY:
            if not (f.hd.flags & NGHTTP2_FLAG_ACK):
                conn._count_control()
        elif t == NGHTTP2_GOAWAY:
            conn.goaway_recv = 1
    except BaseException:
        log.exception("nghttp2: server frame handling failed")
        if f.hd.stream_id:
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f.hd.stream_id, NGHTTP2_INTERNAL_ERROR)
    return 0


cdef inline bint memcmp8(const uint8_t *a, bytes b) noexcept:
    cdef const char *q = PyBytes_AS_STRING(b)
    cdef int i
    for i in range(8):
        if a[i] != <uint8_t>q[i]:
            return 0
    return 1


cdef int _srv_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                   size_t n, void *ud) noexcept:
    cdef void *p = nghttp2_session_get_stream_user_data(s, stream_id)
    cdef _Stream st
    cdef ClientConnection cli
    cdef int mode
    if p == NULL:
        nghttp2_session_consume(s, stream_id, n)
        return 0
    st = <_Stream>p
    mode = st.mode
    if mode == M_HELD or mode == M_WAIT or (mode == M_SPLICE and not st.up_closed):
        if buf_append(&st.rq, data, n) != 0:
            nghttp2_session_consume(s, stream_id, n)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        st.rq_total += n
        if st.retain and not st.retain_lost and st.held() > st.server.max_retained:
            st.retain_lost = 1
            st._drop_sent()
        st.server._note_buffered(st)
        if mode == M_SPLICE and st.up_deferred:
            cli = st.client
            if cli.session != NULL:
                st.up_deferred = 0
                nghttp2_session_resume_data(cli.session, st.cid)
                _mark(cli)
    elif mode == M_READ:
        nghttp2_session_consume(s, stream_id, n)
        st.rq_total += n
        st.rq_acked += n
        if st.rq_total > st.limit:
            try:
                (<ServerConnection>ud)._body_too_large(st)
            except BaseException:
                log.exception("nghttp2: read_body callback failed")
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        elif buf_append(&st.rq, data, n) != 0:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    else:
        nghttp2_session_consume(s, stream_id, n)
    return 0


cdef int _srv_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t code,
                           void *ud) noexcept:
    cdef ServerConnection conn = <ServerConnection>ud
    cdef _Stream st
    cdef void *p
    try:
        _forget_stream(conn, stream_id)
        # popped by the key it was stored under (no int object made per request)
        p = nghttp2_session_get_stream_user_data(s, stream_id)
        st = conn.streams.pop((<_Stream>p).sid_obj if p != NULL else stream_id, None)
        if st is None:
            return 0
        conn.open_streams -= 1
        conn._downstream_closed(st, code)
    except BaseException:
        log.exception("nghttp2: stream close handling failed")
    return 0


cdef int _srv_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef void *p
    cdef _Stream st
    cdef ServerConnection conn
    if f.hd.type != NGHTTP2_DATA and f.hd.type != NGHTTP2_HEADERS:
        if f.hd.type == NGHTTP2_RST_STREAM:
            conn = <ServerConnection>ud
            conn.rst_ring[conn.rst_next % RST_RING] = f.hd.stream_id
            conn.rst_next += 1
            if f.rst_stream.error_code == NGHTTP2_REFUSED_STREAM:
                try:
                    conn._count_refused()
                except BaseException:
                    log.exception("nghttp2: refused-stream accounting failed")
        return 0
    p = nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
    if p == NULL:
        return 0
    st = <_Stream>p
    if f.hd.type == NGHTTP2_HEADERS and not st.hdr_sent:
        st.hdr_sent = 1
        if st.rst_after_hdr:
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f.hd.stream_id, st.pending_rst)
            return 0
    if f.hd.flags & NGHTTP2_FLAG_END_STREAM:
        # a whole response went out before the request ended: stop the upload politely
        if (st.mode == M_LOCAL or (st.mode == M_SPLICE and st.up_closed)) and not st.req_end \
                and nghttp2_session_get_stream_remote_close(s, f.hd.stream_id) == 0:
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f.hd.stream_id, NGHTTP2_NO_ERROR)
    return 0


# ---------------------------------------------------------------------------------------------
# client (upstream) callbacks

cdef int _cli_header(nghttp2_session *s, const nghttp2_frame *f, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *ud) noexcept:
    cdef ClientConnection conn = <ClientConnection>ud
    cdef void *p = _user_stream(conn, s, f.hd.stream_id)
    cdef _Stream st
    cdef nghttp2_vec nb, vb
    cdef int i, status
    cdef uint64_t lens
    if p == NULL:
        return 0
    st = <_Stream>p
    nb = nghttp2_rcbuf_get_buf(name)
    vb = nghttp2_rcbuf_get_buf(value)
    st.hsize += nb.len + vb.len + 32
    if st.hsize > conn.max_header_list:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    if not st.resp_submitted and nb.len == 7 and nb.base[0] == 58 and nb.base[1] == 115:
        status = 0
        for i in range(<int>vb.len):
            status = status * 10 + (vb.base[i] - 48)
        st.status = status
    if st.mode != M_CLIENT:
        if st.down_closed or st.mode != M_SPLICE:  # nobody downstream wants it any more
            return 0
        # a field of the final response HEADERS (the :status field came first) named in the
        # server's tap set goes to the observer instead: the bitmask of the tapped names'
        # lengths turns most fields away at once (0 when nothing is tapped), then memcmp
        lens = st.server.tap_lens
        if lens and (lens >> (nb.len if nb.len < 63 else 63)) & 1:
            i = _tap_field(st, name, value)
            if i:
                return 0 if i > 0 else NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        if st._rh_add(name, value, flags) != 0:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        return 0
    try:
        pair = (PyBytes_FromStringAndSize(<char *>nb.base, nb.len),
                PyBytes_FromStringAndSize(<char *>vb.base, vb.len))
        if st.resp_submitted:
            st.resp_trailers.append(pair)
        else:
            st.resp_headers.append(pair)
    except BaseException:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    return 0


cdef int _tap_field(_Stream st, nghttp2_rcbuf *name, nghttp2_rcbuf *value) noexcept:
    """A response field whose name has the length of a tapped name: when it is one, in the
    final response HEADERS (the :status field came first), keep it for the observer (1);
    else, or when the observer has no ``on_response_headers``, relay it (0); -1 when out of
    memory.  Out of ``_cli_header`` so that the fields that are not tapped cost it nothing
    but the length test."""
    cdef ServerConnection srv = st.server
    cdef nghttp2_vec nb = nghttp2_rcbuf_get_buf(name)
    cdef nghttp2_vec vb
    cdef int i
    if st.resp_submitted or st.status < 200:  # trailers, or a 1xx
        return 0
    for i in range(srv.tap_n):
        if nb.len == srv.tap_len[i] and nb.base[0] == <uint8_t>srv.tap_ptr[i][0] \
                and memcmp(nb.base, srv.tap_ptr[i], nb.len) == 0:
            break
    else:
        return 0
    if st.tap_state == TAP_UNKNOWN:
        try:
            st.tap_hook = getattr(st.observer, "on_response_headers", None)
        except BaseException:
            log.exception("nghttp2: looking up on_response_headers failed")
            st.tap_hook = None
        st.tap_state = TAP_NONE if st.tap_hook is None else TAP_HOOK
    if st.tap_state == TAP_NONE:
        return 0
    vb = nghttp2_rcbuf_get_buf(value)
    try:
        pair = (PyBytes_FromStringAndSize(<char *>nb.base, nb.len),
                PyBytes_FromStringAndSize(<char *>vb.base, vb.len))
        if st.tapped is None:
            st.tapped = [pair]
        else:
            st.tapped.append(pair)
    except BaseException:
        return -1
    return 1


cdef inline void _response_ended(_Stream st) noexcept:
    """The upstream response's END_STREAM came after its HEADERS: relay the rest downstream
    (a spliced stream), and the client's finished responses may go (``_finished_response``)."""
    st.resp_end = 1
    if st.mode == M_SPLICE:
        st.server._response_more(st)
        _finished_response(st.server)


cdef int _cli_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef ClientConnection conn = <ClientConnection>ud
    cdef void *p
    cdef _Stream st
    cdef uint8_t t = f.hd.type
    try:
        if t == NGHTTP2_HEADERS:
            p = nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
            if p == NULL:
                return 0
            st = <_Stream>p
            st.hsize = 0
            if not st.resp_submitted:
                if 100 <= st.status < 200:
                    if st.mode == M_SPLICE:
                        st.server._informational(st)
                    else:
                        st.resp_headers = []
                    st.status = 0
                    return 0
                st.resp_submitted = 1
                if f.hd.flags & NGHTTP2_FLAG_END_STREAM:
                    st.resp_end = 1
                if st.mode == M_SPLICE:
                    st.server._spliced_response(st)
                    if st.resp_end:
                        _finished_response(st.server)
                else:
                    st.resp_trailers = []
            elif f.hd.flags & NGHTTP2_FLAG_END_STREAM:  # trailers
                _response_ended(st)
        elif t == NGHTTP2_DATA:
            if f.hd.flags & NGHTTP2_FLAG_END_STREAM:
                p = nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
                if p == NULL:
                    return 0
                _response_ended(<_Stream>p)
        elif t == NGHTTP2_SETTINGS:
            if not (f.hd.flags & NGHTTP2_FLAG_ACK):
                conn._peer_settings()
        elif t == NGHTTP2_GOAWAY:
            conn.goaway_recv = 1
    except BaseException:
        log.exception("nghttp2: client frame handling failed")
        if f.hd.stream_id:
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f.hd.stream_id, NGHTTP2_INTERNAL_ERROR)
    return 0


cdef int _cli_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                   size_t n, void *ud) noexcept:
    cdef void *p = nghttp2_session_get_stream_user_data(s, stream_id)
    cdef _Stream st
    cdef ServerConnection srv
    if p == NULL:
        nghttp2_session_consume(s, stream_id, n)
        return 0
    st = <_Stream>p
    if st.mode != M_CLIENT:
        if st.down_closed or st.mode != M_SPLICE:  # splice cancelled or downstream gone
            nghttp2_session_consume(s, stream_id, n)
            return 0
        if buf_append(&st.rs, data, n) != 0:
            nghttp2_session_consume(s, stream_id, n)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        # the connection window goes back at once: one client that does not read must not
        # stall the upstream connection others share; the stream's waits for the downstream
        nghttp2_session_consume_connection(s, n)
        srv = st.server
        srv._note_buffered(st)
        if srv.report_stall:
            srv._check_stall(st)
        if st.down_deferred and srv.session != NULL:
            st.down_deferred = 0
            nghttp2_session_resume_data(srv.session, st.sid)
            _mark(srv)
        return 0
    nghttp2_session_consume(s, stream_id, n)
    if buf_append(&st.rs, data, n) != 0:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    return 0


cdef int _cli_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef void *p
    cdef _Stream st
    cdef ClientConnection conn = <ClientConnection>ud
    cdef ServerConnection srv
    cdef size_t want, extra = 0
    if f.hd.type == NGHTTP2_HEADERS and f.headers.cat == NGHTTP2_HCAT_REQUEST:
        p = nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
        if p != NULL:
            st = <_Stream>p
            st.up_sent = 1
            # the stream's window beyond the advertised base: a spliced stream's within its
            # downstream connection's budget (what a client that does not read can pin), our
            # own requests' up to initial_window_size
            if st.mode == M_SPLICE and st.server is not None:
                srv = st.server
                want = srv.relay_stream - <size_t>conn.win_base \
                    if srv.relay_stream > <size_t>conn.win_base else 0
                if srv.relay_granted < srv.relay_conn:
                    extra = srv.relay_conn - srv.relay_granted
                    if extra > want:
                        extra = want
                srv.relay_granted += extra
                st.win_extra += extra
            elif st.mode == M_CLIENT and conn.win_full > <size_t>conn.win_base:
                extra = conn.win_full - <size_t>conn.win_base
            if extra:
                nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, f.hd.stream_id,
                                                      conn.win_base + <int32_t>extra)
    return 0


cdef int _cli_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_error,
                             void *ud) noexcept:
    cdef ClientConnection conn = <ClientConnection>ud
    if f.hd.type != NGHTTP2_HEADERS or f.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    try:
        conn._stream_gone(f.hd.stream_id, NGHTTP2_REFUSED_STREAM, 0)
    except BaseException:
        log.exception("nghttp2: refused stream handling failed")
    return 0


cdef int _cli_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t code,
                           void *ud) noexcept:
    cdef ClientConnection conn = <ClientConnection>ud
    try:
        conn._stream_gone(stream_id, code, code != NGHTTP2_REFUSED_STREAM)
    except BaseException:
        log.exception("nghttp2: upstream stream close handling failed")
    return 0


# the callback tables, built once before any session
cdef nghttp2_session_callbacks *_server_callbacks = NULL
cdef nghttp2_session_callbacks *_client_callbacks = NULL


cdef int _build_callbacks() except -1:
    global _server_callbacks, _client_callbacks
    if nghttp2_session_callbacks_new(&_server_callbacks) != 0:
        raise MemoryError()
    nghttp2_session_callbacks_set_on_begin_headers_callback(_server_callbacks, _srv_begin_headers)
    nghttp2_session_callbacks_set_on_header_callback2(_server_callbacks, _srv_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(_server_callbacks, _srv_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_server_callbacks, _srv_data)
    nghttp2_session_callbacks_set_on_stream_close_callback(_server_callbacks, _srv_stream_close)
    nghttp2_session_callbacks_set_on_frame_send_callback(_server_callbacks, _srv_frame_send)
    if nghttp2_session_callbacks_new(&_client_callbacks) != 0:
        raise MemoryError()
    nghttp2_session_callbacks_set_on_header_callback2(_client_callbacks, _cli_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(_client_callbacks, _cli_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_client_callbacks, _cli_data)
    nghttp2_session_callbacks_set_on_stream_close_callback(_client_callbacks, _cli_stream_close)
    nghttp2_session_callbacks_set_on_frame_send_callback(_client_callbacks, _cli_frame_send)
    nghttp2_session_callbacks_set_on_frame_not_send_callback(_client_callbacks,
                                                            _cli_frame_not_send)
    return 0


_build_callbacks()
