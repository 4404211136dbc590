# =============================================================================================
# dataplane/_nghttp2_loop.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# What the connections queue between a read and the end of the loop iteration: the flush
# queue (one mem_send pass and one transport.write per connection per batch; upstream writes
# held for the end of the loop iteration; early flushes while an upstream read is handled) and
# the completion queue (observers told at the loop's next quiet moment).
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# flush scheduling: one mem_send pass (one transport.write) per connection per batch

cdef _Conn _dirty_head = None  # connections to flush: a stack linked through next_dirty
cdef int _busy = 0
# Upstream writes wait for the end of the loop iteration while downstream reads are handled:
# a burst read from ten client connections in one iteration goes upstream in one write, not
# ten (each write to a local peer also wakes it: on a VM, an inter-processor interrupt).
cdef _Conn _later_head = None  # upstream connections waiting: linked through next_dirty
cdef object _later_loop = None  # the loop their flush is armed on
cdef object _hold_loop = None   # set while a downstream read is handled: its loop


cdef inline void _mark(_Conn c) noexcept:
    global _dirty_head
    if not c.dirty:
        c.dirty = 1
        c.next_dirty = _dirty_head
        _dirty_head = c


cdef void _run() noexcept:
    global _busy, _dirty_head
    cdef _Conn c
    if _busy:
        return
    _busy = 1
    try:
        while _dirty_head is not None:  # last marked first, as the list it replaces did
            c = _dirty_head
            _dirty_head = c.next_dirty
            if _hold_loop is not None and c.upstream and _hold(c):
                continue  # stays dirty: marks are no-ops until it is flushed
            c.next_dirty = None
            c.dirty = 0
            try:
                c._flush()
            except BaseException:
                log.exception("nghttp2: flush failed")
                c._close_transport()
    finally:
        _busy = 0


# ---------------------------------------------------------------------------------------------
# completion reports: an observer hears that its exchange is over at the loop's next quiet moment
# (an iteration in which no connection read anything), not inside the flush that sent the last
# frame.  Under a burst that keeps the bookkeeping (metrics, access log, freeing the stream)
# off the path of the responses still to go; it is done in the pause after.  Bounds: after
# REPORT_AFTER_BUSY busy iterations, or with more than REPORT_MAX waiting, all are reported
# whatever the traffic; ``report_completions()`` reports them now (metrics scrape, shutdown).
# The waiting streams are a queue linked through the streams (no allocation per request).

cdef _Stream _done_head = None       # waiting streams, oldest first, linked through next_done
cdef _Stream _done_tail = None
cdef Py_ssize_t _done_n = 0
cdef unsigned long _io_ticks = 0     # reads fed to any session so far
cdef unsigned long _probe_ticks = 0  # ... when the probe last looked
cdef int _probe_busy = 0             # iterations the probe found busy in a row
cdef object _probe_loop = None       # the loop a probe is armed on (None: none armed)
REPORT_MAX = 128                     # more waiting than this: all reported at the next look
REPORT_AFTER_BUSY = 4                # busy iterations in a row after which all are reported
REPORT_CHUNK = 64                    # reported per quiet iteration (then the loop looks again)
cdef Py_ssize_t _report_max = REPORT_MAX
cdef int _report_after_busy = REPORT_AFTER_BUSY
cdef Py_ssize_t _report_chunk = REPORT_CHUNK


cdef void _defer_done(_Stream st, object loop) except *:
    global _done_head, _done_tail, _done_n, _probe_loop, _probe_ticks, _probe_busy
    if loop is None:  # never attached to a loop (a connection driven by hand): report now
        st.server._report_complete(st)
        return
    st._shed()
    if _done_tail is None:
        _done_head = st
    else:
        _done_tail.next_done = st
    _done_tail = st
    _done_n += 1
    if _probe_loop is not loop:  # none armed, or armed on a loop that has gone
        _probe_loop = loop
        _probe_ticks = _io_ticks
        _probe_busy = 0
        loop.call_soon(_probe, loop)


def report_completions(limit: int = -1) -> int:
    """Tell the observers of finished streams now (all waiting, or up to ``limit``);
    returns how many were told."""
    return _report(limit)


def waiting_completions() -> int:
    """Finished streams whose observers have not been told yet."""
    return _done_n


cdef Py_ssize_t _report(Py_ssize_t limit) except -1:
    global _done_head, _done_tail, _done_n
    cdef _Stream st
    cdef Py_ssize_t n = 0
    while _done_head is not None and n != limit:
        st = _done_head
        _done_head = st.next_done
        st.next_done = None
        if _done_head is None:
            _done_tail = None
        _done_n -= 1
        n += 1
        st.server._report_complete(st)
    return n


def _probe(loop) -> None:
    global _probe_loop, _probe_ticks, _probe_busy
    if loop is not _probe_loop:
        return  # superseded by a probe on another loop
    if _io_ticks == _probe_ticks:
        _probe_busy = 0
        _report(_report_chunk)
    else:
        _probe_busy += 1
        if _probe_busy >= _report_after_busy or _done_n > _report_max:
            _probe_busy = 0
            _report(-1)
    _probe_ticks = _io_ticks
    if _done_head is not None:
        loop.call_soon(_probe, loop)
    else:
        _probe_loop = None


cdef bint _hold(_Conn c) noexcept:
    """Put ``c`` among the upstream connections flushed when the loop iteration ends.  False
    when the loop cannot take that callback (closed): then nothing is held, ``c`` is flushed
    now by the caller and what was held before goes back to be flushed with it."""
    global _later_head, _later_loop, _hold_loop
    if _later_loop is not _hold_loop:  # none armed, or armed on a loop that has gone
        try:
            _hold_loop.call_soon(_flush_later, _hold_loop)
        except BaseException:
            _hold_loop = None
            _later_loop = None
            _unhold_all()
            return 0
        _later_loop = _hold_loop
    c.next_dirty = _later_head
    _later_head = c
    return 1


cdef void _unhold_all() noexcept:
    """Move the held upstream connections back among those to flush."""
    global _later_head
    cdef _Conn c
    while _later_head is not None:
        c = _later_head
        _later_head = c.next_dirty
        c.next_dirty = None
        c.dirty = 0
        _mark(c)


cdef void _release_held_writes() noexcept:
    _unhold_all()
    _run()


def _flush_later(loop) -> None:
    global _later_loop
    if loop is not _later_loop:
        return  # superseded by one armed on another loop
    _later_loop = None
    _release_held_writes()


def flush_writes() -> None:
    """Write now what upstream connections hold for the end of the loop iteration."""
    _release_held_writes()


# Early flushes while an upstream read is handled: its responses are finished in the order
# the peer sent them, usually one client connection's after another's.  When a finished
# response belongs to another downstream connection than the one before it, the one before is
# flushed there and then (at most once per read), so its client reads its responses while we
# go on with the rest of the read instead of after it.  Same number of writes when the
# responses come grouped by client; at most one more per client and read when they do not.
cdef _Conn _last_finished = None  # the downstream connection of the last finished response


cdef void _finished_response(_Conn down) noexcept:
    global _last_finished
    cdef _Conn prev = _last_finished
    if prev is down:
        return
    _last_finished = down
    if prev is None or not prev.dirty or prev.early_tick == _io_ticks:
        return
    prev.early_tick = _io_ticks
    try:
        prev._flush()  # stays marked: the read's own flush finds nothing more to send
    except BaseException:
        log.exception("nghttp2: flush failed")
        prev._close_transport()
