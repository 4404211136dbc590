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
