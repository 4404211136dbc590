# cython: language_level=3
# C declarations for compiling gateway/stats_core.py (one source, two twins): setup.py compiles
# that file as gateway._stats_fast with this file beside it: a cell's counts are a C array,
# the bucket search and the cell cache are C.  The pure module ignores this file.
cimport cython as cy

# sized for stats_core.BUCKETS (13 bounds, 14 cells): it refuses to import if they differ
cdef double _BOUNDS[13]
cdef Py_ssize_t _NBOUNDS, _NB
cdef int _SLOT_BITS
cdef unsigned long long _K_METHOD, _K_STATUS, _K_GOLDEN

@cy.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
cdef Py_ssize_t _bucket(double x) noexcept

cdef bint _cacheable(object status)

@cy.locals(h=cy.ulonglong, m=cy.ulonglong)
cdef Py_ssize_t _slot(object cluster, object method, unsigned long long status) noexcept


@cy.final
cdef class _Cell:
    cdef unsigned long long counts[14]
    cdef double total
    cdef object cluster, method
    cdef long status

    cpdef list as_list(self)


@cy.final
cdef class RequestStats:
    cdef dict _cells
    cdef public dict resets
    cdef list _slots

    @cy.locals(cell=_Cell, slot=Py_ssize_t, st=long, i=Py_ssize_t)
    cpdef on_request_done(self, cluster, method, status, double duration_s, error_code)
    cdef _Cell _new_key(self, cluster, method, status)
