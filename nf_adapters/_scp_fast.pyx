# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``nf_adapters.scp_router.ScpRouter``: SCP model C's common case in C.

``ScpRouter`` here subclasses the pure one (the reference, and the fallback when this module
is not built) and puts a fast case in front of ``route`` and ``try_route``.  The fast case is
a request whose ``3gpp-Sbi-Target-apiRoot`` was parsed before (the router's target cache),
that carries no ``via``, ``3gpp-Sbi-Max-Forward-Hops``, ``3gpp-Sbi-Max-Rsp-Time``,
``3gpp-Sbi-Message-Priority`` or header the pure class checks (``header_problem``), has a
``:path`` and goes to an apiRoot without a prefix: the answer is a ``Forward`` to the cached
endpoint with the headers rewritten by ``_sbi_fast`` (cimported: called at C level) and the
default hop count, built without a Python frame.  Every other request (first sight of a
target, loop headers, deadlines, static routes, fallbacks, errors) takes the pure class's own
path, so there is one behaviour to test; the suite runs both classes and compares their
decisions on randomized requests.

``nf_adapters.scp_router.ScpRouter`` is this class when it imports (``NFMESH_SCP_ROUTER=pure``
keeps the pure one); ``PureScpRouter`` is always the pure one.
"""

import dataclasses

from dataplane._addr_hash cimport memo_get, memo_new, memo_put
from dataplane._slots cimport new_instance, slot_offsets, slot_put_new
from nf_adapters import scp_router as _pure
from nf_adapters._sbi_fast cimport rewrite_headers as _rewrite, scan_request as _scan
from dataplane.routing import Forward


cdef type _ForwardType = Forward
cdef frozenset _IDEMPOTENT = _pure.IDEMPOTENT_METHODS
cdef str _MODEL_C = _pure.MODEL_C_CLUSTER
cdef object _consumer_key = _pure.consumer_key
cdef frozenset _CHECKED = frozenset(_pure.sh.CHECKED_REQUEST_HEADERS)
cdef frozenset _CHECKED_LENGTHS = _pure.sh.CHECKED_REQUEST_HEADER_LENGTHS
# read now: once this module is imported, ``scp_router.ScpRouter`` names the class below
_Pure = _pure.ScpRouter

NAME = "cython"


cdef class _ScpCore:
    """What the fast case reads, as C fields (``prime`` fills them after the pure
    ``__init__``), and the fast case itself, in front of ``route`` and ``try_route``."""

    cdef public object _o
    cdef public dict _targets
    cdef list _target_memo  # Target-apiRoot objects asked lately (by identity), their entries
    cdef object _hops_value, _via_value, _timeout
    cdef bint _model_c

    cdef _prime(self):
        o = self._o
        self._model_c = bool(o.model_c)
        self._hops_value = o.hops_values[o.max_forward_hops - 1]
        self._via_value = o.via_value
        self._timeout = o.default_timeout

    cdef object _fast(self, headers, tuple scan, peer):
        """The Forward for the fast case, else None (the pure path decides)."""
        target = scan[4]
        if target is not None and self._model_c:
            # a header the pure path checks (Routing-Binding, Target-Nf-Id,
            # Originating-Network-Id): that path decides; names are told apart by length first
            for pair in headers:
                name = (<tuple>pair)[0]
                if len(<bytes>name) in _CHECKED_LENGTHS and name in _CHECKED:
                    return None
            # a Target-apiRoot object seen lately (the decoder's cached field, one per client
            # connection), remembered with its entry: the same answer as the cache (an entry
            # never changes; one dropped by the cache's size bound would be parsed back the same)
            info = memo_get(self._target_memo, target)
            if info is None:
                info = self._targets.get(target)
                if info is not None:
                    if self._target_memo is None:  # first request: the memo's (empty) slots
                        self._target_memo = memo_new()
                    memo_put(self._target_memo, target, info)
            if (info is not None and scan[3] is not None and scan[5] is None
                    and scan[6] is None and scan[7] is None and scan[9] is None):
                root = (<tuple>info)[0]
                if not root.prefix:
                    return _forward(
                        (<tuple>info)[1],
                        _rewrite(headers, (<tuple>info)[2], (<tuple>info)[3], scan[3],
                                 self._hops_value, self._via_value),
                        self._timeout, scan[0] in _IDEMPOTENT,
                        scan[10] if not peer or "nf_identity" not in peer
                        else _consumer_key(peer, scan[10]))
        return None

    def route(self, headers, peer):
        cdef tuple scan = _scan(headers)
        decision = self._fast(headers, scan, peer)
        if decision is not None:
            return decision
        return self._route_scanned(headers, peer, scan)

    def try_route(self, headers, peer):
        """As the pure ``try_route`` (what a ``ChainRouter`` asks when the registry is on)."""
        cdef tuple scan = _scan(headers)
        decision = self._fast(headers, scan, peer)
        if decision is not None:
            return decision
        return self._try_route_scanned(headers, peer, scan)


# Forward's fields in order, and where each slot sits in the object: _forward fills them
# directly when Forward is exactly this slots dataclass (checked once at import), else it
# calls the dataclass
_FIELDS = ("endpoint", "headers", "cluster", "alternates", "extra_response_headers", "timeout",
           "retryable", "alternate_response_headers", "priority", "consumer", "restamp", "scopes")
cdef Py_ssize_t _OFF[12]
cdef bint _DIRECT = False


cdef bint _find_offsets() except -1:
    if tuple(f.name for f in dataclasses.fields(Forward)) != _FIELDS:
        return False
    if hasattr(Forward, "__post_init__") or Forward.__init__ is object.__init__:
        return False
    offsets = slot_offsets(Forward, _FIELDS)
    if offsets is None:
        return False
    for i in range(12):
        _OFF[i] = offsets[i]
    return True


_DIRECT = _find_offsets()
DIRECT_SLOTS = _DIRECT  # tests read it


cdef object _MINUS_ONE = -1
cdef tuple _NO_SCOPES = ()


cdef object _forward(endpoint, headers, timeout, bint retryable, consumer):
    # Forward(endpoint, headers, MODEL_C_CLUSTER, [], [], timeout, retryable, [], -1, consumer)
    # without running the dataclass's Python __init__: allocate, then fill every slot
    if not _DIRECT:
        return _ForwardType(endpoint, headers, _MODEL_C, [], [], timeout, retryable, [], -1,
                            consumer)
    fwd = new_instance(_ForwardType)
    slot_put_new(fwd, _OFF[0], endpoint)
    slot_put_new(fwd, _OFF[1], headers)
    slot_put_new(fwd, _OFF[2], _MODEL_C)
    slot_put_new(fwd, _OFF[3], [])
    slot_put_new(fwd, _OFF[4], [])
    slot_put_new(fwd, _OFF[5], timeout)
    slot_put_new(fwd, _OFF[6], True if retryable else False)
    slot_put_new(fwd, _OFF[7], [])
    slot_put_new(fwd, _OFF[8], _MINUS_ONE)
    slot_put_new(fwd, _OFF[9], consumer)
    slot_put_new(fwd, _OFF[10], False)
    slot_put_new(fwd, _OFF[11], _NO_SCOPES)
    return fwd


class ScpRouter(_ScpCore, _Pure):
    """``nf_adapters.scp_router.ScpRouter`` with model C's common case compiled (same API)."""

    def __init__(self, *args, **kwargs) -> None:
        _Pure.__init__(self, *args, **kwargs)
        (<_ScpCore>self)._prime()
