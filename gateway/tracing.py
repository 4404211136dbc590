"""W3C Trace Context (https://www.w3.org/TR/trace-context/) on the SBI hop, as a router hook.

With ``tracing.enabled``, every request the gateway forwards leaves with a ``traceparent``
naming this hop: the caller's trace id and flags kept, a new parent id (this hop's span id);
a request without a valid ``traceparent`` starts a new trace, sampled (flag 01) with
``tracing.sample_ratio``.  ``tracestate`` travels unchanged.  Implemented as a wrapper around
the router the data plane asks (``TraceContextRouter``), so neither the proxy nor the HTTP/2
engine changes: the rewrite is on the ``Forward`` decision's headers (and its alternates').

Not built yet: spans and their OTLP export (the hop's span id is minted here, but the
outcome of a request is only known to the proxy).
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

from dataplane.routing import Forward

TRACEPARENT = b"traceparent"
_VALID = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes | None) -> tuple[bytes, bytes] | None:
    """(trace id, flags) of a valid ``traceparent``; None when absent or invalid (version ff,
    all-zero ids, upper case, wrong lengths, version 00 with trailing data)."""
    if not value:
        return None
    m = _VALID.match(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == b"00" and rest:
        return None
    return trace_id, flags


class TraceContextRouter:
    """A router wrapper that stamps this hop's ``traceparent`` on every ``Forward``."""

    __slots__ = ("inner", "sample_ratio", "_inner_try", "_rand")

    def __init__(self, inner: Any, sample_ratio: float = 1.0, rand: Any = None) -> None:
        self.inner = inner
        self.sample_ratio = sample_ratio
        self._inner_try = getattr(inner, "try_route", None) or inner.route
        self._rand = rand or random.Random(int.from_bytes(os.urandom(8), "big"))

    def __getattr__(self, name: str) -> Any:  # hop_stamp and the like, as the inner router has
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def next_traceparent(self, incoming: bytes | None) -> bytes:
        got = parse_traceparent(incoming)
        rand = self._rand
        span = b"%016x" % (rand.getrandbits(64) or 1)
        if got is None:
            trace = b"%032x" % (rand.getrandbits(128) or 1)
            flags = b"01" if rand.random() < self.sample_ratio else b"00"
        else:
            trace, flags = got
        return b"00-" + trace + b"-" + span + b"-" + flags

    def _stamp(self, decision: Any, headers: Any) -> Any:
        if not isinstance(decision, Forward):
            return decision
        incoming = None
        for name, value in headers:
            if name == TRACEPARENT:
                incoming = value
                break
        tp = (TRACEPARENT, self.next_traceparent(incoming))
        decision.headers = [h for h in decision.headers if h[0] != TRACEPARENT] + [tp]
        if decision.alternates:
            decision.alternates = [(ep, [h for h in hs if h[0] != TRACEPARENT] + [tp])
                                   for ep, hs in decision.alternates]
        return decision

    def route(self, headers: Any, peer: dict) -> Any:
        return self._stamp(self.inner.route(headers, peer), headers)

    def try_route(self, headers: Any, peer: dict) -> Any:
        decision = self._inner_try(headers, peer)
        return None if decision is None else self._stamp(decision, headers)
