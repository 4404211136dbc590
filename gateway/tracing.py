"""W3C Trace Context (https://www.w3.org/TR/trace-context/) on the SBI hop, and this hop's span.

With ``tracing.enabled``, every request the gateway forwards leaves with a ``traceparent``
naming this hop: the caller's trace id and flags kept, a new parent id (this hop's span id);
a request without a valid ``traceparent`` starts a new trace, sampled (flag 01) with
``tracing.sample_ratio``.  ``tracestate`` travels unchanged.  Implemented as a wrapper around
the router the data plane asks (``TraceContextRouter``), so neither the proxy nor the HTTP/2
engine changes: the rewrite is on the ``Forward`` decision's headers (and its alternates').

Spans: with an export sink (``tracing.otlp_endpoint``, ``gateway.otlp_export``), a sampled
request's ``Forward`` also gets ``on_done = HopSpan(...)``: the span's ids and start time are
taken at routing, the outcome (status, HTTP/2 error code, the producer that answered,
reselections) and end time when the proxy calls ``on_done``, and the span is handed to the
sink (a ``gateway.span_batcher.SpanBatcher``) as it is: attributes are worked out in the
export thread, not on the event loop.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from time import time_ns
from typing import Any

from dataplane.routing import Forward

TRACEPARENT = b"traceparent"
_VALID = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_SAMPLED = frozenset(b"13579bdf")  # the last hex digit of the flags: bit 0 is "sampled"


def _parse(value: bytes | None) -> tuple[bytes, bytes, bytes] | None:
    """(trace id, parent id, flags) of a valid ``traceparent``, else None."""
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
    return trace_id, parent_id, flags


def parse_traceparent(value: bytes | None) -> tuple[bytes, bytes] | None:
    """(trace id, flags) of a valid ``traceparent``; None when absent or invalid (version ff,
    all-zero ids, upper case, wrong lengths, version 00 with trailing data)."""
    got = _parse(value)
    return None if got is None else (got[0], got[2])


class HopSpan:
    """One sampled forwarded request's span: ids, start and the request's headers from
    routing; the outcome from the proxy's ``Forward.on_done`` call (this object is that
    callable), after which it goes to ``sink``.  Holds no reference to the ``Forward`` (that
    holds this), so no reference cycle is made per request."""

    __slots__ = ("sink", "trace_id", "span_id", "parent_id", "flags", "headers", "cluster",
                 "producer_ids", "alt_producer_ids", "start_ns", "end_ns", "status",
                 "error_code", "endpoint", "reselections", "chained")

    def __init__(self, sink: Callable[[HopSpan], object], trace_id: bytes, span_id: bytes,
                 parent_id: bytes | None, flags: bytes, headers: Any, fwd: Forward) -> None:
        self.sink = sink
        self.trace_id = trace_id  # 32 lower-case hex digits, as in the traceparent
        self.span_id = span_id  # 16 hex digits: the parent id of the forwarded traceparent
        self.parent_id = parent_id  # the caller's span (16 hex digits); None: a new trace
        self.flags = flags
        self.headers = tuple(headers)  # the request as received (read in the export thread)
        self.cluster = fwd.cluster
        self.producer_ids = fwd.extra_response_headers  # 3gpp-sbi-producer-id, model D
        self.alt_producer_ids = fwd.alternate_response_headers
        self.chained = fwd.on_done  # a hook already there is still told
        self.start_ns = time_ns()
        self.end_ns = 0
        self.status = 0
        self.error_code = 0
        self.endpoint: Any = None
        self.reselections = 0

    def __call__(self, status: int, error_code: int, endpoint: Any, reselections: int) -> None:
        self.end_ns = time_ns()
        self.status = status
        self.error_code = error_code
        self.endpoint = endpoint
        self.reselections = reselections
        self.sink(self)
        if self.chained is not None:
            self.chained(status, error_code, endpoint, reselections)


class TraceContextRouter:
    """A router wrapper that stamps this hop's ``traceparent`` on every ``Forward``, and,
    given a span sink, makes a ``HopSpan`` of every sampled one."""

    __slots__ = ("inner", "sample_ratio", "spans", "_inner_try", "_rand")

    def __init__(self, inner: Any, sample_ratio: float = 1.0, rand: Any = None,
                 spans: Callable[[HopSpan], object] | None = None) -> None:
        self.inner = inner
        self.sample_ratio = sample_ratio
        self.spans = spans  # e.g. SpanBatcher.submit; None: no spans
        self._inner_try = getattr(inner, "try_route", None) or inner.route
        self._rand = rand or random.Random(int.from_bytes(os.urandom(8), "big"))

    def __getattr__(self, name: str) -> Any:  # hop_stamp and the like, as the inner router has
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _next(self, got: tuple[bytes, bytes, bytes] | None) -> tuple[bytes, bytes, bytes]:
        """(trace id, this hop's span id, flags) for a request whose traceparent is ``got``."""
        rand = self._rand
        span = b"%016x" % (rand.getrandbits(64) or 1)
        if got is None:
            trace = b"%032x" % (rand.getrandbits(128) or 1)
            flags = b"01" if rand.random() < self.sample_ratio else b"00"
            return trace, span, flags
        return got[0], span, got[2]

    def next_traceparent(self, incoming: bytes | None) -> bytes:
        trace, span, flags = self._next(_parse(incoming))
        return b"00-" + trace + b"-" + span + b"-" + flags

    def _stamp(self, decision: Any, headers: Any) -> Any:
        if not isinstance(decision, Forward):
            return decision
        incoming = None
        for name, value in headers:
            if name == TRACEPARENT:
                incoming = value
                break
        got = _parse(incoming)
        trace, span, flags = self._next(got)
        tp = (TRACEPARENT, b"00-" + trace + b"-" + span + b"-" + flags)
        decision.headers = [h for h in decision.headers if h[0] != TRACEPARENT] + [tp]
        if decision.alternates:
            decision.alternates = [(ep, [h for h in hs if h[0] != TRACEPARENT] + [tp])
                                   for ep, hs in decision.alternates]
        if self.spans is not None and flags[1] in _SAMPLED:
            decision.on_done = HopSpan(self.spans, trace, span, None if got is None else got[1],
                                       flags, headers, decision)
        return decision

    def route(self, headers: Any, peer: dict) -> Any:
        return self._stamp(self.inner.route(headers, peer), headers)

    def try_route(self, headers: Any, peer: dict) -> Any:
        decision = self._inner_try(headers, peer)
        return None if decision is None else self._stamp(decision, headers)
