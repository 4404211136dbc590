"""The per-request header pass of the SCP router, in pure Python (twin of ``_sbi_fast``).

Two functions, called once per request on the data plane:

* ``scan_request(headers)``: one pass over the request header list that picks out what routing
  needs (pseudo-headers, the 3GPP hop/target/deadline/priority headers and ``user-agent``) as
  raw bytes;
* ``rewrite_headers(headers, scheme, authority, path, hops, via)``: the forwarded header list:
  ``:scheme``/``:authority``/``:path`` replaced when given, ``3gpp-sbi-target-apiroot`` removed,
  ``3gpp-sbi-max-forward-hops`` replaced, ``host`` dropped when the authority changes, every other
  header kept in order, then the new hop count and our ``via`` appended.

``nf_adapters._sbi_fast`` (Cython) has the same functions with the same results; the tests run
both on random inputs and compare.  ``nf_adapters.scp_router`` imports the fast one when it is
built (``FAST_REWRITE`` tells which).
"""

from __future__ import annotations

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


def scan_request(headers: Headers) -> tuple:
    """(method, scheme, authority, path, target_apiroot, max_forward_hops, via, max_rsp_time,
    sender_timestamp, message_priority, user_agent): bytes or None each; ``via`` is a list of
    the Via field values (or None).  A repeated 3GPP header keeps its first value (a repeated
    Target-apiRoot or Message-Priority is reported as ``REPEATED`` (a NUL byte, which no valid
    field value holds) so the router rejects it); ``user-agent`` keeps its first value."""
    method = scheme = authority = path = target = hops = rsp = ts = prio = ua = None
    via = None
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
        elif name[:5] == b"3gpp-":
            if name == _TARGET:
                target = value if target is None else REPEATED
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
                prio = value if prio is None else REPEATED
        elif name == b"via":
            if via is None:
                via = [value]
            else:
                via.append(value)
        elif name == _UA:
            if ua is None:
                ua = value
    return (method, scheme, authority, path, target, hops, via, rsp, ts, prio, ua)


def rewrite_headers(
    headers: Headers,
    scheme: bytes | None,
    authority: bytes | None,
    path: bytes | None,
    hops: bytes | None,
    via: bytes | None,
) -> Headers:
    """The forwarded header list (see module doc).  ``None`` keeps the received value."""
    out: Headers = []
    append = out.append
    seen_scheme = scheme is None
    seen_authority = authority is None
    seen_path = path is None
    pseudo_done = False
    for item in headers:
        name = item[0]
        if name[:1] == b":":
            if name == b":scheme":
                if scheme is not None:
                    if seen_scheme:
                        continue
                    item = (name, scheme)
                    seen_scheme = True
            elif name == b":authority":
                if authority is not None:
                    if seen_authority:
                        continue
                    item = (name, authority)
                    seen_authority = True
            elif name == b":path":
                if path is not None:
                    if seen_path:
                        continue
                    item = (name, path)
                    seen_path = True
            append(item)
            continue
        if not pseudo_done:
            pseudo_done = True
            if not seen_scheme:
                append((b":scheme", scheme))
                seen_scheme = True
            if not seen_authority:
                append((b":authority", authority))
                seen_authority = True
            if not seen_path:
                append((b":path", path))
                seen_path = True
        if name == _TARGET or name == _HOPS:
            continue
        if name == b"host" and authority is not None:
            continue
        append(item)
    if not pseudo_done:
        if not seen_scheme:
            append((b":scheme", scheme))
        if not seen_authority:
            append((b":authority", authority))
        if not seen_path:
            append((b":path", path))
    if hops is not None:
        append((_HOPS, hops))
    if via is not None:
        append((b"via", via))
    return out
