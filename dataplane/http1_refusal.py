"""What an HTTP/2-only listener says to a client that speaks HTTP/1.x: ``505``, then close.

SBI runs on HTTP/2 (TS 29.500 §5.2), and an nfmesh listener speaks nothing else: h2c with
prior knowledge, or TLS with ALPN ``h2``.  A client that opens with an HTTP/1.x request line
where the HTTP/2 connection preface belongs (``curl`` without ``--http2-prior-knowledge``, an
NF configured for HTTP/1.1) would otherwise have the connection closed under it, or see the
server's binary SETTINGS frame as a garbled answer.  Both engines therefore hold their own
SETTINGS until the client's first bytes arrive (RFC 9113 §3.4 lets the server preface follow the
client's) and hand those bytes to ``http1_refusal`` first: an HTTP/1.x request line gets one
HTTP/1.1 ``505 HTTP Version Not Supported`` with a ProblemDetails body and the connection
closes; anything else goes to the HTTP/2 engine as before (which closes on a bad preface).
"""

from __future__ import annotations

import json
import re

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# an HTTP/1.x request line, whole in the first read (a method token, a target, the version);
# bounded so a long first read costs at most one scan of its first 8 KiB
_REQUEST_LINE = re.compile(rb"[A-Z]{1,20} [!-~]{1,8000} HTTP/1\.[01]\r?\n")

_BODY = json.dumps({
    "title": "HTTP Version Not Supported",
    "status": 505,
    "detail": "this listener speaks HTTP/2 only (h2c with prior knowledge, or TLS with ALPN h2)",
}, separators=(",", ":")).encode()

RESPONSE = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _BODY
)


def http1_refusal(first: bytes) -> bytes | None:
    """The bytes to answer when ``first`` (a connection's first data) opens an HTTP/1.x
    request: ``RESPONSE``.  None for the HTTP/2 preface (or a piece of it) and for anything
    else, which the HTTP/2 engine handles as before."""
    if PREFACE.startswith(first[:len(PREFACE)]):
        return None
    if _REQUEST_LINE.match(first) is None:
        return None
    return RESPONSE
