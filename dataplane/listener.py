"""SBI listeners: accept TCP (h2c prior knowledge) or TLS (ALPN h2) connections for a backend.

``serve`` wraps the backend's ``ServerConnection`` in a thin subclass that, once per connection,
sets TCP_NODELAY, fills ``peer_info`` (peername, sslobject, alpn, peercert) and refuses TLS
connections that did not negotiate h2 with an HTTP/1.1 505 answer (``dataplane.http1_refusal``;
the engines give the same answer to an HTTP/1.x request on h2c); after that the backend runs
untouched (no per-frame cost).  A handler with ``on_connection_made(conn)`` is told of each
accepted connection (the proxy uses it to drain idle connections too).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from types import ModuleType

from dataplane.engine import H2Settings, ServerHandler, load_backend
from dataplane.http1_refusal import RESPONSE as _REFUSAL

log = logging.getLogger("nfmesh.listener")


_classes: dict[int, type] = {}


class _Refused(asyncio.Protocol):
    """Takes over a refused connection until it is closed."""


def connection_class(backend: ModuleType) -> type:
    """The listener's subclass of ``backend.ServerConnection`` (cached per backend)."""
    cls = _classes.get(id(backend))
    if cls is not None:
        return cls
    base = backend.ServerConnection

    class ListenerConnection(base):  # type: ignore[valid-type, misc]
        __doc__ = f"{base.__qualname__} that fills peer_info and enforces ALPN h2."
        _listener_handler = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            info = self.peer_info
            info["peername"] = transport.get_extra_info("peername")
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None:
                alpn = sslobj.selected_alpn_protocol()
                info["sslobject"] = sslobj
                info["alpn"] = alpn
                info["peercert"] = sslobj.getpeercert()
                if alpn != "h2":
                    transport.set_protocol(_Refused())  # the backend never sees it
                    log.info("refused TLS connection from %s: ALPN %r, not h2",
                             info["peername"], alpn)
                    transport.write(_REFUSAL)
                    transport.close()
                    return
            super().connection_made(transport)
            hook = getattr(self._listener_handler, "on_connection_made", None)
            if hook is not None:
                hook(self)

    _classes[id(backend)] = ListenerConnection
    return ListenerConnection


async def serve(
    host: str,
    port: int,
    handler_factory: Callable[[], ServerHandler],
    backend: ModuleType | str = "auto",
    settings: H2Settings = H2Settings(),
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    backlog: int = 1024,
) -> asyncio.Server:
    """Listen on ``host:port``; each connection gets ``handler_factory()`` as its handler."""
    mod = load_backend(backend) if isinstance(backend, str) else backend
    cls = connection_class(mod)
    loop = asyncio.get_running_loop()

    def make_connection():
        handler = handler_factory()
        conn = cls(handler, settings)
        conn._listener_handler = handler
        return conn

    return await loop.create_server(
        make_connection,
        host, port, ssl=ssl_context, reuse_port=reuse_port or None, backlog=backlog,
    )
