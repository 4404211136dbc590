"""Pure-Python HTTP/2 backend of the engine interface (``dataplane.engine``), on python-hyper h2.

``ServerConnection`` (downstream, we are the server) and ``ClientConnection`` (upstream, we are
the client) are asyncio Protocols around one ``h2.connection.H2Connection`` each.  The proxy
joins a downstream stream to an upstream stream with ``ServerConnection.splice``; from then on
the backend relays DATA and trailers both ways without calling the proxy again, under flow
control both ways, writing once per connection per ``data_received`` batch.

This module is the backend's name for ``dataplane.engine.load_backend``; the code is split by
concern:

* ``dataplane.h2_session``: h2's ``H2Connection`` with our adjustments (graceful GOAWAY,
  REFUSED_STREAM over the stream limit, 431 and HPACK-bomb limits, RFC 9113 error codes);
* ``dataplane.h2_splice``: what both connection kinds share (streams, flow-controlled relay,
  the per-event-loop write batch, abuse limits: each read's raw frame headers are charged to
  the per-second budgets before h2 parses it, and a long read is fed a slice at a time);
* ``dataplane.h2_server``: ``ServerConnection`` (lazy: no h2 session while the client has
  sent only its preface and SETTINGS);
* ``dataplane.h2_client``: ``ClientConnection``.
"""

from __future__ import annotations

from dataplane.h2_client import ClientConnection
from dataplane.h2_server import ServerConnection
from dataplane.h2_splice import log

NAME = "h2"

__all__ = ["NAME", "ClientConnection", "ServerConnection", "flush_writes", "log",
           "report_completions", "waiting_completions"]


def report_completions(limit: int = -1) -> int:
    """This backend tells observers of a finished exchange at once: none is ever waiting."""
    return 0


def waiting_completions() -> int:
    """Finished exchanges whose observers have not been told yet: never any here."""
    return 0


def flush_writes() -> None:
    """This backend writes at the end of each batch it handles: nothing is ever held."""
