# =============================================================================================
# dataplane/_nghttp2_client.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# ``ClientConnection``: one upstream connection (we are the client): what splices send on,
# and requests of our own (``request``) whose whole response goes to a callback.
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# the upstream connection

cdef class ClientConnection(_Conn):
    """One upstream HTTP/2 connection (we are the client); see ``dataplane.engine``."""

    cdef public object ready
    cdef readonly object on_closed
    cdef public int max_streams
    cdef bint closed_notified

    def __init__(self, settings=None, on_closed=None) -> None:
        self._set_settings(settings)
        self.on_closed = on_closed
        self.max_streams = _MAX_STREAMS_UNKNOWN
        self.upstream = 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self.ready = loop.create_future()

    def connection_made(self, transport) -> None:
        cdef nghttp2_option *opt
        self.transport = transport
        self._write = transport.write
        self.q = _queues_here()
        opt = _new_option(self.settings, 0)
        rv = nghttp2_session_client_new3(&self.session, _client_callbacks, <void *>self, opt,
                                         _session_mem)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError()
        _submit_settings(self.session, self.settings, 0)
        self._kick()

    def connection_lost(self, exc) -> None:
        if self.lost:
            return
        self.lost = 1
        self.closing = 1
        try:
            for cid in list(self.streams):
                st = self.streams.get(cid)
                if st is not None:
                    try:
                        self._stream_gone(cid, NGHTTP2_INTERNAL_ERROR, (<_Stream>st).up_sent)
                    except BaseException:
                        log.exception("nghttp2: cleanup of a lost upstream stream failed")
        finally:
            self.streams.clear()
            self.open_streams = 0
            self._del_session()
            self.transport = None
            self._write = None
        if not self.ready.done():
            self.ready.set_exception(
                ConnectionError(f"HTTP/2 connection lost before SETTINGS: {exc}"))
            self.ready.exception()  # mark retrieved; the pool may not await it
        if self.on_closed is not None and not self.closed_notified:
            self.closed_notified = 1
            try:
                self.on_closed(self)
            except BaseException:
                log.exception("nghttp2: on_closed failed")
        _run(self.q)

    cdef void _peer_settings(self) except *:
        cdef uint32_t m = nghttp2_session_get_remote_settings(
            self.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
        self.max_streams = m if m < _MAX_STREAMS_UNKNOWN else _MAX_STREAMS_UNKNOWN
        if not self.ready.done():
            self.ready.set_result(None)

    cdef bint _can_take_stream(self) noexcept:
        return (self.session != NULL and not self.lost and not self.closing
                and not self.goaway_recv and not self.draining)

    cdef void _stream_gone(self, int32_t cid, uint32_t code, bint reached) except *:
        cdef void *p = NULL
        cdef _Stream st
        _forget_stream(self, cid)
        if self.session != NULL:
            p = nghttp2_session_get_stream_user_data(self.session, cid)
        if p != NULL and (<_Stream>p).cid == cid and (<_Stream>p).cid_obj is not None:
            st = self.streams.pop((<_Stream>p).cid_obj, None)  # the key it was stored under
        else:
            st = self.streams.pop(cid, None)
        if st is None:
            return
        self.open_streams -= 1
        st.up_closed = 1
        st.up_err = code
        if st.win_extra and st.server is not None:
            st.server.relay_granted -= st.win_extra
        st.win_extra = 0
        if st.mode == M_SPLICE:
            st.server._upstream_closed(st, code, reached)
            return
        if st.server is not None:  # a splice answered locally meanwhile (respond on deadline)
            st.server._maybe_complete(st)
            return
        cb = st.callback
        st.callback = None
        if cb is None:
            return
        body = PyBytes_FromStringAndSize(st.rs.data + st.rs.start, st.rs.end - st.rs.start)
        buf_clear(&st.rs)
        err = None
        if code != 0 or not st.resp_end:
            err = StreamError(code or NGHTTP2_INTERNAL_ERROR)
        cb(st.status if st.resp_submitted else 0, st.resp_headers or [], body,
           st.resp_trailers or [], err)

    @property
    def available(self) -> bool:
        """Connected, no GOAWAY, and open_streams < max_streams."""
        return bool(self._can_take_stream()) and self.open_streams < self.max_streams

    @property
    def closed(self) -> bool:
        """Transport lost, or GOAWAY received/sent with no stream left."""
        return bool(self.lost or self.closing
                    or ((self.goaway_recv or self.draining) and self.open_streams == 0))

    def request(self, headers, body, callback, trailers=None) -> int:
        """Send a whole request of our own; the whole response goes to ``callback``."""
        cdef _Stream st
        cdef list keep = []
        cdef list nv = headers if type(headers) is list else list(headers)
        cdef nghttp2_nv *nva
        cdef nghttp2_data_provider prd
        cdef int32_t cid
        if not self._can_take_stream():
            raise ConnectionError("HTTP/2 connection is closed or going away")
        st = _Stream.__new__(_Stream)
        st.mode = M_CLIENT
        st.callback = callback
        st.resp_headers = []
        st.out_body = bytes(body) if body else None
        st.out_trailers = list(trailers) if trailers else None
        nva = _nva_from(nv, keep, 0)
        try:
            if st.out_body is None and st.out_trailers is None:
                cid = nghttp2_submit_request(self.session, NULL, nva, len(nv), NULL, <void *>st)
            else:
                prd.source.ptr = <void *>st
                prd.read_callback = _read_bytes
                cid = nghttp2_submit_request(self.session, NULL, nva, len(nv), &prd, <void *>st)
        finally:
            free(nva)
        if cid < 0:
            raise ConnectionError(f"cannot open a stream: {nghttp2_strerror(cid).decode()}")
        st.cid = cid
        st.cid_obj = cid
        self.streams[st.cid_obj] = st
        self.open_streams += 1
        self._kick()
        return cid

    def reset_stream(self, int stream_id, int error_code=ErrorCode.CANCEL) -> None:
        """Cancel one of our own requests (its callback is not called), as the h2 backend's
        ``reset_stream``: RST_STREAM with ``error_code``."""
        st = self.streams.get(stream_id)
        if st is None or self.session == NULL:
            return
        (<_Stream>st).callback = None
        nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, error_code)
        self._kick()

    def ping(self) -> None:
        """Send a PING (liveness of pooled connections)."""
        if self.session != NULL:
            nghttp2_submit_ping(self.session, NGHTTP2_FLAG_NONE, NULL)
            self._kick()

    def drain(self) -> None:
        """Stop taking new streams; close once the open ones are done."""
        if self.session == NULL or self.draining:
            return
        self.draining = 1
        nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0)
        self._kick()
