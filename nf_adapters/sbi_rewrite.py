# cython: annotation_typing=False
"""The per-request header pass of the SCP router.

Two functions, called once per request on the data plane:

* ``scan_request(headers)``: one pass over the request header list that picks out what routing
  needs (pseudo-headers, the 3GPP hop/target/deadline/priority headers and ``user-agent``) as
  raw bytes;
* ``rewrite_headers(headers, scheme, authority, path, hops, via)``: the forwarded header list:
  ``:scheme``/``:authority``/``:path`` replaced when given, ``3gpp-sbi-target-apiroot`` removed,
  ``3gpp-sbi-max-forward-hops`` replaced, ``host`` dropped when the authority changes, every other
  header kept in order, then the new hop count and our ``via`` appended.

Header names are bytes (a name of another type raises ``TypeError``); ``headers`` is a list of
``(name, value)`` pairs.

One source, two twins: this file is the pure module and, compiled a second time with
``sbi_rewrite.pxd`` beside it (Cython's pure-Python mode, setup.py's TWINS),
``nf_adapters._sbi_fast``, whose functions the compiled SCP router calls at C level.  Compiled
only (behind ``cython.compiled``): ``rewrite_headers`` reuses the (name, value) tuple it made
last for the same value object, and keeps the request's own field when the new value is that
field's value object (tuples are immutable: equal results, fewer allocations).  The tests run
both twins on random inputs and compare.  ``nf_adapters.scp_router`` uses the compiled one when
it is built (``FAST_REWRITE`` tells which).
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # no Cython here: this file runs as plain Python
    from dataplane import _no_cython as cython

Headers = list[tuple[bytes, bytes]]

# scan_request result positions
METHOD, SCHEME, AUTHORITY, PATH, TARGET_APIROOT, MAX_FORWARD_HOPS, VIA, MAX_RSP_TIME, \
    SENDER_TIMESTAMP, MESSAGE_PRIORITY, USER_AGENT = range(11)

_TARGET = b"3gpp-sbi-target-apiroot"
_HOPS = b"3gpp-sbi-max-forward-hops"
_RSP = b"3gpp-sbi-max-rsp-time"
_TS = b"3gpp-sbi-sender-timestamp"
_PRIO = b"3gpp-sbi-message-priority"
_UA = b"user-agent"
REPEATED = b"\x00"
_REPEATED = REPEATED
if not cython.compiled:
    # Uncompiled stand-ins for what sbi_rewrite.pxd gives the compiled twin: a list of room n
    # (its size 0, nothing to grow while adding), and adding to it
    def _new_list(n: int) -> list:
        return []

    _add = list.append

_COLON = 58  # b":"[0]
_THREE = 51  # b"3"[0]


def scan_request(headers: Headers) -> tuple:
    """(method, scheme, authority, path, target_apiroot, max_forward_hops, via, max_rsp_time,
    sender_timestamp, message_priority, user_agent): bytes or None each; ``via`` is a list of
    the Via field values (or None).  A repeated 3GPP header keeps its first value (a repeated
    Target-apiRoot or Message-Priority is reported as ``REPEATED`` (a NUL byte, which no valid
    field value holds) so the router rejects it); ``user-agent`` keeps its first value."""
    method = scheme = authority = path = target = hops = rsp = ts = prio = ua = None
    via = None
    for name, value in headers:
        if type(name) is not bytes:
            raise TypeError("header names must be bytes")
        if not name:
            continue
        if name[0] == _COLON:
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
        elif name.startswith(b"3gpp-"):
            if name == _TARGET:
                target = value if target is None else _REPEATED
            elif name == _HOPS:
                if hops is None:
                    hops = value
            elif name == _RSP:
                if rsp is None:
                    rsp = value
            elif name == _TS:
                if ts is None:
                    ts = value
            elif name == _PRIO:
                prio = value if prio is None else _REPEATED
        elif name == b"via":
            if via is None:
                via = [value]
            else:
                via.append(value)
        elif name == _UA:
            if ua is None:
                ua = value
    return (method, scheme, authority, path, target, hops, via, rsp, ts, prio, ua)


# Compiled: the (name, value) tuples rewrite_headers made last, per name, with their value: a
# router passes the same value objects request after request (its cached authority, hop count
# and via), so the tuple is reused instead of built and freed each time
_P_SCHEME, _P_AUTHORITY, _P_PATH, _P_HOPS, _P_VIA = range(5)
_NAMES = (b":scheme", b":authority", b":path", _HOPS, b"via")
_made_value = [None] * 5
_made_pair = [None] * 5


def _pair(slot: int, value: bytes) -> tuple:
    """``(name of slot, value)``: compiled, shared with the previous call when ``value`` is the
    same object."""
    if not cython.compiled:
        return (_NAMES[slot], value)
    if _made_value[slot] is value:
        return _made_pair[slot]
    pair = (_NAMES[slot], value)
    _made_value[slot] = value
    _made_pair[slot] = pair
    return pair


def _replaced(item: tuple, slot: int, value: bytes) -> tuple:
    """The field ``item`` with ``value``: compiled, ``item`` itself when it already holds that
    very object (the router passing the request's own :path back)."""
    if cython.compiled and type(item) is tuple:
        pair = item  # a C tuple: its size and items read in place
        if len(pair) == 2 and pair[1] is value:
            return item
    return _pair(slot, value)


def rewrite_headers(
    headers: Headers,
    scheme: bytes | None,
    authority: bytes | None,
    path: bytes | None,
    hops: bytes | None,
    via: bytes | None,
) -> Headers:
    """The forwarded header list (see module doc).  ``None`` keeps the received value."""
    # at most every field plus :scheme, :authority, :path, the hop count and via: compiled,
    # allocated once and filled in place (no growth while adding)
    out = _new_list(len(headers) + 5)
    seen_scheme = scheme is None
    seen_authority = authority is None
    seen_path = path is None
    drop_host = authority is not None
    pseudo_done = False
    for item in headers:
        name = item[0]
        if type(name) is not bytes:
            raise TypeError("header names must be bytes")
        if name and name[0] == _COLON:
            if name == b":scheme":
                if scheme is not None:
                    if seen_scheme:
                        continue
                    item = _replaced(item, _P_SCHEME, scheme)
                    seen_scheme = True
            elif name == b":authority":
                if authority is not None:
                    if seen_authority:
                        continue
                    item = _replaced(item, _P_AUTHORITY, authority)
                    seen_authority = True
            elif name == b":path":
                if path is not None:
                    if seen_path:
                        continue
                    item = _replaced(item, _P_PATH, path)
                    seen_path = True
            _add(out, item)
            continue
        if not pseudo_done:
            pseudo_done = True
            if not seen_scheme:
                _add(out, _pair(_P_SCHEME, scheme))
                seen_scheme = True
            if not seen_authority:
                _add(out, _pair(_P_AUTHORITY, authority))
                seen_authority = True
            if not seen_path:
                _add(out, _pair(_P_PATH, path))
                seen_path = True
        if len(name) > 5 and name[0] == _THREE:  # b"3gpp-..."
            if name == _TARGET or name == _HOPS:
                continue
        elif drop_host and name == b"host":
            continue
        _add(out, item)
    if not pseudo_done:
        if not seen_scheme:
            _add(out, _pair(_P_SCHEME, scheme))
        if not seen_authority:
            _add(out, _pair(_P_AUTHORITY, authority))
        if not seen_path:
            _add(out, _pair(_P_PATH, path))
    if hops is not None:
        _add(out, _pair(_P_HOPS, hops))
    if via is not None:
        _add(out, _pair(_P_VIA, via))
    return out
