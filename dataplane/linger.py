"""Closing a connection without losing the last thing written to it.

Closing a socket that still has unread input makes the kernel answer with a TCP RST, and an RST
can destroy data the peer had not read yet: a final GOAWAY, or the HTTP/1.1 505 given to a
client that spoke the wrong protocol.  ``close_after_fin`` sends FIN first (the peer reads what
we wrote, then sees end of stream) and closes ``linger_s`` later, or when the peer closes first.
"""

from __future__ import annotations

import asyncio


def close_after_fin(transport: asyncio.WriteTransport, linger_s: float) -> None:
    """FIN now, close after ``linger_s``; a transport that cannot half-close closes now."""
    try:
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(linger_s, transport.close)
            return
    except (OSError, RuntimeError, NotImplementedError):
        pass
    transport.close()
