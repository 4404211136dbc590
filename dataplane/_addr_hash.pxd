# cython: language_level=3
# The slot of an object in a small identity memo (a table of 2**bits entries keyed by object
# address), for the compiled hot paths.  Header-only: modules cimport it.
#
# Addresses of objects of one size are a fixed stride apart (pymalloc hands out 16..512-byte
# blocks from pools), so their low bits repeat: a mask of ``addr >> 4`` would use a quarter
# of a 16-slot table for 64-byte objects.  Fibonacci hashing takes the top bits of the
# address times 2**64 / phi, which spreads any stride over the whole table.

from libc.stdint cimport uint64_t


cdef inline Py_ssize_t addr_slot(object o, int bits) noexcept:
    return <Py_ssize_t>((<uint64_t><size_t><void *>o * <uint64_t>0x9E3779B97F4A7C15ULL)
                        >> (64 - bits))


# An identity memo: the last key seen in each of MEMO_SLOTS slots (picked by the key's
# address) and its value, in one list (key at 2i, value at 2i + 1).  A hit needs the very
# same object: the memo never compares values, so it only fits keys that are the same object
# request after request (an HPACK decoder's cached field) and values that never change for it.

from cpython.list cimport PyList_GET_ITEM

cdef enum:
    MEMO_BITS = 6
    MEMO_SLOTS = 64


cdef inline list memo_new():
    return [None] * (2 * MEMO_SLOTS)


cdef inline object memo_get(list memo, object key):
    """The value remembered for ``key`` (this very object), else None."""
    cdef Py_ssize_t i
    if memo is None:
        return None
    i = 2 * addr_slot(key, MEMO_BITS)
    if <object>PyList_GET_ITEM(memo, i) is key:
        return <object>PyList_GET_ITEM(memo, i + 1)
    return None


cdef inline void memo_put(list memo, object key, object value):
    cdef Py_ssize_t i = 2 * addr_slot(key, MEMO_BITS)
    memo[i] = key
    memo[i + 1] = value
