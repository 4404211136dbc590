# cython: language_level=3
# C declarations for compiling dataplane/proxy.py (one source, two twins): setup.py compiles
# that file as dataplane._proxy_fast with this file beside it (setup.py's TWINS), so that the
# exchange and the proxy's per-request state are extension types with C fields, the exchange's
# internal steps are C calls, and the helpers below replace the pure module's stand-ins (its
# ``if not cython.compiled:`` block).  The pure module ignores this file.  Fields that the
# engine, admission, the tests or the metrics read or set are public.

cimport cython
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from dataplane._addr_hash cimport memo_get, memo_new, memo_put
from dataplane._slots cimport slot_get, slot_offsets

# where the per-request fields of Forward and of an upstream pool sit in those slots classes
cdef Py_ssize_t F_ENDPOINT, F_HEADERS, F_EXTRA, F_TIMEOUT, F_CLUSTER, F_ON_DONE
cdef Py_ssize_t P_WAITERS, P_RESERVED, P_CONNS, P_HOT
cdef bint _FWD_SLOTS, _POOL_SLOTS


cdef inline double _now() noexcept:
    # what time.monotonic() reads on Linux, without a Python call
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cpdef object ready_connection(object pools, object endpoint)


@cython.freelist(256)
cdef class _Exchange:
    cdef public _ProxyCore proxy
    cdef public object conn, fwd, method, path, timer, task, last_error, endpoint
    cdef public object headers, extra
    cdef public object sid  # the engine's int object (no new one per call)
    cdef public double t0, deadline
    cdef public bint done, retried_same
    cdef public Py_ssize_t next_alt
    # admission (dataplane.admission): read and written by the controller
    cdef public int priority
    cdef public double due, sent_at
    cdef public object consumer, cluster, scopes, gate
    cdef public bint retrying

    cdef _begin(self, _ProxyCore proxy, object conn, object sid, object fwd, object method,
                object path, double t0)
    cdef _skip_ejected(self, object adm)
    cdef _attempt(self, object endpoint, object headers)
    cdef _splice(self, object upstream, object headers)
    cdef _next_or_fail(self, bint reached, object error_code)
    cdef _answer(self, object status, object cause, object detail, object error_code=*)
    cdef _finish(self, object status, object error_code)
    cdef _release(self, object status, object error_code)


cdef class _ProxyCore:
    cdef public object router_slot, idle_timeout, _activity, pools, error_responder, stats
    cdef public object access_log, connections, _connecting, _sweep_timer
    cdef public object admission, restamp, response_tap
    cdef public dict _deadlines
    cdef list _method_memo  # :method objects seen lately (by identity) and their text
    cdef public object _router, _route  # the router last read from router_slot, its route
    cdef public object _log_record
    cdef public long requests
    cdef public double _coarse_timeout


@cython.locals(ex=_Exchange)
cdef _Exchange _new_exchange(_ProxyCore proxy, object conn, object sid, object fwd,
                             object method, object path, double t0)
cdef _record(_ProxyCore proxy, object cluster, object method, object path, object status,
             double duration, object error_code, object endpoint, object conn)
