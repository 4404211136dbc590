# cython: annotation_typing=False
"""SCP model C's common case, in front of the SCP router's own path: ``ModelCFastCase`` is the
base of ``nf_adapters.scp_router.ScpRouter`` and gives it the Router protocol's ``route`` and
``try_route``, which scan the request headers once and hand them to the router's own path
(``_route_scanned`` / ``_try_route_scanned``).

One source, two twins: this file is the pure base and, compiled a second time with
``scp_model_c.pxd`` beside it (Cython's pure-Python mode, setup.py's TWINS), the extension type
``nf_adapters._scp_fast.ModelCFastCase``, which puts a fast case in front (``_fast``, behind
``cython.compiled``): a request whose ``3gpp-Sbi-Target-apiRoot`` was parsed before (the
router's target cache), that carries no ``via``, ``3gpp-Sbi-Max-Forward-Hops``,
``3gpp-Sbi-Max-Rsp-Time``, ``3gpp-Sbi-Message-Priority`` or header the router checks
(``header_problem``), has a ``:path`` and goes to an apiRoot without a prefix gets a
``Forward`` to the cached endpoint with the headers rewritten by ``_sbi_fast`` (a C call) and
the default hop count, built without a Python frame.  Every other request (first sight of a
target, loop headers, deadlines, static routes, fallbacks, errors) takes the router's own
path, so the pure router is the reference: the tests compare the two on randomized requests.
``nf_adapters.scp_router.load_scp_router`` builds the router class on either base.
"""

from __future__ import annotations

import dataclasses

try:
    import cython
except ImportError:  # no Cython here: this file runs as plain Python
    from dataplane import _no_cython as cython

from dataplane.routing import Forward
from nf_adapters import sbi_headers as sh
from nf_adapters.overload_control import consumer_key

IDEMPOTENT_METHODS = frozenset((b"GET", b"PUT", b"DELETE", b"HEAD", b"OPTIONS"))
MODEL_C_CLUSTER = "scp-model-c"

if not cython.compiled:
    # Uncompiled stand-ins for what scp_model_c.pxd gives the compiled twin: the header pass
    # (compiled when built), no identity memo and no direct slot writes (used only by _fast).
    try:
        from nf_adapters._sbi_fast import rewrite_headers, scan_request
    except ImportError:  # pragma: no cover - depends on the build
        from nf_adapters.sbi_rewrite import rewrite_headers, scan_request

    def slot_offsets(cls: type, names: tuple) -> None:
        return None

    memo_get = memo_new = memo_put = new_instance = slot_put_new = None
    _OFF = [0] * 13  # compiled: a C array (scp_model_c.pxd)

_IDEMPOTENT = IDEMPOTENT_METHODS
_MODEL_C = MODEL_C_CLUSTER
_CHECKED = frozenset(sh.CHECKED_REQUEST_HEADERS)
_CHECKED_LENGTHS = sh.CHECKED_REQUEST_HEADER_LENGTHS


class ModelCFastCase:
    """``route`` and ``try_route`` of the SCP router (see the module doc).  The router's
    ``__init__`` sets ``_o`` (its options) and ``_targets`` (its target cache), then calls
    ``_prime``."""

    def _prime(self) -> None:
        """Read what the fast case needs from the router's options (once, after its init)."""
        o = self._o
        self._model_c_on = bool(o.model_c)
        self._hops_value = o.hops_values[o.max_forward_hops - 1]
        self._via_value = o.via_value
        self._timeout = o.default_timeout
        self._target_memo = None  # Target-apiRoot objects asked lately, with their entries

    def route(self, headers: list, peer: dict) -> object:
        scan = scan_request(headers)
        if cython.compiled:
            decision = self._fast(headers, scan, peer)
            if decision is not None:
                return decision
        return self._route_scanned(headers, peer, scan)

    def try_route(self, headers: list, peer: dict) -> object:
        """The decision for requests this router (or its fallback) owns; None otherwise."""
        scan = scan_request(headers)
        if cython.compiled:
            decision = self._fast(headers, scan, peer)
            if decision is not None:
                return decision
        return self._try_route_scanned(headers, peer, scan)

    def _fast(self, headers: list, scan: tuple, peer: dict) -> object:
        """The compiled twin's Forward for the fast case, else None (the router decides)."""
        target = scan[4]
        if target is None or not self._model_c_on:
            return None
        # a header the router checks (Routing-Binding, Target-Nf-Id, Originating-Network-Id):
        # the router decides; names are told apart by length first
        for pair in headers:
            name = pair[0]
            if len(name) in _CHECKED_LENGTHS and name in _CHECKED:
                return None
        # a Target-apiRoot object seen lately (the decoder's cached field, one per client
        # connection), remembered with its entry: the same answer as the cache (an entry never
        # changes; one dropped by the cache's size bound would be parsed back the same)
        info = memo_get(self._target_memo, target)
        if info is None:
            info = self._targets.get(target)
            if info is not None:
                if self._target_memo is None:  # first request: the memo's (empty) slots
                    self._target_memo = memo_new()
                memo_put(self._target_memo, target, info)
        if (info is None or scan[3] is None or scan[5] is not None or scan[6] is not None
                or scan[7] is not None or scan[9] is not None):
            return None
        if info[0].prefix:
            return None
        ua = scan[10]
        return _forward(
            info[1],
            rewrite_headers(headers, info[2], info[3], scan[3], self._hops_value,
                            self._via_value),
            self._timeout, scan[0] in _IDEMPOTENT,
            ua if ua is not None and (not peer or "nf_identity" not in peer)
            else consumer_key(peer, ua))


# Forward's fields in order: _forward fills their slots directly when Forward is exactly this
# slots dataclass (checked once at import), else it calls the dataclass
_FIELDS = ("endpoint", "headers", "cluster", "alternates", "extra_response_headers", "timeout",
           "retryable", "alternate_response_headers", "priority", "consumer", "restamp", "scopes",
           "on_done")


def _find_offsets() -> bool:
    if tuple(f.name for f in dataclasses.fields(Forward)) != _FIELDS:
        return False
    if hasattr(Forward, "__post_init__") or Forward.__init__ is object.__init__:
        return False
    offsets = slot_offsets(Forward, _FIELDS)
    if offsets is None:
        return False
    for i in range(len(_FIELDS)):
        _OFF[i] = offsets[i]
    return True


_DIRECT = _find_offsets()
DIRECT_SLOTS = _DIRECT  # tests read it
_NO_SCOPES = ()


def _forward(endpoint: object, headers: list, timeout: object, retryable: bool,
             consumer: object) -> Forward:
    """``Forward(endpoint, headers, MODEL_C_CLUSTER, [], [], timeout, retryable, [], -1,
    consumer)``, compiled without running the dataclass's Python ``__init__``: allocated, then
    every slot filled."""
    if not _DIRECT:
        return Forward(endpoint, headers, _MODEL_C, [], [], timeout, retryable, [], -1,
                       consumer)
    fwd = new_instance(Forward)
    slot_put_new(fwd, _OFF[0], endpoint)
    slot_put_new(fwd, _OFF[1], headers)
    slot_put_new(fwd, _OFF[2], _MODEL_C)
    slot_put_new(fwd, _OFF[3], [])
    slot_put_new(fwd, _OFF[4], [])
    slot_put_new(fwd, _OFF[5], timeout)
    slot_put_new(fwd, _OFF[6], True if retryable else False)
    slot_put_new(fwd, _OFF[7], [])
    slot_put_new(fwd, _OFF[8], -1)
    slot_put_new(fwd, _OFF[9], consumer)
    slot_put_new(fwd, _OFF[10], False)
    slot_put_new(fwd, _OFF[11], _NO_SCOPES)
    slot_put_new(fwd, _OFF[12], None)
    return fwd
