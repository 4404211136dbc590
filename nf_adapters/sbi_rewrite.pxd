# cython: language_level=3
# C declarations for compiling nf_adapters/sbi_rewrite.py (one source, two twins): setup.py
# compiles that file as nf_adapters._sbi_fast with this file beside it (copied as
# _sbi_fast.pxd), so that its two functions are C calls for the compiled SCP router
# (nf_adapters/scp_model_c.pxd cimports them) and the names are compared as C bytes.  The pure
# module ignores this file.
cimport cython as cy
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF


cdef extern from "Python.h":
    Py_ssize_t Py_SIZE(object o)
    void Py_SET_SIZE(object o, Py_ssize_t size)


cdef inline list _new_list(Py_ssize_t n):
    """A list with room for ``n`` items and none yet (its slots NULL, beyond its size)."""
    cdef list out = PyList_New(n)
    Py_SET_SIZE(out, 0)
    return out


cdef inline void _add(list out, object item) noexcept:
    """Append to a list from ``_new_list`` (within its room)."""
    cdef Py_ssize_t k = Py_SIZE(out)
    Py_INCREF(item)
    PyList_SET_ITEM(out, k, item)
    Py_SET_SIZE(out, k + 1)

cdef bytes _TARGET, _HOPS, _RSP, _TS, _PRIO, _UA, _REPEATED
cdef tuple _NAMES
cdef list _made_value, _made_pair
cdef Py_ssize_t _P_SCHEME, _P_AUTHORITY, _P_PATH, _P_HOPS, _P_VIA
cdef int _COLON, _THREE

@cy.locals(name=bytes, via=list)
cpdef tuple scan_request(list headers)

@cy.locals(out=list, name=bytes, seen_scheme=bint, seen_authority=bint, seen_path=bint,
           drop_host=bint, pseudo_done=bint)
cpdef list rewrite_headers(list headers, scheme, authority, path, hops, via)

cdef tuple _pair(Py_ssize_t slot, object value)
@cy.locals(pair=tuple)
cdef object _replaced(object item, Py_ssize_t slot, object value)
