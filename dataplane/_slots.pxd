# cython: language_level=3
# Direct reads and writes of the ``__slots__`` of pure-Python classes (slots dataclasses and
# the upstream pool), for the compiled hot paths: a slot is a fixed pointer-sized field of the
# object, so a compiled caller that has checked ``type(obj) is Cls`` reads it without the
# generic attribute lookup (type MRO cache, member descriptor, getter call).
#
# Header-only (inline functions): modules cimport it, nothing imports it at run time.
# ``slot_offsets`` answers None unless every name is a plain slot member of the class
# itself, so a class changed later (a property, a plain attribute) turns the fast reads off
# instead of reading the wrong field; callers keep their generic path for that case.

from cpython.ref cimport PyObject, Py_INCREF


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    ctypedef struct PyTypeObject:
        object (*tp_alloc)(PyTypeObject *, Py_ssize_t)  # a new reference


cdef inline tuple slot_offsets(type cls, tuple names):
    """The byte offset of each slot in ``names`` (in order), or None when one of them is not
    a plain ``__slots__`` member defined by ``cls`` itself."""
    from types import MemberDescriptorType

    cdef list out = []
    for name in names:
        d = cls.__dict__.get(name)
        if type(d) is not MemberDescriptorType:
            return None
        out.append((<PyMemberDescrObject *><PyObject *>d).d_member.offset)
    return tuple(out)


cdef inline object slot_get(object obj, Py_ssize_t off):
    """The value in the slot at ``off`` of ``obj`` (its type checked by the caller).  An unset
    slot reads as None where the attribute lookup would raise: use it only for slots the
    class's ``__init__`` always sets."""
    cdef PyObject *v = (<PyObject **>((<char *><PyObject *>obj) + off))[0]
    if v == NULL:
        return None
    return <object>v


cdef inline void slot_put_new(object obj, Py_ssize_t off, object value) noexcept:
    """Store ``value`` in the still-empty (NULL) slot at ``off`` of a fresh ``obj``."""
    Py_INCREF(value)
    (<PyObject **>((<char *><PyObject *>obj) + off))[0] = <PyObject *>value


cdef inline object new_instance(type cls):
    """``object.__new__(cls)`` without its Python call: the type's allocator, every slot
    NULL (for the caller to fill with ``slot_put_new``)."""
    return (<PyTypeObject *><PyObject *>cls).tp_alloc(<PyTypeObject *><PyObject *>cls, 0)
