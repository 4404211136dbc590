# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of ``nf_adapters.sbi_rewrite``: the SCP router's per-request header pass.

Same functions, same results (tests compare both on random inputs); the names are compared
as C bytes (length first, then memcmp) instead of through Python's rich comparison.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF


cdef extern from "Python.h":
    void Py_SET_SIZE(object o, Py_ssize_t size)
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.string cimport memcmp

cdef bytes _TARGET = b"3gpp-sbi-target-apiroot"
cdef bytes _HOPS = b"3gpp-sbi-max-forward-hops"
cdef bytes _RSP = b"3gpp-sbi-max-rsp-time"
cdef bytes _TS = b"3gpp-sbi-sender-timestamp"
cdef bytes _PRIO = b"3gpp-sbi-message-priority"
cdef bytes _UA = b"user-agent"
cdef bytes _VIA = b"via"
cdef bytes _HOST = b"host"
cdef bytes _METHOD = b":method"
cdef bytes _SCHEME = b":scheme"
cdef bytes _AUTHORITY = b":authority"
cdef bytes _PATH = b":path"
REPEATED = b"\x00"
cdef bytes _REPEATED = REPEATED


cdef inline bint _eq(const char* p, Py_ssize_t n, bytes want):
    return n == PyBytes_GET_SIZE(want) and memcmp(p, PyBytes_AS_STRING(want), n) == 0


cpdef tuple scan_request(list headers):
    """See ``sbi_rewrite.scan_request``."""
    cdef object method = None, scheme = None, authority = None, path = None
    cdef object target = None, hops = None, rsp = None, ts = None, prio = None, ua = None
    cdef list via = None
    cdef Py_ssize_t i, n = PyList_GET_SIZE(headers), ln
    cdef object item, name, value
    cdef const char* p
    for i in range(n):
        item = <object>PyList_GET_ITEM(headers, i)
        if type(item) is tuple and PyTuple_GET_SIZE(item) == 2:
            name = <object>PyTuple_GET_ITEM(item, 0)
            value = <object>PyTuple_GET_ITEM(item, 1)
        else:
            name, value = item
        if type(name) is not bytes:
            raise TypeError("header names must be bytes")
        p = PyBytes_AS_STRING(name)
        ln = PyBytes_GET_SIZE(name)
        if ln == 0:
            continue
        if p[0] == b':':
            if _eq(p, ln, _METHOD):
                method = value
            elif _eq(p, ln, _PATH):
                path = value
            elif _eq(p, ln, _AUTHORITY):
                authority = value
            elif _eq(p, ln, _SCHEME):
                scheme = value
        elif ln > 5 and memcmp(p, b"3gpp-", 5) == 0:
            if _eq(p, ln, _TARGET):
                target = value if target is None else _REPEATED
            elif _eq(p, ln, _HOPS):
                if hops is None:
                    hops = value
            elif _eq(p, ln, _RSP):
                if rsp is None:
                    rsp = value
            elif _eq(p, ln, _TS):
                if ts is None:
                    ts = value
            elif _eq(p, ln, _PRIO):
                prio = value if prio is None else _REPEATED
        elif _eq(p, ln, _VIA):
            if via is None:
                via = [value]
            else:
                via.append(value)
        elif _eq(p, ln, _UA):
            if ua is None:
                ua = value
    return (method, scheme, authority, path, target, hops, via, rsp, ts, prio, ua)


# the (name, value) tuples rewrite_headers made last, per name, with their value: a router
# passes the same value objects request after request (its cached authority, hop count and
# via), so the tuple is reused instead of built and freed each time (tuples are immutable)
cdef enum:
    P_SCHEME, P_AUTHORITY, P_PATH, P_HOPS, P_VIA, P_COUNT
cdef list _made_value = [None] * P_COUNT
cdef list _made_pair = [None] * P_COUNT
cdef tuple _NAMES = (_SCHEME, _AUTHORITY, _PATH, _HOPS, _VIA)


cdef inline Py_ssize_t _add(list out, Py_ssize_t k, object item):
    """Put ``item`` at ``k`` of a list from PyList_New (its slots still empty)."""
    Py_INCREF(item)
    PyList_SET_ITEM(out, k, item)
    return k + 1


cdef inline object _pair(Py_ssize_t slot, object value):
    """``(name of slot, value)``, shared with the previous call when ``value`` is the same
    object."""
    if <object>PyList_GET_ITEM(_made_value, slot) is value:
        return <object>PyList_GET_ITEM(_made_pair, slot)
    pair = (<object>PyTuple_GET_ITEM(_NAMES, slot), value)
    _made_value[slot] = value
    _made_pair[slot] = pair
    return pair


cdef inline object _replaced(object item, Py_ssize_t slot, object value):
    """The field ``item`` with ``value``: ``item`` itself when it already holds that very
    object (the router passing the request's own :path back), else a (shared) new pair."""
    if type(item) is tuple and PyTuple_GET_SIZE(item) == 2 \
            and <object>PyTuple_GET_ITEM(item, 1) is value:
        return item
    return _pair(slot, value)


cpdef list rewrite_headers(list headers, scheme, authority, path, hops, via):
    """See ``sbi_rewrite.rewrite_headers``."""
    # at most every field plus :scheme, :authority, :path, the hop count and via: allocated
    # once, filled in place, cut to what was written (no growth while appending)
    cdef list out = PyList_New(PyList_GET_SIZE(headers) + 5)
    cdef Py_ssize_t k = 0
    cdef bint seen_scheme = scheme is None
    cdef bint seen_authority = authority is None
    cdef bint seen_path = path is None
    cdef bint pseudo_done = False
    cdef bint drop_host = authority is not None
    cdef Py_ssize_t i, n = PyList_GET_SIZE(headers), ln
    cdef object item, name
    cdef const char* p
    for i in range(n):
        item = <object>PyList_GET_ITEM(headers, i)
        if type(item) is tuple and PyTuple_GET_SIZE(item) == 2:
            name = <object>PyTuple_GET_ITEM(item, 0)
        else:
            name = item[0]
        if type(name) is not bytes:
            raise TypeError("header names must be bytes")
        p = PyBytes_AS_STRING(name)
        ln = PyBytes_GET_SIZE(name)
        if ln > 0 and p[0] == b':':
            if _eq(p, ln, _SCHEME):
                if scheme is not None:
                    if seen_scheme:
                        continue
                    item = _replaced(item, P_SCHEME, scheme)
                    seen_scheme = True
            elif _eq(p, ln, _AUTHORITY):
                if authority is not None:
                    if seen_authority:
                        continue
                    item = _replaced(item, P_AUTHORITY, authority)
                    seen_authority = True
            elif _eq(p, ln, _PATH):
                if path is not None:
                    if seen_path:
                        continue
                    item = _replaced(item, P_PATH, path)
                    seen_path = True
            k = _add(out, k, item)
            continue
        if not pseudo_done:
            pseudo_done = True
            if not seen_scheme:
                k = _add(out, k, _pair(P_SCHEME, scheme))
                seen_scheme = True
            if not seen_authority:
                k = _add(out, k, _pair(P_AUTHORITY, authority))
                seen_authority = True
            if not seen_path:
                k = _add(out, k, _pair(P_PATH, path))
                seen_path = True
        if ln > 5 and p[0] == b'3':
            if _eq(p, ln, _TARGET) or _eq(p, ln, _HOPS):
                continue
        elif drop_host and _eq(p, ln, _HOST):
            continue
        k = _add(out, k, item)
    if not pseudo_done:
        if not seen_scheme:
            k = _add(out, k, _pair(P_SCHEME, scheme))
        if not seen_authority:
            k = _add(out, k, _pair(P_AUTHORITY, authority))
        if not seen_path:
            k = _add(out, k, _pair(P_PATH, path))
    if hops is not None:
        k = _add(out, k, _pair(P_HOPS, hops))
    if via is not None:
        k = _add(out, k, _pair(P_VIA, via))
    Py_SET_SIZE(out, k)
    return out
