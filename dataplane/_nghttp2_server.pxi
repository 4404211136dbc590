# =============================================================================================
# dataplane/_nghttp2_server.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# ``ServerConnection``: one downstream connection (we are the server): the per-connection
# header cache and response tap, the frame-header scan for the RFC 9113 errors libnghttp2
# lets through, the Python side of the server callbacks (announce, splice relay, local
# answers, completion), the abuse limits, and the public API of ``dataplane.engine``.
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# the downstream connection

cdef enum:
    HC_BITS = 5
    HC_SLOTS = 32               # cached request header fields per connection (1 << HC_BITS)
    HC_WAYS = 4                 # slots a field may use, from its hash on
    HC_MAX_FIELD = 128          # longer fields (name + value bytes) are never cached: at most
                                # 32 x 128 B of HPACK buffers pinned per connection
    DORMANT_MAX = 256           # handshake bytes a dormant connection keeps (module doc)
    ENC_RING = 8                # header blocks whose encoded size _scan remembers
    SLICE_BLOCKS = 32           # header blocks decoded from one read per loop iteration
    BOMB_RATIO = 32             # an oversized block decoded from 32x fewer bytes: a bomb

cdef bytes _CLIENT_MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
cdef bytes _SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


cdef inline double _now() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class ServerConnection(_Conn):
    """One downstream HTTP/2 connection (we are the server); see ``dataplane.engine``."""

    cdef object handler
    cdef object _on_request          # handler.on_request, looked up once
    cdef public dict peer_info
    cdef double rst_window, ctl_window
    cdef int rst_count, ctl_count
    cdef int max_resets, max_controls
    cdef bint calmed
    cdef bint final_goaway_sent
    cdef object drain_timer
    cdef readonly bytes deferred     # the rest of a long read, fed on the next iteration
    cdef readonly unsigned int deferred_slices  # reads split so (test hook, as h2's)
    cdef bint greeted                # the client's first bytes came (our SETTINGS may go)
    # lazy session: until the client sends more than the preface, SETTINGS and SETTINGS ACKs
    # the connection is dormant: no nghttp2 session (~25 KB); the handshake is answered here
    # with the bytes the session would send, and the kept bytes are fed to it when it is made
    cdef bytes dormant               # the kept handshake bytes; None: the session exists
    cdef tuple greeting              # _greeting(settings)
    cdef int d_acked                 # client SETTINGS acknowledged while dormant
    cdef bint d_greeted              # our greeting went out while dormant
    # per-connection budgets (H2Settings): decoded header bytes and refused streams per
    # one-second window, one block's hard size limit
    cdef double hb_window, ref_window
    cdef size_t hb_count, max_hbytes, hard_header_list
    cdef int ref_count, max_refused
    # frame-header scan of the client's bytes (_scan): what libnghttp2 does not check with
    # RFC 7540 priorities off (PRIORITY on stream 0) or cannot (a lower, never-opened id)
    cdef size_t scan_pre, scan_skip
    cdef int scan_hn
    cdef uint8_t scan_hdr[9]
    cdef int32_t scan_top            # the highest client stream id seen in HEADERS
    cdef int32_t rst_ring[RST_RING]  # the last stream ids we reset (a late HEADERS is fine)
    cdef unsigned int rst_next
    cdef bint scan_dead
    # encoded bytes of the last header blocks (HEADERS + CONTINUATIONs) by stream id, for the
    # HPACK-bomb test of an oversized block (_oversized)
    cdef int32_t enc_sid[ENC_RING]
    cdef uint32_t enc_len[ENC_RING]
    cdef unsigned int enc_next
    cdef unsigned int enc_pending    # blocks recorded since the last feed (< ENC_RING)
    cdef size_t scan_stop            # _scan stopped this many bytes in: feed them first
    cdef int32_t held_sid            # the HEADERS frame the stop came at, recorded after it
    cdef uint32_t held_len
    cdef size_t bomb_floor           # 4x our HEADER_TABLE_SIZE: more than table references
    # received header fields as (name, value) tuples, keyed by the HPACK decoder's buffers:
    # a field decoded from the static or dynamic table arrives in the same nghttp2_rcbuf each
    # time, so a repeated header costs no Python allocation (see _header_pair)
    cdef nghttp2_rcbuf *hc_name[HC_SLOTS]
    cdef nghttp2_rcbuf *hc_value[HC_SLOTS]
    cdef PyObject *hc_pair[HC_SLOTS]
    cdef readonly size_t header_cache_hits   # test hook
    cdef unsigned int hc_next                # the way the next eviction takes
    # settings.tap_response_headers: what _cli_header compares the response fields with
    cdef uint64_t tap_lens                   # bit min(len, 63) set for each name's length
    cdef int tap_n
    cdef const char **tap_ptr
    cdef size_t *tap_len
    cdef tuple tap_names                     # owns the bytes tap_ptr points into
    # upstream stream windows granted beyond the base for this connection's spliced streams
    # (H2Settings.relay_connection_buffer bounds it; _cli_frame_send, _stream_gone)
    cdef readonly size_t relay_granted
    cdef bint report_stall                   # settings.report_response_stall

    def __dealloc__(self):
        # runs before _Conn's, which deletes the session the cached buffers belong to
        self._drop_header_cache()
        free(self.tap_ptr)
        free(self.tap_len)

    cdef void _hc_drop(self, size_t i) noexcept:
        if self.hc_pair[i] != NULL:
            nghttp2_rcbuf_decref(self.hc_name[i])
            nghttp2_rcbuf_decref(self.hc_value[i])
            Py_XDECREF(self.hc_pair[i])
            self.hc_pair[i] = NULL
            self.hc_name[i] = NULL
            self.hc_value[i] = NULL

    cdef void _drop_header_cache(self) noexcept:
        """Release every cached field (before the session is deleted: the buffers belong to
        its allocator state)."""
        cdef size_t i
        for i in range(HC_SLOTS):
            self._hc_drop(i)

    cdef object _header_pair(self, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                             nghttp2_vec nb, nghttp2_vec vb):
        """``(name, value)`` as bytes, shared with earlier requests that carried the same
        decoder buffers.  HC_WAYS-way: a field may sit in any of the HC_WAYS slots from its
        hash on, so a few fields of one request that hash alike do not evict each other.
        Entries hold a reference on both buffers, so a pointer is never reused while cached;
        at most HC_SLOTS fields of up to HC_MAX_FIELD bytes are held."""
        # Fibonacci hashing of both pointers: their low bits are zero (pool blocks are aligned),
        # so the slot comes from the product's top bits
        cdef uint64_t k = (<uint64_t><size_t>name) * <uint64_t>0x9E3779B97F4A7C15ULL
        k = (k ^ <uint64_t><size_t>value) * <uint64_t>0x9E3779B97F4A7C15ULL
        cdef size_t h = <size_t>(k >> (64 - HC_BITS))
        cdef size_t i, j, free_slot = HC_SLOTS
        for j in range(HC_WAYS):
            i = (h + j) & (HC_SLOTS - 1)
            if self.hc_pair[i] == NULL:
                if free_slot == HC_SLOTS:
                    free_slot = i
            elif self.hc_name[i] == name and self.hc_value[i] == value:
                self.header_cache_hits += 1
                return <object>self.hc_pair[i]
        pair = (_static_name(name, nb) if nghttp2_rcbuf_is_static(name)
                else PyBytes_FromStringAndSize(<char *>nb.base, nb.len),
                PyBytes_FromStringAndSize(<char *>vb.base, vb.len))
        # :path and content-length are skipped: their values change from request to request
        # (SUPIs, resource ids, body sizes) and HPACK encoders do not index them (nghttp2's
        # never does), so they would only evict fields that repeat
        if nb.len + vb.len <= HC_MAX_FIELD and not (
                (nb.len == 5 and memcmp(nb.base, b":path", 5) == 0)
                or (nb.len == 14 and memcmp(nb.base, b"content-length", 14) == 0)):
            # an empty slot of the set, else the set's ways in turn (round robin)
            if free_slot == HC_SLOTS:
                free_slot = (h + self.hc_next) & (HC_SLOTS - 1)
                self.hc_next = (self.hc_next + 1) % HC_WAYS
                self._hc_drop(free_slot)
            nghttp2_rcbuf_incref(name)
            nghttp2_rcbuf_incref(value)
            Py_INCREF(pair)
            self.hc_name[free_slot] = name
            self.hc_value[free_slot] = value
            self.hc_pair[free_slot] = <PyObject *>pair
        return pair

    def __init__(self, handler, settings=None, peer_info=None) -> None:
        self.handler = handler
        self._on_request = handler.on_request
        self._set_settings(settings)
        self.peer_info = peer_info if peer_info is not None else {}
        self.max_resets = self.settings.max_resets_per_second
        self.max_controls = self.settings.max_control_frames_per_second
        self.max_hbytes = self.settings.max_header_bytes_per_second
        self.hard_header_list = self.settings.hard_header_list_size
        self.max_refused = self.settings.max_refused_streams_per_second
        self.bomb_floor = 4 * <size_t>self.settings.header_table_size
        self.scan_pre = 24  # the client magic, checked by libnghttp2
        self._set_tap(self.settings.tap_response_headers)
        self.report_stall = self.settings.report_response_stall

    cdef void _set_tap(self, names) except *:
        cdef int i
        cdef bytes name
        cdef tuple t = tuple(bytes(n) for n in names if n)
        free(self.tap_ptr)
        free(self.tap_len)
        self.tap_ptr = NULL
        self.tap_len = NULL
        self.tap_n = 0
        self.tap_lens = 0
        self.tap_names = t
        if not t:
            return
        self.tap_ptr = <const char **>malloc(len(t) * sizeof(char *))
        self.tap_len = <size_t *>malloc(len(t) * sizeof(size_t))
        if self.tap_ptr == NULL or self.tap_len == NULL:
            raise MemoryError()
        for i in range(len(t)):
            name = t[i]
            self.tap_ptr[i] = PyBytes_AS_STRING(name)
            self.tap_len[i] = PyBytes_GET_SIZE(name)
            self.tap_lens |= (<uint64_t>1) << (self.tap_len[i] if self.tap_len[i] < 63 else 63)
        self.tap_n = len(t)

    def connection_made(self, transport) -> None:
        cdef nghttp2_option *opt
        self.transport = transport
        self._write = transport.write
        try:
            self.loop = asyncio.get_running_loop()  # where completions are reported
        except RuntimeError:
            self.loop = None  # driven by hand: completions are reported at once
        self.q = _queues_here()
        if "peername" not in self.peer_info:
            self.peer_info["peername"] = transport.get_extra_info("peername")
        # dormant until the client sends more than the handshake (_dormant_take); our
        # greeting leaves with the answer to the client's first bytes, so that an HTTP/1.x
        # client can be told 505 in its own protocol (dataplane.http1_refusal)
        self.greeting = _greeting(self.settings)
        self.dormant = b""

    cdef void _materialize(self) except *:
        """Make the session, feed it the kept handshake bytes, and have ``_flush`` drop from
        its first output the frames already sent while dormant."""
        cdef nghttp2_option *opt
        cdef bytes kept = self.dormant
        self.dormant = None
        opt = _new_option(self.settings, 1)
        rv = nghttp2_session_server_new3(&self.session, _server_callbacks, <void *>self, opt,
                                         _session_mem)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError()
        _submit_settings(self.session, self.settings, 1)
        if self.d_greeted:
            self.strip_set = self.greeting[1]
            self.strip_wu = self.greeting[2]
        self.strip_ack = self.d_acked
        if kept:
            self._feed(kept)

    cdef bint _dormant_take(self, bytes b) except *:
        """Keep ``b`` and answer it here if the kept bytes with it are still only the client
        preface, SETTINGS (values the session would accept) and SETTINGS ACKs, at most
        DORMANT_MAX bytes; False: the session must be made (anything else, or in doubt)."""
        cdef bytes cand = self.dormant + b
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(cand)
        cdef size_t n = <size_t>PyBytes_GET_SIZE(cand)
        cdef size_t i, j, flen
        cdef int nset = 0, nack = 0
        cdef uint32_t v
        cdef unsigned int ident
        if n > DORMANT_MAX:
            return 0
        i = n if n < 24 else 24
        if memcmp(p, PyBytes_AS_STRING(_CLIENT_MAGIC), i) != 0:
            return 0
        while i + 9 <= n:
            flen = (<size_t>p[i] << 16) | (<size_t>p[i + 1] << 8) | p[i + 2]
            if p[i + 3] != NGHTTP2_SETTINGS or p[i + 5] or p[i + 6] or p[i + 7] or p[i + 8]:
                return 0
            if p[i + 4] & NGHTTP2_FLAG_ACK:
                nack += 1
                if flen != 0 or nset == 0 or nack > self.greeting[1]:
                    return 0
            else:
                if flen % 6 or flen > 96:
                    return 0
                if i + 9 + flen > n:
                    break  # the rest of this SETTINGS comes later
                j = i + 9
                while j < i + 9 + flen:
                    ident = (<unsigned int>p[j] << 8) | p[j + 1]
                    v = (<uint32_t>p[j + 2] << 24) | (<uint32_t>p[j + 3] << 16) \
                        | (<uint32_t>p[j + 4] << 8) | p[j + 5]
                    if ident == 2:
                        if v > 1:
                            return 0
                    elif ident == 4:
                        if v > 0x7fffffff:
                            return 0
                    elif ident == 5:
                        if v < 16384 or v > 16777215:
                            return 0
                    elif ident != 1 and ident != 3 and ident != 6:
                        return 0
                    j += 6
                nset += 1
            i += 9 + flen
        self.dormant = cand
        out = b""
        if not self.d_greeted:
            self.d_greeted = 1
            out = self.greeting[0]
        if nset > self.d_acked:
            out += _SETTINGS_ACK * (nset - self.d_acked)
            self.d_acked = nset
        if out and not self.closing:
            self._write(out)
        return 1

    def data_received(self, data) -> None:
        cdef bytes b
        cdef uint32_t code
        cdef unsigned int fed = 0
        if self.scan_dead or self.calmed:
            # cut (GOAWAY queued or sent, the close follows): what the client keeps sending
            # meanwhile is not even parsed
            return
        b = data if type(data) is bytes else bytes(data)
        if self.deferred is not None:  # reading is paused; bytes read before that come last
            self.deferred += b
            return
        if not self.greeted:
            self.greeted = 1
            reply = http1_refusal(b)
            if reply is not None:
                self._refuse_http1(reply)
                return
        if self.dormant is not None:
            if self._dormant_take(b):
                # keeps the scan's place; a SETTINGS frame is nothing it looks for
                _scan(self, <const uint8_t *>PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b))
                return
            self._materialize()
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(b)
        cdef size_t n = <size_t>PyBytes_GET_SIZE(b)
        while True:
            # the HPACK-bomb test needs each block's encoded size when it is decoded: a read
            # that opens more blocks than the ring remembers goes to the session in parts
            code = _scan(self, p, n)
            if code:
                self._connection_error(code)
                return
            if not self.scan_stop:
                break
            self._feed_ptr(p, self.scan_stop)
            p += self.scan_stop
            n -= self.scan_stop
            self.scan_stop = 0
            fed += self.enc_pending
            self.enc_pending = 0
            _record_block(self, self.held_sid, self.held_len)
            if self.session == NULL or self.calmed or self.scan_dead or self.lost:
                return
            if fed >= SLICE_BLOCKS and n and self.loop is not None \
                    and self.transport is not None:
                # enough requests from this read for one loop iteration: the rest waits for
                # the next, with reading paused, so that other connections are served between
                self.deferred = PyBytes_FromStringAndSize(<const char *>p, <Py_ssize_t>n)
                self.deferred_slices += 1
                self.transport.pause_reading()
                self.loop.call_soon(self._feed_deferred)
                return
        self._feed_ptr(p, n)
        self.enc_pending = 0

    def _feed_deferred(self) -> None:
        """The rest of a long read (``data_received``), then reading again."""
        data = self.deferred
        self.deferred = None
        if data is None or self.lost or self.transport is None:
            return
        self.data_received(data)
        if self.deferred is None and not self.lost and self.transport is not None:
            self.transport.resume_reading()

    cdef void _connection_error(self, uint32_t code) except *:
        """GOAWAY(code), then close; nothing more the client sends is read."""
        self.scan_dead = 1
        log.info("nghttp2: connection error %d from %s: GOAWAY", code,
                 self.peer_info.get("peername"))
        if self.session != NULL:
            nghttp2_session_terminate_session(self.session, code)
            self._kick()

    cdef void _refuse_http1(self, bytes reply) except *:
        """Answer an HTTP/1.x client in HTTP/1.1 and close (after our FIN, so its request
        bytes still unread cannot turn the close into a reset that loses the answer)."""
        log.info("nghttp2: HTTP/1.x request from %s on an HTTP/2 listener: 505",
                 self.peer_info.get("peername"))
        self.closing = 1
        self.transport.write(reply)
        close_after_fin(self.transport, _REFUSE_LINGER_S)

    def connection_lost(self, exc) -> None:
        cdef _Stream st
        if self.lost:
            return
        self.lost = 1
        self.closing = 1
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        self.dormant = None
        streams = list(self.streams.values())
        self.streams.clear()
        self.open_streams = 0
        try:
            for st in streams:
                try:
                    self._downstream_closed(st, NGHTTP2_CANCEL)
                except BaseException:
                    log.exception("nghttp2: cleanup of a lost stream failed")
        finally:
            self._drop_header_cache()
            self._del_session()
            self.transport = None
            self._write = None
        try:
            self.handler.on_connection_lost(self)
        except BaseException:
            log.exception("nghttp2: on_connection_lost failed")
        _run(self.q)

    # callbacks' Python side ---------------------------------------------------------------

    cdef void _announce(self, _Stream st) except *:
        if st.too_large:
            problem_headers, body = engine_problem(431, self.max_header_list)
            self._respond(st, 431, problem_headers, body, None)
            self._count_refused()  # a 431 counts as a refused stream (HPACK bomb)
            return
        st.announced = 1
        headers = st.headers
        if st.hn < HDR_SLOTS:
            Py_SET_SIZE(headers, st.hn)
        st.headers = None
        st.hsize = 0
        try:
            self._on_request(self, st.sid_obj, headers, True if st.req_end else False)
        except BaseException:
            log.exception("nghttp2: on_request failed; resetting stream %d", st.sid)
            if not st.down_closed:
                st.mode = M_DISCARD
                nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, st.sid,
                                          NGHTTP2_INTERNAL_ERROR)
                _mark(self)

    cdef void _request_ended(self, _Stream st) except *:
        cdef ClientConnection cli
        st.req_end = 1
        if st.mode == M_SPLICE:
            cli = st.client
            if st.up_deferred and not st.up_closed and cli.session != NULL:
                st.up_deferred = 0
                nghttp2_session_resume_data(cli.session, st.cid)
                _mark(cli)
        elif st.mode == M_READ:
            self._deliver_body(st)

    cdef void _deliver_body(self, _Stream st) except *:
        body = PyBytes_FromStringAndSize(st.rq.data + st.rq.start, st.rq.end - st.rq.start)
        buf_clear(&st.rq)
        st.rq_base = st.rq_total
        st.rq_sent = st.rq_total
        st.mode = M_READDONE
        cb = st.callback
        st.callback = None
        cb(body, st.req_trailers or [])

    cdef void _body_too_large(self, _Stream st) except *:
        buf_clear(&st.rq)
        cb = st.callback
        st.callback = None
        st.mode = M_HELD
        problem_headers, body = engine_problem(413, st.limit)
        self._respond(st, 413, problem_headers, body, None)
        if cb is not None:
            cb(None, [])

    cdef void _release_held(self, _Stream st) noexcept:
        """Acknowledge request bytes we will never relay (WINDOW_UPDATE to the client)."""
        cdef size_t n = st.rq_total - st.rq_acked
        if n and self.session != NULL:
            nghttp2_session_consume(self.session, st.sid, n)
            _mark(self)
        st.rq_acked = st.rq_total

    cdef void _respond(self, _Stream st, int status, headers, body, trailers) except *:
        cdef list keep = []
        cdef list nv = [(b":status", b"%d" % status)]
        cdef nghttp2_nv *nva
        cdef nghttp2_data_provider prd
        cdef int rv
        nv.extend(headers)
        if body and not any(k == b"content-length" for k, _ in nv):
            nv.append((b"content-length", b"%d" % len(body)))
        self._release_held(st)
        buf_clear(&st.rq)
        st.rq_base = st.rq_sent = st.rq_total
        st.mode = M_LOCAL
        st.sent_status = status
        nva = _nva_from(nv, keep, 0)
        try:
            if body or trailers:
                st.out_body = bytes(body)
                st.out_off = 0
                st.out_trailers = list(trailers) if trailers else None
                prd.source.ptr = <void *>st
                prd.read_callback = _read_bytes
                rv = nghttp2_submit_response(self.session, st.sid, nva, len(nv), &prd)
            else:
                rv = nghttp2_submit_response(self.session, st.sid, nva, len(nv), NULL)
        finally:
            free(nva)
        if rv != 0:
            raise ValueError(f"cannot respond on stream {st.sid}: {nghttp2_strerror(rv).decode()}")
        _mark(self)

    cdef void _cancel_splice(self, _Stream st) except *:
        """Give up the upstream stream of a splice before its response (deadline)."""
        cdef ClientConnection cli = st.client
        st.mode = M_LOCAL
        st._rh_clear()
        st.tapped = None
        if st.cid and not st.up_closed and cli is not None and cli.session != NULL:
            nghttp2_submit_rst_stream(cli.session, NGHTTP2_FLAG_NONE, st.cid, NGHTTP2_CANCEL)
            _mark(cli)

    cdef void _informational(self, _Stream st) except *:
        cdef list keep = []
        cdef size_t cnt
        cdef nghttp2_nv *nva
        if not st.down_closed and self.session != NULL:
            nva = st._rh_nva(None, keep, &cnt)
            nghttp2_submit_headers(self.session, NGHTTP2_FLAG_NONE, st.sid, NULL, nva, cnt, NULL)
            free(nva)
            _mark(self)
        st._rh_clear()

    cdef void _spliced_response(self, _Stream st) except *:
        """Final response HEADERS arrived upstream: submit them downstream."""
        cdef list keep = self.q.scratch
        cdef size_t cnt
        cdef nghttp2_nv *nva
        cdef nghttp2_data_provider prd
        cdef int rv
        cdef list extra = st.extra
        if st.tapped is not None:
            extra = self._tap_call(st, extra)
        if st.down_closed or self.session == NULL or st.mode != M_SPLICE:
            st._rh_clear()
            return
        st.sent_status = st.status
        nva = st._rh_nva(extra, keep, &cnt, True)
        try:
            if st.resp_end:
                rv = nghttp2_submit_response(self.session, st.sid, nva, cnt, NULL)
            else:
                prd.source.ptr = <void *>st
                prd.read_callback = _read_response
                rv = nghttp2_submit_response(self.session, st.sid, nva, cnt, &prd)
        finally:
            free(nva)
            _scratch_clear(keep)
            st.rh_base = st.rh_n  # the frame points into these rcbufs until it is sent
        if rv != 0:
            log.warning("nghttp2: cannot relay response on stream %d: %s", st.sid,
                        nghttp2_strerror(rv).decode())
            nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, st.sid,
                                      NGHTTP2_INTERNAL_ERROR)
        _mark(self)

    cdef void _check_stall(self, _Stream st) noexcept:
        """Relayed response bytes arrived for ``st``: when the client's windows cannot take
        what is buffered, tell the observer (once; settings.report_response_stall)."""
        cdef int32_t w, cw
        if st.stall_told or self.session == NULL or st.observer is None:
            return
        w = nghttp2_session_get_stream_remote_window_size(self.session, st.sid)
        cw = nghttp2_session_get_remote_window_size(self.session)
        if cw < w:
            w = cw
        if w > 0 and st.rs.end - st.rs.start <= <size_t>w:
            return
        st.stall_told = 1
        try:
            st.observer.on_response_stalled(st.sid_obj, st.status)
        except BaseException:
            log.exception("nghttp2: on_response_stalled failed on stream %d", st.sid)

    cdef list _tap_call(self, _Stream st, list extra):
        """Hand the tapped fields to ``observer.on_response_headers``; returns the fields to
        append to the relayed ones: ``extra`` plus what it returned (as bytes pairs)."""
        cdef list add
        fields = st.tapped
        hook = st.tap_hook
        st.tapped = None
        st.tap_hook = None
        try:
            ret = hook(st.sid_obj, st.status, fields)
            if ret is None:
                return extra
            add = []
            for k, v in ret:
                add.append((_field_bytes(k), _field_bytes(v)))
        except Exception:
            log.exception("nghttp2: on_response_headers failed on stream %d; tapped fields "
                          "dropped", st.sid)
            return extra
        if not add:
            return extra
        return extra + add if extra else add

    cdef void _response_more(self, _Stream st) noexcept:
        if st.down_deferred and not st.down_closed and self.session != NULL:
            st.down_deferred = 0
            nghttp2_session_resume_data(self.session, st.sid)
            _mark(self)

    cdef void _downstream_closed(self, _Stream st, uint32_t code) except *:
        cdef ClientConnection cli
        st.down_closed = 1
        st.down_err = code
        self._release_held(st)
        mode = st.mode
        if mode == M_SPLICE and st.cid and not st.up_closed:
            cli = st.client
            if (code != 0 or not st.req_end) and cli.session != NULL:
                nghttp2_session_consume_stream(cli.session, st.cid, st.rs.end - st.rs.start)
                buf_clear(&st.rs)
                nghttp2_submit_rst_stream(cli.session, NGHTTP2_FLAG_NONE, st.cid, NGHTTP2_CANCEL)
                _mark(cli)
        if st.announced and code and (mode == M_HELD or mode == M_WAIT or mode == M_READ):
            hook = getattr(self.handler, "on_stream_reset", None)
            if hook is not None:
                try:
                    hook(self, st.sid, code)
                except BaseException:
                    log.exception("nghttp2: on_stream_reset failed")
        if mode == M_READ and st.callback is not None:
            cb = st.callback
            st.callback = None
            cb(None, [])
        self._maybe_complete(st)

    cdef void _upstream_closed(self, _Stream st, uint32_t code, bint reached) except *:
        """The upstream stream of a splice is gone (closed, refused, connection lost)."""
        if st.down_closed:
            self._maybe_complete(st)
            return
        if not st.resp_submitted:
            # failed before a response: the observer decides (error, reset or replay)
            st._rh_clear()
            st.tapped = st.tap_hook = None
            buf_clear(&st.rs)
            st.mode = M_WAIT
            st.cid = 0
            st.client = None
            st.up_closed = 0
            st.up_deferred = 0
            st.up_sent = 0
            st.status = 0
            st.hsize = 0
            st.resp_end = 0
            if not st.retain or st.retain_lost:
                st._drop_sent()
            try:
                st.observer.on_upstream_failed(st.sid_obj, code, reached)
            except BaseException:
                log.exception("nghttp2: on_upstream_failed failed; resetting stream %d", st.sid)
                if not st.down_closed and self.session != NULL:
                    st.mode = M_DISCARD
                    nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, st.sid,
                                              NGHTTP2_INTERNAL_ERROR)
                    _mark(self)
            return
        if code != 0 and not st.resp_end:
            if self.session != NULL:
                if not st.hdr_sent:
                    # let the relayed response HEADERS out first; RST_STREAM follows them
                    st.rst_after_hdr = 1
                    st.pending_rst = code
                else:
                    nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, st.sid, code)
                _mark(self)
        elif not st.req_end:
            # response complete, request still coming: drop the rest of the upload
            self._release_held(st)
            buf_clear(&st.rq)
            st.rq_base = st.rq_sent = st.rq_total

    cdef void _maybe_complete(self, _Stream st) except *:
        if st.completed or st.observer is None or not st.down_closed:
            return
        if st.cid and not st.up_closed:
            return
        st.completed = 1
        _defer_done(self.q, st, self.loop)

    cdef void _report_complete(self, _Stream st) except *:
        try:
            # a local answer (after a cancelled or failed splice) ends cleanly or not on its own
            st.observer.on_complete(st.sid_obj, st.sent_status, st.down_err or (
                st.up_err if st.mode == M_SPLICE else 0))
        except BaseException:
            log.exception("nghttp2: on_complete failed")

    # abuse limits ----------------------------------------------------------------------------

    cdef void _count_reset(self) except *:
        cdef double t = _now()
        if t - self.rst_window >= 1.0:
            self.rst_window = t
            self.rst_count = 0
        self.rst_count += 1
        if self.rst_count > self.max_resets:
            self._calm("RST_STREAM flood (rapid reset)")

    cdef void _count_control(self) except *:
        cdef double t = _now()
        if t - self.ctl_window >= 1.0:
            self.ctl_window = t
            self.ctl_count = 0
        self.ctl_count += 1
        if self.ctl_count > self.max_controls:
            self._calm("control frame flood")

    cdef bint _header_budget_spent(self, size_t fsize) noexcept:
        """The decoded-header-bytes count passed its budget: a new window if the last one is
        over a second old, else GOAWAY(ENHANCE_YOUR_CALM) (returns True)."""
        cdef double t = _now()
        if t - self.hb_window >= 1.0:
            self.hb_window = t
            self.hb_count = fsize
            return 0
        try:
            self._calm("decoded header bytes over budget (HPACK bomb)")
        except BaseException:
            pass
        return 1

    cdef void _count_refused(self) except *:
        cdef double t = _now()
        if t - self.ref_window >= 1.0:
            self.ref_window = t
            self.ref_count = 0
        self.ref_count += 1
        if self.ref_count > self.max_refused:
            self._calm("refused streams (stream-limit abuse)")

    cdef void _calm(self, str why) except *:
        if self.calmed:
            return
        self.calmed = 1
        cut_log.warn("nghttp2: %s from %s: GOAWAY(ENHANCE_YOUR_CALM)", why,
                     self.peer_info.get("peername"))
        nghttp2_session_terminate_session(self.session, NGHTTP2_ENHANCE_YOUR_CALM)
        _mark(self)

    def _drain_deadline(self) -> None:
        """The client never acknowledged the drain PING: send the final GOAWAY anyway."""
        self._final_goaway()
        self._kick()

    cdef void _final_goaway(self) except *:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        if self.session != NULL and not self.final_goaway_sent:
            self.final_goaway_sent = 1
            nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(self.session),
                                  NGHTTP2_NO_ERROR, NULL, 0)
            _mark(self)

    # public API ------------------------------------------------------------------------------

    cdef _Stream _get(self, int32_t stream_id):
        # the header callbacks' memo first (it is this stream's entry while it is set): the
        # proxy answers or splices a request right after its headers
        if stream_id == self.cur_sid and self.cur_st is not None:
            return <_Stream>self.cur_st
        return self.streams.get(stream_id)

    def respond(self, int stream_id, int status, headers, body=b"", trailers=None) -> None:
        """Send a complete local response; a held request body is discarded."""
        cdef _Stream st = self._get(stream_id)
        if st is None or self.session == NULL:
            return
        if st.mode == M_SPLICE and not st.resp_submitted:
            self._cancel_splice(st)
        elif st.mode == M_LOCAL or st.mode == M_SPLICE or st.mode == M_DISCARD:
            raise RuntimeError(f"stream {stream_id} is already answered")
        self._respond(st, status, headers, body, trailers)
        self._kick()

    def count_refused(self) -> None:
        """Charge one refused request to the connection's budget (engine doc)."""
        if self.session != NULL and not self.calmed:
            self._count_refused()

    def reset(self, int stream_id, int error_code=ErrorCode.CANCEL) -> None:
        """RST_STREAM the stream."""
        cdef _Stream st = self._get(stream_id)
        if st is None or self.session == NULL:
            return
        if st.mode == M_LOCAL and not st.hdr_sent:
            # respond() then reset() in one go: the response HEADERS go out first (nghttp2
            # would otherwise drop them), then RST_STREAM
            st.rst_after_hdr = 1
            st.pending_rst = error_code
            self._kick()
            return
        if st.mode != M_SPLICE:
            st.mode = M_DISCARD
            self._release_held(st)
            buf_clear(&st.rq)
        nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, error_code)
        self._kick()

    def read_body(self, int stream_id, limit, callback) -> None:
        """Collect the whole request body (at most ``limit`` bytes), then
        ``callback(body, trailers)``; ``body`` is None when over the limit (413 sent) or reset."""
        cdef _Stream st = self._get(stream_id)
        if st is None or self.session == NULL:
            callback(None, [])
            return
        if st.mode != M_HELD and st.mode != M_WAIT:
            raise RuntimeError(f"stream {stream_id} is already answered")
        self._release_held(st)
        st.limit = limit
        st.callback = callback
        if st.rq_total > <size_t>limit:
            self._body_too_large(st)
        elif st.req_end:
            self._deliver_body(st)
        else:
            st.mode = M_READ
        self._kick()

    def splice(self, int stream_id, ClientConnection upstream not None, headers, observer,
               extra_response_headers=(), retain_body=False) -> None:
        """Send ``headers`` on a new stream of ``upstream`` and relay both ways in C."""
        cdef _Stream st = self._get(stream_id)
        cdef list keep = self.q.scratch
        cdef tuple hold
        cdef nghttp2_nv *nva
        cdef nghttp2_data_provider prd
        cdef int32_t cid
        if st is None or self.session == NULL:
            # the stream or its connection is gone: the exchange is over all the same (its
            # observer gives back what it holds: an admission slot), told on the next
            # iteration so that admission handing slots on does not recurse
            loop = self.loop if self.loop is not None else asyncio.get_running_loop()
            loop.call_soon(observer.on_complete, stream_id, 0, ErrorCode.CANCEL)
            return
        if st.mode == M_WAIT:
            if not self._replayable(st):
                raise RuntimeError(f"stream {stream_id}: request body not retained, cannot replay")
            st.rq_sent = st.rq_base
        elif st.mode != M_HELD:
            raise RuntimeError(f"stream {stream_id} is already answered")
        else:
            st.retain = bool(retain_body)
            if st.retain and st.held() > self.max_retained:
                st.retain_lost = 1
        st.observer = observer
        st.extra = list(extra_response_headers) if extra_response_headers else None
        st.tapped = st.tap_hook = None
        st.tap_state = TAP_UNKNOWN
        st.mode = M_SPLICE
        st.client = upstream
        st.up_closed = st.up_deferred = st.up_sent = st.resp_submitted = st.resp_end = 0
        if not upstream._can_take_stream():
            self._upstream_closed(st, NGHTTP2_REFUSED_STREAM, 0)
            self._kick()
            return
        if upstream.q is not self.q:
            raise RuntimeError(f"stream {stream_id}: the upstream connection belongs to "
                               "another event loop")
        hold = tuple(headers)
        try:
            nva = _nva_held(hold, keep)
        except BaseException:
            _scratch_clear(keep)
            raise
        # a replay keeps what an earlier attempt's frame may still point into
        st.up_hold = hold if st.up_hold is None else (st.up_hold, hold)
        try:
            if st.req_end and st.rq_sent == st.rq_total and not st.req_trailers:
                cid = nghttp2_submit_request(upstream.session, NULL, nva, len(hold), NULL,
                                             <void *>st)
            else:
                prd.source.ptr = <void *>st
                prd.read_callback = _read_request
                cid = nghttp2_submit_request(upstream.session, NULL, nva, len(hold), &prd,
                                             <void *>st)
        finally:
            free(nva)
            _scratch_clear(keep)
        if cid < 0:
            log.info("nghttp2: upstream refused a stream: %s", nghttp2_strerror(cid).decode())
            self._upstream_closed(st, NGHTTP2_REFUSED_STREAM, 0)
            self._kick()
            return
        st.cid = cid
        st.cid_obj = cid
        upstream.streams[st.cid_obj] = st
        upstream.open_streams += 1
        _mark(upstream)
        _run(self.q)

    cdef bint _replayable(self, _Stream st) noexcept:
        return st.rq_base == 0 and not st.retain_lost

    @property
    def buffered_bytes(self) -> int:
        """Body bytes the engine holds now for this connection's streams: request bytes held
        or not yet relayed upstream, response bytes relayed from upstream and not yet sent."""
        cdef _Stream st
        cdef size_t n = 0
        for st in self.streams.values():
            n += (st.rq.end - st.rq.start) + (st.rs.end - st.rs.start)
        return n

    def can_replay(self, int stream_id) -> bool:
        """True when the stream's request body (if any) is retained whole for a replay."""
        cdef _Stream st = self._get(stream_id)
        if st is None:
            return False
        return self._replayable(st)

    def drain(self, int error_code=ErrorCode.NO_ERROR) -> None:
        """Graceful shutdown: GOAWAY notice, then GOAWAY(last stream id) after a PING round
        trip; in-flight streams finish and the transport closes when none is left."""
        if self.dormant is not None and not self.lost:
            self._materialize()
        if self.session == NULL or self.draining:
            return
        self.draining = 1
        if error_code:
            nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(self.session),
                                  error_code, NULL, 0)
        else:
            nghttp2_submit_shutdown_notice(self.session)
            nghttp2_submit_ping(self.session, NGHTTP2_FLAG_NONE,
                                <const uint8_t *>PyBytes_AS_STRING(_DRAIN_PING))
            try:
                self.drain_timer = asyncio.get_running_loop().call_later(
                    1.0, self._drain_deadline)
            except RuntimeError:
                self._final_goaway()
        self._kick()
