# =============================================================================================
# dataplane/_nghttp2_fields.pxi: part of dataplane/_nghttp2.pyx (included there, one module).
# Header fields: nv arrays built from Python (name, value) pairs for the submits, and two
# process-wide caches of immutable things (header names known to be lower case; bytes
# objects for the names of HPACK's static table), filled in C with the GIL held.
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# nv arrays built from Python headers (nghttp2 copies them at submit time)

# the values a submit converts (str header values) live in a ``keep`` list until the submit
# call returned; the hot submits share their loop's (``_LoopQueues.scratch``) instead of
# making a list each (no submit runs inside another on one loop)
cdef inline void _scratch_clear(list keep) noexcept:
    if PyList_GET_SIZE(keep):
        del keep[:]


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
