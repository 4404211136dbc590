# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fast backend of the nfmesh HTTP/2 engine: a Cython binding of libnghttp2.

Implements ``ServerConnection`` and ``ClientConnection`` of ``dataplane.engine`` as asyncio
Protocols.  Received bytes go straight from ``data_received`` into
``nghttp2_session_mem_recv``; everything the sessions want to send is collected with
``nghttp2_session_mem_send`` and written with one ``transport.write`` per batch.

Spliced streams (``ServerConnection.splice``) are relayed in C: request DATA and trailers
downstream -> upstream and response HEADERS, DATA and trailers upstream -> downstream never
reach Python.  Flow control is end to end: automatic WINDOW_UPDATE is off and a received byte
is acknowledged (``nghttp2_session_consume``) only when the other session's data provider has
taken it, so a slow reader slows the writer and per-stream memory stays bounded by the windows.
Python runs once per request (``handler.on_request``) and once per finished splice
(``observer.on_complete`` / ``on_upstream_failed``); and once per response carrying a field
named in ``settings.tap_response_headers`` (``observer.on_response_headers``): such fields are
spotted in ``_cli_header`` by a length test and a memcmp, kept out of the relayed block, and
handed over in ``ServerConnection._spliced_response`` just before the HEADERS are submitted.

Lifetime rule: nghttp2 keeps raw pointers to a stream's ``_Stream`` object (stream user data,
data providers).  Each connection keeps the object in its ``streams`` dict until its own
stream-close (or frame-not-sent) callback, so it lives until both sides are done.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.list cimport PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cimport cython

from dataplane._addr_hash cimport addr_slot
from dataplane._nghttp2_api cimport *


cdef extern from "Python.h":
    void Py_SET_SIZE(object o, Py_ssize_t size)

import asyncio
import logging
import os

from dataplane.engine import ErrorCode, H2Settings, engine_problem
from dataplane.http1_refusal import http1_refusal
from dataplane.linger import close_after_fin

NAME = "nghttp2"

log = logging.getLogger("nfmesh.dataplane.nghttp2")

_DEFAULT_SETTINGS = H2Settings()
cdef bytes _DRAIN_PING = b"nfmdrain"
cdef enum:
    RST_RING = 32
cdef double _REFUSE_LINGER_S = 1.0  # an HTTP/1.x client refused with 505 gets this to read it
cdef uint32_t _MAX_STREAMS_UNKNOWN = 2147483647
cdef size_t _WRITE_CHUNK = 262144
cdef char *_obuf = NULL  # what a flush gathers from nghttp2_session_mem_send (_Conn._out)
cdef size_t _ocap = 0


class StreamError(ConnectionError):
    """A stream of ``ClientConnection.request`` ended without a whole response."""

    def __init__(self, error_code: int, message: str = "") -> None:
        self.error_code = int(error_code)
        try:
            name = ErrorCode(self.error_code).name
        except ValueError:
            name = hex(self.error_code)
        super().__init__(message or f"HTTP/2 stream closed with {name}")


# ---------------------------------------------------------------------------------------------
# byte buffers (C)

cdef struct Buf:
    char *data
    size_t start
    size_t end
    size_t cap


cdef inline int buf_append(Buf *b, const uint8_t *p, size_t n) noexcept:
    cdef size_t need, cap
    cdef char *nd
    if n == 0:
        return 0
    if b.end + n > b.cap:
        if b.start and b.end - b.start + n <= b.cap:
            memmove(b.data, b.data + b.start, b.end - b.start)
            b.end -= b.start
            b.start = 0
        else:
            need = b.end - b.start + n
            cap = b.cap * 2 if b.cap else 1008  # a 1 KiB pool block to start with
            while cap < need:
                cap = cap * 2 + 16
            if b.start:
                memmove(b.data, b.data + b.start, b.end - b.start)
                b.end -= b.start
                b.start = 0
            nd = <char *>_pool_realloc(b.data, cap, NULL)
            if nd == NULL:
                return -1
            b.data = nd
            b.cap = cap
    memcpy(b.data + b.end, p, n)
    b.end += n
    return 0


cdef inline void buf_clear(Buf *b) noexcept:
    _pool_release(b.data, NULL)
    b.data = NULL
    b.start = b.end = b.cap = 0


cdef inline double _now() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


# ---------------------------------------------------------------------------------------------
# a pooled allocator for libnghttp2 (nghttp2_mem): per-size-class free lists in front of malloc.
# libnghttp2 allocates and frees several small blocks per stream (stream, frames, header
# buffers); recycling them skips most of glibc's bin work.  All calls happen with the GIL
# held (every session call is made from Python-holding code), so no lock is needed.

cdef enum:
    HC_BITS = 5
    HC_SLOTS = 32               # cached request header fields per connection (1 << HC_BITS)
    HC_WAYS = 4                 # slots a field may use, from its hash on
    HC_MAX_FIELD = 128          # longer fields (name + value bytes) are never cached: at most
                                # 32 x 128 B of HPACK buffers pinned per connection

cdef enum:
    HDR_SLOTS = 16              # request header fields a new stream's list has room for

cdef enum:
    TAP_UNKNOWN = 0             # the observer's on_response_headers not looked up yet
    TAP_HOOK = 1                # it has one: tapped fields go to it
    TAP_NONE = 2                # it has none: tapped fields are relayed unchanged

cdef enum:
    RH_INLINE_FIELDS = 8        # header fields a stream holds in itself (a typical SBI
    RH_INLINE = 16              # response); a longer block moves to the heap

cdef enum:
    POOL_CLASSES = 7            # 32 B .. 2 KiB blocks, header included (a session's own
                                # bigger blocks would waste up to half in a power of two)
    POOL_MIN_SHIFT = 5
    POOL_HDR = 16
    POOL_CACHE_BYTES = 1048576  # at most this much idle memory per size class

cdef extern from *:
    void __builtin_prefetch(const void *p) nogil

cdef void *_pool_free[POOL_CLASSES]
cdef int _pool_count[POOL_CLASSES]
cdef int _pool_limit[POOL_CLASSES]
cdef nghttp2_mem _pool_mem


cdef inline int _pool_class(size_t size) noexcept:
    cdef size_t need = size + POOL_HDR
    cdef int c = 0
    cdef size_t cap = 1 << POOL_MIN_SHIFT
    while cap < need:
        cap <<= 1
        c += 1
        if c >= POOL_CLASSES:
            return -1
    return c


cdef void *_pool_malloc(size_t size, void *ud) noexcept:
    cdef int c = _pool_class(size)
    cdef char *blk
    if c < 0:
        blk = <char *>malloc(size + POOL_HDR)
        if blk == NULL:
            return NULL
        (<size_t *>blk)[0] = POOL_CLASSES
        (<size_t *>blk)[1] = size
        return blk + POOL_HDR
    blk = <char *>_pool_free[c]
    if blk != NULL:
        _pool_free[c] = (<void **>blk)[0]
        _pool_count[c] -= 1
        # the next block of this class is read at the next allocation: fetch it meanwhile
        # (a burst after a pause finds the free lists out of the caches)
        __builtin_prefetch(_pool_free[c])
    else:
        blk = <char *>malloc(<size_t>1 << (c + POOL_MIN_SHIFT))
        if blk == NULL:
            return NULL
    (<size_t *>blk)[0] = c
    return blk + POOL_HDR


cdef void _pool_release(void *ptr, void *ud) noexcept:
    cdef char *blk
    cdef size_t c
    if ptr == NULL:
        return
    blk = <char *>ptr - POOL_HDR
    c = (<size_t *>blk)[0]
    if c >= POOL_CLASSES or _pool_count[c] >= _pool_limit[c]:
        free(blk)
        return
    (<void **>blk)[0] = _pool_free[c]
    _pool_free[c] = blk
    _pool_count[c] += 1


cdef void *_pool_calloc(size_t nmemb, size_t size, void *ud) noexcept:
    cdef size_t n = nmemb * size
    cdef void *p
    if size and n / size != nmemb:
        return NULL
    p = _pool_malloc(n, ud)
    if p != NULL:
        memset(p, 0, n)
    return p


cdef void *_pool_realloc(void *ptr, size_t size, void *ud) noexcept:
    cdef char *blk
    cdef size_t c, have
    cdef void *np
    if ptr == NULL:
        return _pool_malloc(size, ud)
    if size == 0:
        _pool_release(ptr, ud)
        return NULL
    blk = <char *>ptr - POOL_HDR
    c = (<size_t *>blk)[0]
    if c >= POOL_CLASSES:
        have = (<size_t *>blk)[1]
    else:
        have = (<size_t>1 << (c + POOL_MIN_SHIFT)) - POOL_HDR
        if size <= have:
            return ptr
    np = _pool_malloc(size, ud)
    if np == NULL:
        return NULL
    memcpy(np, ptr, have if have < size else size)
    _pool_release(ptr, ud)
    return np


cdef void _pool_init() noexcept:
    cdef int c
    for c in range(POOL_CLASSES):
        _pool_free[c] = NULL
        _pool_count[c] = 0
        _pool_limit[c] = POOL_CACHE_BYTES >> (c + POOL_MIN_SHIFT)
    _pool_mem.mem_user_data = NULL
    _pool_mem.malloc = _pool_malloc
    _pool_mem.free = _pool_release
    _pool_mem.calloc = _pool_calloc
    _pool_mem.realloc = _pool_realloc


_pool_init()
# NFMESH_NGHTTP2_POOL=0 falls back to libnghttp2's default allocator (valgrind, comparisons)
cdef nghttp2_mem *_session_mem = NULL if os.environ.get("NFMESH_NGHTTP2_POOL") == "0" \
    else &_pool_mem


# ---------------------------------------------------------------------------------------------
# nv arrays built from Python headers (nghttp2 copies them at submit time)

# the values a submit converts (str header values) live here until the submit call returned;
# the hot submits share it instead of making a list each (no submit runs inside another)
cdef list _scratch = []


cdef inline void _scratch_clear() noexcept:
    if PyList_GET_SIZE(_scratch):
        del _scratch[:]


cdef inline int _nv_set(nghttp2_nv *nv, object pair, list keep) except -1:
    """Point ``nv`` at the field ``pair``; returns 1 when it is an exact (bytes, bytes) tuple
    (the pointers are into the pair's own objects), else 0 (converted values go to ``keep``,
    to live until the submit call returned)."""
    cdef bint exact = 0
    cdef bytes name, value
    if type(pair) is tuple and PyTuple_GET_SIZE(pair) == 2:
        k = <object>PyTuple_GET_ITEM(pair, 0)
        v = <object>PyTuple_GET_ITEM(pair, 1)
        exact = 1
    else:
        k, v = pair
    if type(k) is not bytes:
        k = str(k).encode("latin-1") if not isinstance(k, (bytes, bytearray)) else bytes(k)
        keep.append(k)
        exact = 0
    if type(v) is not bytes:
        v = str(v).encode("latin-1") if not isinstance(v, (bytes, bytearray)) else bytes(v)
        keep.append(v)
        exact = 0
    name = k
    value = v
    nv.name = <uint8_t *>PyBytes_AS_STRING(name)
    nv.namelen = PyBytes_GET_SIZE(name)
    nv.value = <uint8_t *>PyBytes_AS_STRING(value)
    nv.valuelen = PyBytes_GET_SIZE(value)
    nv.flags = NGHTTP2_NV_FLAG_NONE
    return exact


cdef bytes _field_bytes(object x):
    """A header name or value as bytes, converted as ``_nv_set`` does."""
    if type(x) is bytes:
        return x
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    return str(x).encode("latin-1")


cdef nghttp2_nv *_nva_from(list pairs, list keep, size_t extra) except? NULL:
    """Fill a malloc'd nv array from ``pairs`` (plus ``extra`` free slots at the end)."""
    cdef size_t n = len(pairs), i = 0
    cdef nghttp2_nv *nva = <nghttp2_nv *>malloc((n + extra + 1) * sizeof(nghttp2_nv))
    if nva == NULL:
        raise MemoryError()
    try:
        for pair in pairs:
            _nv_set(&nva[i], pair, keep)
            i += 1
    except BaseException:
        free(nva)
        raise
    return nva


cdef inline bint _lowercase(const uint8_t *p, size_t n) noexcept:
    cdef size_t i
    for i in range(n):
        if b'A' <= p[i] <= b'Z':
            return False
    return True


# header name objects already found lower case (a strong reference each, so an address here
# is never reused by another object): the names a gateway submits are the same few objects
# request after request (the decoder's, via the header cache, and the router's constants)
cdef enum:
    LC_BITS = 5
    LC_SLOTS = 32  # 1 << LC_BITS
cdef PyObject *_lc_known[LC_SLOTS]


cdef inline bint _lowercase_name(object name, const uint8_t *p, size_t n) noexcept:
    cdef size_t h = <size_t>addr_slot(name, LC_BITS)
    if _lc_known[h] == <PyObject *>name:
        return True
    if not _lowercase(p, n):
        return False
    Py_INCREF(name)
    Py_XDECREF(_lc_known[h])
    _lc_known[h] = <PyObject *>name
    return True


# bytes objects for header names from HPACK's static table (whose nghttp2_rcbufs are static:
# one address per name for the life of the process), so a decoded static name is built once
cdef enum:
    SN_SLOTS = 128
cdef nghttp2_rcbuf *_sn_key[SN_SLOTS]
cdef PyObject *_sn_name[SN_SLOTS]


cdef object _static_name(nghttp2_rcbuf *rcbuf, nghttp2_vec nb):
    cdef size_t h = <size_t>(((<uint64_t><size_t>rcbuf) * <uint64_t>0x9E3779B97F4A7C15ULL)
                             >> 57)  # top 7 bits: SN_SLOTS
    if _sn_key[h] == rcbuf:
        return <object>_sn_name[h]
    name = PyBytes_FromStringAndSize(<char *>nb.base, nb.len)
    Py_INCREF(name)
    Py_XDECREF(_sn_name[h])
    _sn_name[h] = <PyObject *>name
    _sn_key[h] = rcbuf
    return name


cdef nghttp2_nv *_nva_held(tuple pairs, list keep) except? NULL:
    """As ``_nva_from``, for a HEADERS frame that is sent later (a submitted request): the
    fields that are exact (bytes, bytes) tuples are marked for nghttp2 not to copy them (nor
    to lower-case the name, when it is lower case already).  The caller keeps ``pairs`` (a
    tuple: nobody can take a field out of it) alive until nghttp2 has serialized the frame.
    Any other field is copied by nghttp2 at submit time, as before."""
    cdef size_t n = len(pairs), i = 0
    cdef nghttp2_nv *nva = <nghttp2_nv *>malloc((n + 1) * sizeof(nghttp2_nv))
    if nva == NULL:
        raise MemoryError()
    try:
        for pair in pairs:
            if _nv_set(&nva[i], pair, keep):
                nva[i].flags = NGHTTP2_NV_FLAG_NO_COPY_VALUE | (
                    NGHTTP2_NV_FLAG_NO_COPY_NAME if _lowercase_name(
                        <object>PyTuple_GET_ITEM(pair, 0), nva[i].name, nva[i].namelen)
                    else 0)
            i += 1
    except BaseException:
        free(nva)
        raise
    return nva


# ---------------------------------------------------------------------------------------------
# stream state shared by both sides of a splice

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


cdef class _Conn:
    """What both connection kinds share: the session, the transport, the write path."""

    cdef nghttp2_session *session
    cdef readonly object transport
    cdef object _write
    cdef object loop
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
    cdef size_t olen                     # bytes of this flush in _obuf
    cdef size_t max_header_list
    cdef size_t max_retained
    cdef readonly size_t peak_buffered   # largest per-stream engine buffer seen (test hook)
    cdef int32_t cur_sid                 # _user_stream's memo: the last stream asked ...
    cdef object cur_st                   # ... and its _Stream (None: nothing remembered)
    cdef unsigned long early_tick        # the read in which it was last flushed early

    def __cinit__(self, *args, **kwargs):
        self.session = NULL
        self.streams = {}

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

    cdef int _out(self, const uint8_t *p, size_t n) except -1:
        # the one output buffer of the module (_obuf): a flush fills it and empties it before
        # it returns, and flushes never nest, so no connection holds a buffer while idle
        global _obuf, _ocap
        cdef size_t cap
        cdef char *nb
        if self.olen + n > _ocap:
            cap = _ocap * 2 if _ocap else 65536
            while cap < self.olen + n:
                cap *= 2
            nb = <char *>realloc(_obuf, cap)
            if nb == NULL:
                raise MemoryError()
            _obuf = nb
            _ocap = cap
        memcpy(_obuf + self.olen, p, n)
        self.olen += n
        return 0

    cdef int _write_out(self) except -1:
        cdef bytes b
        if self.olen:
            b = PyBytes_FromStringAndSize(_obuf, self.olen)
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
                break
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
        _run()

    cdef void _feed(self, data) except *:
        global _busy, _hold_loop, _last_finished
        cdef bytes b
        cdef ssize_t rv
        if self.session == NULL:
            return
        global _io_ticks
        b = data if type(data) is bytes else bytes(data)
        _io_ticks += 1
        _busy += 1
        try:
            rv = nghttp2_session_mem_recv(self.session, <const uint8_t *>PyBytes_AS_STRING(b),
                                          <size_t>PyBytes_GET_SIZE(b))
        finally:
            _busy -= 1
            _last_finished = None  # early flushes are per upstream read
        if rv < 0 and self.session != NULL:
            # a fatal error of the session (a CONTINUATION or other flood, a bad preface...):
            # GOAWAY with a code before the close below (a no-op when one is queued already)
            nghttp2_session_terminate_session(
                self.session, NGHTTP2_ENHANCE_YOUR_CALM if rv == -904 or rv == -905  # FLOODED,
                else NGHTTP2_INTERNAL_ERROR if rv == NGHTTP2_ERR_CALLBACK_FAILURE  # CONTINUATIONS
                else NGHTTP2_PROTOCOL_ERROR)
        _mark(self)
        if self.upstream or _busy:
            _run()
        else:  # a downstream read: what it sends upstream waits for the iteration's end
            _hold_loop = self.loop
            try:
                _run()
            finally:
                _hold_loop = None
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
    iv[n].value = st.initial_window_size
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
            # acknowledges the connection window even after the upstream stream closed
            nghttp2_session_consume(cli.session, st.cid, n)
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
        srv = st.server
        srv._note_buffered(st)
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
    if f.hd.type == NGHTTP2_HEADERS and f.headers.cat == NGHTTP2_HCAT_REQUEST:
        p = nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
        if p != NULL:
            (<_Stream>p).up_sent = 1
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


# ---------------------------------------------------------------------------------------------

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
    cdef bint greeted                # the client's first bytes came (our SETTINGS may go)
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
        self.scan_pre = 24  # the client magic, checked by libnghttp2
        self._set_tap(self.settings.tap_response_headers)

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
        if "peername" not in self.peer_info:
            self.peer_info["peername"] = transport.get_extra_info("peername")
        opt = _new_option(self.settings, 1)
        rv = nghttp2_session_server_new3(&self.session, _server_callbacks, <void *>self, opt,
                                         _session_mem)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError()
        # queued, not sent: they leave with the answer to the client's first bytes, so that an
        # HTTP/1.x client can be told 505 in its own protocol (dataplane.http1_refusal)
        _submit_settings(self.session, self.settings, 1)

    def data_received(self, data) -> None:
        cdef bytes b
        cdef uint32_t code
        if self.scan_dead:
            return
        b = data if type(data) is bytes else bytes(data)
        if not self.greeted:
            self.greeted = 1
            reply = http1_refusal(b)
            if reply is not None:
                self._refuse_http1(reply)
                return
        code = self._scan(<const uint8_t *>PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b))
        if code:
            self._connection_error(code)
            return
        self._feed(b)

    cdef uint32_t _scan(self, const uint8_t *p, size_t n) except? 0xffffffff:
        """Walk the frame headers in the client's bytes (a few compares per frame) for the
        RFC 9113 connection errors libnghttp2 lets through here: PRIORITY on stream 0 (it
        ignores PRIORITY frames once RFC 7540 priorities are off, so they are counted as
        control frames here too) and a HEADERS opening a stream id lower than one already
        used (§5.1.1; libnghttp2 keeps no closed streams).  Returns the error code, 0: none."""
        cdef size_t k
        cdef uint8_t t
        cdef int32_t sid
        cdef uint8_t *h
        while n:
            if self.scan_pre:
                k = n if n < self.scan_pre else self.scan_pre
                self.scan_pre -= k
            elif self.scan_skip:
                k = n if n < self.scan_skip else self.scan_skip
                self.scan_skip -= k
            else:
                k = <size_t>(9 - self.scan_hn)
                if k > n:
                    k = n
                memcpy(self.scan_hdr + self.scan_hn, p, k)
                self.scan_hn += <int>k
                if self.scan_hn == 9:
                    self.scan_hn = 0
                    h = self.scan_hdr
                    self.scan_skip = (<size_t>h[0] << 16) | (<size_t>h[1] << 8) | h[2]
                    t = h[3]
                    sid = <int32_t>(((<uint32_t>h[5] & 0x7f) << 24) | (<uint32_t>h[6] << 16)
                                    | (<uint32_t>h[7] << 8) | h[8])
                    if t == NGHTTP2_PRIORITY:
                        if sid == 0:
                            return NGHTTP2_PROTOCOL_ERROR
                        self._count_control()
                        if self.calmed:
                            return 0
                    elif t == NGHTTP2_HEADERS and sid & 1:
                        if sid > self.scan_top:
                            self.scan_top = sid
                        elif sid < self.scan_top and not self._known_stream(sid):
                            return NGHTTP2_PROTOCOL_ERROR
            p += k
            n -= k
        return 0

    cdef bint _known_stream(self, int32_t sid) noexcept:
        cdef unsigned int i
        if self.session != NULL and nghttp2_session_get_stream_user_data(self.session, sid) != NULL:
            return 1
        for i in range(RST_RING):
            if self.rst_ring[i] == sid:
                return 1
        return 0

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
        _run()

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
        cdef list keep = _scratch
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
            _scratch_clear()
            st.rh_base = st.rh_n  # the frame points into these rcbufs until it is sent
        if rv != 0:
            log.warning("nghttp2: cannot relay response on stream %d: %s", st.sid,
                        nghttp2_strerror(rv).decode())
            nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, st.sid,
                                      NGHTTP2_INTERNAL_ERROR)
        _mark(self)

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
                nghttp2_session_consume(cli.session, st.cid, st.rs.end - st.rs.start)
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
        _defer_done(st, self.loop)

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
        log.warning("nghttp2: %s from %s: GOAWAY(ENHANCE_YOUR_CALM)", why,
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
        cdef list keep = _scratch
        cdef tuple hold
        cdef nghttp2_nv *nva
        cdef nghttp2_data_provider prd
        cdef int32_t cid
        if st is None or self.session == NULL:
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
        hold = tuple(headers)
        try:
            nva = _nva_held(hold, keep)
        except BaseException:
            _scratch_clear()
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
            _scratch_clear()
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
        _run()

    cdef bint _replayable(self, _Stream st) noexcept:
        return st.rq_base == 0 and not st.retain_lost

    def can_replay(self, int stream_id) -> bool:
        """True when the stream's request body (if any) is retained whole for a replay."""
        cdef _Stream st = self._get(stream_id)
        if st is None:
            return False
        return self._replayable(st)

    def drain(self, int error_code=ErrorCode.NO_ERROR) -> None:
        """Graceful shutdown: GOAWAY notice, then GOAWAY(last stream id) after a PING round
        trip; in-flight streams finish and the transport closes when none is left."""
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
        _run()

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
