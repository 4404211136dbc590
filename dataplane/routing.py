"""The routing interface the data plane asks once per request: "given these headers, where to?"

The data plane defines it and knows no 3GPP; ``nf_adapters`` implements it over the route
snapshot (SCP model C from ``3gpp-sbi-target-apiroot``, static routes, model D from the
registry), and ``gateway`` wires the two together at start-up.

A ``Router.route`` call returns one of:

* ``Forward``: send the (rewritten) request to one endpoint of an upstream cluster;
* ``LocalResponse``: answer at once (ProblemDetails for a malformed header, no route, a loop);
* ``LocalService``: hand the request to an in-process service (the NRF API), which gets the
  whole request and returns a ``LocalResponse``.

Routers hold an immutable snapshot; the control plane swaps the router object atomically
(``RouterSlot.current``), so the data plane never waits on the control plane.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from dataplane.engine import Headers


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream address: where the pool connects."""

    host: str
    port: int
    tls: bool = False
    server_name: str | None = None  # SNI / certificate check name when tls
    # who the TLS peer must prove to be (opaque here: the router that chose the endpoint
    # knows what it means, and the pools' ``peer_check`` decides); None: the chain and
    # host name checks alone
    identity: str | None = None


@dataclass(slots=True)
class Forward:
    """Send ``headers`` (already rewritten: :scheme, :authority, :path, hop headers removed)
    to ``endpoint``.  ``alternates`` are tried in order when the first fails before the
    request reached it (or, for idempotent requests, on a retryable failure)."""

    endpoint: Endpoint
    headers: Headers
    cluster: str = ""
    alternates: list[tuple[Endpoint, Headers]] = field(default_factory=list)
    extra_response_headers: Headers = field(default_factory=list)
    timeout: float | None = None  # seconds until the response headers must arrive
    retryable: bool = False  # idempotent method or explicitly safe to replay
    # per alternate (same order): the extra response headers when that alternate answers
    # (its own 3gpp-sbi-producer-id); missing entries fall back to extra_response_headers
    alternate_response_headers: list[Headers] = field(default_factory=list)
    # admission (dataplane.admission): the request's rank (0 the most important; -1: the
    # configured default), who sent it (a per-consumer rate key), whether the proxy re-stamps
    # the time left into the headers when it sends (``Proxy.restamp``), and the overload
    # scopes the chosen producer belongs to (opaque keys, e.g. its NF set)
    priority: int = -1
    consumer: object = None
    restamp: bool = False
    scopes: tuple = ()
    # told once when the exchange ends: ``on_done(status, error_code, endpoint, reselections)``
    # (status 0 when no response came; the endpoint last tried; how many other endpoints were
    # tried after the first), e.g. to end a trace span; None (the default) costs nothing
    on_done: Callable[[int, int, Endpoint, int], None] | None = None


@dataclass(slots=True)
class LocalResponse:
    """An answer the gateway gives itself."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Request:
    """A whole request handed to a ``LocalService``."""

    method: str
    path: str  # path and query as received
    headers: Headers
    body: bytes
    peer: dict = field(default_factory=dict)


@dataclass(slots=True)
class LocalService:
    """Route to an in-process service; ``handle`` gets the whole request."""

    name: str
    handle: Callable[[Request], Awaitable[LocalResponse]]
    max_body: int = 1 << 20


Decision = Forward | LocalResponse | LocalService


class Router(Protocol):
    """Implemented in nf_adapters; called once per request on the data plane."""

    def route(self, headers: Headers, peer: dict) -> Decision: ...


class RouterSlot:
    """Holds the current router; the control plane replaces ``current`` in one assignment."""

    __slots__ = ("current",)

    def __init__(self, router: Router) -> None:
        self.current = router
