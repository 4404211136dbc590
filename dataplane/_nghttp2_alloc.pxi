# =============================================================================================
# dataplane/_nghttp2_alloc.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# Memory: the byte buffers of a stream (``Buf``: request body held, response body relayed)
# and the pooled allocator libnghttp2 gets (``nghttp2_mem``: per-size-class free lists in
# front of malloc).  Both are process-wide and touched only in C with the GIL held, so a
# thread switch never falls inside one of their calls.
# =============================================================================================

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


# ---------------------------------------------------------------------------------------------
# a pooled allocator for libnghttp2 (nghttp2_mem): per-size-class free lists in front of malloc.
# libnghttp2 allocates and frees several small blocks per stream (stream, frames, header
# buffers); recycling them skips most of glibc's bin work.  All calls happen with the GIL
# held (every session call is made from Python-holding code), so no lock is needed.

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

