# =============================================================================================
# dataplane/_nghttp2_loop.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# The engine's per-event-loop state (``_LoopQueues``): the flush queue (one mem_send pass and
# one transport.write per connection per batch; upstream writes held for the end of the loop
# iteration), the completion queue (observers told at the loop's next quiet moment), and the
# loop's output buffer and scratch list.  One object per running event loop, looked up once
# per connection (``_queues_here``), so that loops in different threads share nothing.
# =============================================================================================

cdef class _LoopQueues:
    """What the connections of one event loop queue between a read and the end of the loop
    iteration.  Only that loop's thread touches it (connections of one loop, its callbacks);
    the connections spliced together belong to one loop (``ServerConnection.splice``)."""

    # flush queue
    cdef _Conn dirty_head            # connections to flush: a stack linked through next_dirty
    cdef int busy                    # a read or a flush pass is in progress
    # Upstream writes wait for the end of the loop iteration while downstream reads are
    # handled: a burst read from ten client connections in one iteration goes upstream in one
    # write, not ten (each write to a local peer also wakes it: on a VM, an inter-processor
    # interrupt).
    cdef _Conn later_head            # upstream connections waiting: linked through next_dirty
    cdef bint later_armed            # the loop callback that flushes them is armed
    cdef object hold_loop            # set while a downstream read is handled: its loop
    cdef _Conn last_finished         # the downstream connection of the last finished response
    cdef unsigned long io_ticks      # reads fed to this loop's sessions so far
    # completion queue (see "completion reports" below)
    cdef _Stream done_head           # waiting streams, oldest first, linked through next_done
    cdef _Stream done_tail
    cdef Py_ssize_t done_n
    cdef unsigned long probe_ticks   # io_ticks when the probe last looked
    cdef int probe_busy              # iterations the probe found busy in a row
    cdef bint probe_armed
    # what a flush gathers from nghttp2_session_mem_send (_Conn._out), and the list the hot
    # submits keep converted header values in until the submit returned (_scratch_clear)
    cdef char *obuf
    cdef size_t ocap
    cdef list scratch

    def __cinit__(self):
        self.scratch = []

    def __dealloc__(self):
        free(self.obuf)


# the queues of each event loop that has had a connection (a loop's entry goes with the loop)
_queues_by_loop = weakref.WeakKeyDictionary()
# connections made or driven outside a running loop: one set of queues per thread
_unlooped = threading.local()


cdef _LoopQueues _queues_here():
    """The running loop's queues, made at its first connection; outside a running loop, the
    thread's own.  Called once per connection (construction and ``connection_made``)."""
    cdef _LoopQueues q
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        q = getattr(_unlooped, "queues", None)
        if q is None:
            q = _LoopQueues()
            _unlooped.queues = q
        return q
    q = _queues_by_loop.get(loop)
    if q is None:
        q = _LoopQueues()
        _adopt_stranded(q)
        _queues_by_loop[loop] = q
    return q


cdef void _adopt_stranded(_LoopQueues q) except *:
    """A new loop's queues take over what a closed loop left behind (its callbacks died with
    it): held upstream writes are flushed now, waiting completions go first in ``q``."""
    cdef _LoopQueues old
    for loop, old in list(_queues_by_loop.items()):
        if not loop.is_closed():
            continue
        del _queues_by_loop[loop]
        old.later_armed = 0
        old.probe_armed = 0
        _release_held_writes(old)
        if old.done_head is not None:
            if q.done_tail is None:
                q.done_tail = old.done_tail
            else:
                old.done_tail.next_done = q.done_head
            q.done_head = old.done_head
            q.done_n += old.done_n
            old.done_head = old.done_tail = None
            old.done_n = 0


cdef list _queues_to_tell():
    """The queues ``report_completions`` / ``flush_writes`` act on: the running loop's;
    outside a running loop, those of every loop that is not running (closed or stopped:
    nobody else looks at them) and the thread's own."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        q = _queues_by_loop.get(loop)
        return [] if q is None else [q]
    out = [other for lp, other in list(_queues_by_loop.items()) if not lp.is_running()]
    q = getattr(_unlooped, "queues", None)
    if q is not None:
        out.append(q)
    return out


# ---------------------------------------------------------------------------------------------
# flush scheduling: one mem_send pass (one transport.write) per connection per batch

cdef inline void _mark(_Conn c) noexcept:
    cdef _LoopQueues q
    if not c.dirty:
        q = c.q
        c.dirty = 1
        c.next_dirty = q.dirty_head
        q.dirty_head = c


cdef void _run(_LoopQueues q) noexcept:
    cdef _Conn c
    if q.busy:
        return
    q.busy = 1
    try:
        while q.dirty_head is not None:  # last marked first, as the list it replaces did
            c = q.dirty_head
            q.dirty_head = c.next_dirty
            if q.hold_loop is not None and c.upstream and _hold(q, c):
                continue  # stays dirty: marks are no-ops until it is flushed
            c.next_dirty = None
            c.dirty = 0
            try:
                c._flush()
            except BaseException:
                log.exception("nghttp2: flush failed")
                c._close_transport()
    finally:
        q.busy = 0


# ---------------------------------------------------------------------------------------------
# completion reports: an observer hears that its exchange is over at the loop's next quiet moment
# (an iteration in which no connection read anything), not inside the flush that sent the last
# frame.  Under a burst that keeps the bookkeeping (metrics, access log, freeing the stream)
# off the path of the responses still to go; it is done in the pause after.  Bounds: after
# REPORT_AFTER_BUSY busy iterations, or with more than REPORT_MAX waiting, all are reported
# whatever the traffic; ``report_completions()`` reports them now (metrics scrape, shutdown).
# The waiting streams are a queue linked through the streams (no allocation per request).

REPORT_MAX = 128                     # more waiting than this: all reported at the next look
REPORT_AFTER_BUSY = 4                # busy iterations in a row after which all are reported
REPORT_CHUNK = 64                    # reported per quiet iteration (then the loop looks again)
cdef Py_ssize_t _report_max = REPORT_MAX
cdef int _report_after_busy = REPORT_AFTER_BUSY
cdef Py_ssize_t _report_chunk = REPORT_CHUNK


cdef void _defer_done(_LoopQueues q, _Stream st, object loop) except *:
    if loop is None:  # never attached to a loop (a connection driven by hand): report now
        st.server._report_complete(st)
        return
    st._shed()
    if q.done_tail is None:
        q.done_head = st
    else:
        q.done_tail.next_done = st
    q.done_tail = st
    q.done_n += 1
    if not q.probe_armed:
        q.probe_ticks = q.io_ticks
        q.probe_busy = 0
        try:
            loop.call_soon(_probe, loop, q)
        except RuntimeError:  # the loop has closed: nobody would look again
            _report(q, -1)
            return
        q.probe_armed = 1


def report_completions(limit: int = -1) -> int:
    """Tell the observers of finished streams now (all waiting, or up to ``limit``);
    returns how many were told.  In a running loop, that loop's; outside one, those of the
    loops not running."""
    cdef _LoopQueues q
    cdef Py_ssize_t n = 0
    for q in _queues_to_tell():
        if 0 <= limit <= n:
            break
        n += _report(q, -1 if limit < 0 else limit - n)
    return n


def waiting_completions() -> int:
    """Finished streams whose observers have not been told yet (of the same loops as
    ``report_completions``)."""
    cdef _LoopQueues q
    cdef Py_ssize_t n = 0
    for q in _queues_to_tell():
        n += q.done_n
    return n


cdef Py_ssize_t _report(_LoopQueues q, Py_ssize_t limit) except -1:
    cdef _Stream st
    cdef Py_ssize_t n = 0
    while q.done_head is not None and n != limit:
        st = q.done_head
        q.done_head = st.next_done
        st.next_done = None
        if q.done_head is None:
            q.done_tail = None
        q.done_n -= 1
        n += 1
        st.server._report_complete(st)
    return n


def _probe(loop, _LoopQueues q not None) -> None:
    if q.io_ticks == q.probe_ticks:
        q.probe_busy = 0
        _report(q, _report_chunk)
    else:
        q.probe_busy += 1
        if q.probe_busy >= _report_after_busy or q.done_n > _report_max:
            q.probe_busy = 0
            _report(q, -1)
    q.probe_ticks = q.io_ticks
    if q.done_head is not None:
        loop.call_soon(_probe, loop, q)
    else:
        q.probe_armed = 0


cdef bint _hold(_LoopQueues q, _Conn c) noexcept:
    """Put ``c`` among the upstream connections flushed when the loop iteration ends.  False
    when the loop cannot take that callback (closed): then nothing is held, ``c`` is flushed
    now by the caller and what was held before goes back to be flushed with it."""
    if not q.later_armed:
        try:
            q.hold_loop.call_soon(_flush_later, q)
        except BaseException:
            q.hold_loop = None
            _unhold_all(q)
            return 0
        q.later_armed = 1
    c.next_dirty = q.later_head
    q.later_head = c
    return 1


cdef void _unhold_all(_LoopQueues q) noexcept:
    """Move the held upstream connections back among those to flush."""
    cdef _Conn c
    while q.later_head is not None:
        c = q.later_head
        q.later_head = c.next_dirty
        c.next_dirty = None
        c.dirty = 0
        _mark(c)


cdef void _release_held_writes(_LoopQueues q) noexcept:
    _unhold_all(q)
    _run(q)


def _flush_later(_LoopQueues q not None) -> None:
    q.later_armed = 0
    _release_held_writes(q)


def flush_writes() -> None:
    """Write now what upstream connections hold for the end of the loop iteration (the
    running loop's; outside one, those of the loops not running)."""
    cdef _LoopQueues q
    for q in _queues_to_tell():
        _release_held_writes(q)


# Early flushes while an upstream read is handled: its responses are finished in the order
# the peer sent them, usually one client connection's after another's.  When a finished
# response belongs to another downstream connection than the one before it, the one before is
# flushed there and then (at most once per read), so its client reads its responses while we
# go on with the rest of the read instead of after it.  Same number of writes when the
# responses come grouped by client; at most one more per client and read when they do not.

cdef void _finished_response(_Conn down) noexcept:
    cdef _LoopQueues q = down.q
    cdef _Conn prev = q.last_finished
    if prev is down:
        return
    q.last_finished = down
    if prev is None or not prev.dirty or prev.early_tick == q.io_ticks:
        return
    prev.early_tick = q.io_ticks
    try:
        prev._flush()  # stays marked: the read's own flush finds nothing more to send
    except BaseException:
        log.exception("nghttp2: flush failed")
        prev._close_transport()
