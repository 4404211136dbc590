# cython: language_level=3
# C declarations for compiling nf_adapters/scp_model_c.py (one source, two twins): setup.py
# compiles that file as nf_adapters._scp_fast with this file beside it, so that the base of the
# SCP router is an extension type with C fields and its fast case C calls; the helpers below
# replace the pure module's stand-ins (its ``if not cython.compiled:`` block).  The pure module
# ignores this file.
cimport cython as cy

from dataplane._addr_hash cimport memo_get, memo_new, memo_put
from dataplane._slots cimport new_instance, slot_offsets, slot_put_new
from nf_adapters._sbi_fast cimport rewrite_headers, scan_request

cdef frozenset _IDEMPOTENT, _CHECKED, _CHECKED_LENGTHS
cdef str _MODEL_C
cdef Py_ssize_t _OFF[13]  # Forward's 13 fields (scp_model_c._FIELDS)
cdef bint _DIRECT
cdef tuple _NO_SCOPES


cdef class ModelCFastCase:
    cdef public object _o
    cdef public dict _targets
    cdef list _target_memo
    cdef object _hops_value, _via_value, _timeout
    cdef bint _model_c_on

    @cy.locals(scan=tuple)
    cpdef route(self, list headers, peer)
    @cy.locals(scan=tuple)
    cpdef try_route(self, list headers, peer)
    @cy.locals(name=bytes, info=tuple)
    cdef object _fast(self, list headers, tuple scan, object peer)


cdef object _forward(object endpoint, list headers, object timeout, bint retryable,
                     object consumer)
