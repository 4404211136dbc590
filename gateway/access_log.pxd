# cython: language_level=3
# C declarations for compiling gateway/access_log.py (one source, two twins): setup.py compiles
# that file as gateway._access_log_fast with this file beside it, so that the log is an
# extension type with C fields and record() a C-level append.  The pure module ignores it.

cdef class AccessLog:
    cdef public object fmt, out, flush_s
    cdef public list _rows
    cdef public Py_ssize_t _size
    cdef public object _timer
    cdef object _dumps, _encode, _encode_lines, _flush

    cdef int _after_add(self) except -1
    cpdef flush(self)
    cdef object _format_rows(self, list rows, bint utf8_bytes)
