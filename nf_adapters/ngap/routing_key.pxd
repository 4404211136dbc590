# cython: language_level=3
# C declarations for compiling nf_adapters/ngap/routing_key.py (one source, two twins): setup.py
# compiles that file as nf_adapters._ngap_fast with this file beside it, so that positions,
# lengths and ids are C integers and the output is written in place with memcpy; the helpers below
# replace the pure module's stand-ins (its ``if not cython.compiled:`` block).  The pure module
# ignores this file.
cimport cython as cy
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy


cdef inline Py_ssize_t _copy(bytearray out, Py_ssize_t o, bytes data, Py_ssize_t begin,
                             Py_ssize_t stop) noexcept:
    """Write ``data[begin:stop]`` at ``o`` of ``out`` (bounds checked by the caller: the
    buffer is made large enough); the position after it."""
    memcpy(PyByteArray_AS_STRING(out) + o, PyBytes_AS_STRING(data) + begin, stop - begin)
    return o + stop - begin


cdef inline Py_ssize_t _put(bytearray out, Py_ssize_t o, int b) noexcept:
    PyByteArray_AS_STRING(out)[o] = <char>b
    return o + 1


cdef inline bytes _bytes(bytearray out, Py_ssize_t begin, Py_ssize_t stop):
    return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(out) + begin, stop - begin)


cdef long long NONE, MAX_RAN_UE_ID, MAX_AMF_UE_ID
cdef int _IE_AMF_SET_ID, _IE_AMF_UE, _IE_FIVEG_S_TMSI, _IE_GUAMI, _IE_RAN_UE, _IE_UE_NGAP_IDS

@cy.locals(b=int)
cdef Py_ssize_t _length(bytes data, Py_ssize_t end, Py_ssize_t pos) except -1

@cy.locals(v=cy.longlong, i=Py_ssize_t)
cdef long long _uint(bytes data, Py_ssize_t pos, int n) except? -1

cdef int _octets(unsigned long long v) noexcept

@cy.locals(b=int, length=Py_ssize_t, end=Py_ssize_t)
cdef Py_ssize_t _message(bytes data) except -1

@cy.locals(start=Py_ssize_t, end=Py_ssize_t, pos=Py_ssize_t, vpos=Py_ssize_t, vlen=Py_ssize_t,
           count=int, _i=int, ie=int, k=int, m=int, b=int, bits=cy.uint,
           ran=cy.longlong, amf=cy.longlong, set_id=cy.longlong, pointer=cy.longlong,
           tmsi=cy.longlong, region=cy.longlong)
cpdef tuple extract(bytes data)

cdef Py_ssize_t _put_length(bytearray out, Py_ssize_t o, Py_ssize_t n) except -1

cdef Py_ssize_t _put_uint(bytearray out, Py_ssize_t o, unsigned long long v, int n) noexcept

@cy.locals(start=Py_ssize_t, end=Py_ssize_t, pos=Py_ssize_t, vpos=Py_ssize_t, vlen=Py_ssize_t,
           nxt=Py_ssize_t, count=int, _i=int, ie=int, k=int, m=int, b=int, o=Py_ssize_t,
           body=Py_ssize_t, n=Py_ssize_t, first=Py_ssize_t, old_amf=cy.longlong,
           old_ran=cy.longlong, out=bytearray, changed=bint)
cpdef bytes rewrite_ue_ids(bytes data, long long ran_ue_id, long long amf_ue_id)
