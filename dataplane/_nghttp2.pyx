# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fast backend of the nfmesh HTTP/2 engine: a Cython binding of libnghttp2.

Implements ``ServerConnection`` and ``ClientConnection`` of ``dataplane.engine`` as asyncio
Protocols.  Received bytes go straight from ``data_received`` into
``nghttp2_session_mem_recv``; everything the sessions want to send is collected with
``nghttp2_session_mem_send`` and written with one ``transport.write`` per batch.

Spliced streams (``ServerConnection.splice``) are relayed in C: request DATA and trailers
downstream -> upstream and response HEADERS, DATA and trailers upstream -> downstream never
reach Python.  Flow control is end to end: automatic WINDOW_UPDATE is off and a received byte
is acknowledged (``nghttp2_session_consume``) only when the other session's data provider has
taken it, so a slow reader slows the writer and per-stream memory stays bounded by the windows.
Python runs once per request (``handler.on_request``) and once per finished splice
(``observer.on_complete`` / ``on_upstream_failed``); and once per response carrying a field
named in ``settings.tap_response_headers`` (``observer.on_response_headers``): such fields are
spotted in ``_cli_header`` by a length test and a memcmp, kept out of the relayed block, and
handed over in ``ServerConnection._spliced_response`` just before the HEADERS are submitted.

Lifetime rule: nghttp2 keeps raw pointers to a stream's ``_Stream`` object (stream user data,
data providers).  Each connection keeps the object in its ``streams`` dict until its own
stream-close (or frame-not-sent) callback, so it lives until both sides are done.

Idle connections: a downstream connection has no nghttp2 session (~25 KB) while the client
has sent only the preface, SETTINGS and SETTINGS ACKs; ``ServerConnection`` answers that
handshake itself with the bytes a session would send, and makes the session at the first
other frame (feeding it the kept bytes, its repeated first frames dropped by ``_out_strip``).

Per event loop: the flush and completion queues, the output buffer and the submits' scratch
list are one ``_LoopQueues`` object per running loop (``_nghttp2_loop.pxi``), looked up once
per connection; gateways running loops in several threads share none of it.  What stays
process-wide is touched only in C with the GIL held: the allocator's free lists and two
caches of immutable header names.

The module is one compilation unit made of the parts included at the end of this file, in
this order (each says what it holds at its top):

* ``_nghttp2_alloc.pxi``: byte buffers and the pooled allocator given to libnghttp2;
* ``_nghttp2_fields.pxi``: nv arrays from Python header fields, header-name caches;
* ``_nghttp2_stream.pxi``: ``_Stream``, one exchange on both sides of a splice;
* ``_nghttp2_loop.pxi``: the per-loop flush and completion queues;
* ``_nghttp2_conn.pxi``: ``_Conn`` (session, transport, write path) and the data providers;
* ``_nghttp2_callbacks.pxi``: the libnghttp2 callbacks, server and client side;
* ``_nghttp2_server.pxi``: ``ServerConnection``;
* ``_nghttp2_scan.pxi``: its walk of the client's frame headers (RFC 9113 checks, HPACK-bomb sizes);
* ``_nghttp2_client.pxi``: ``ClientConnection``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.list cimport PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cimport cython

from dataplane._addr_hash cimport addr_slot
from dataplane._nghttp2_api cimport *


cdef extern from "Python.h":
    void Py_SET_SIZE(object o, Py_ssize_t size)

import asyncio
import logging
import os
import threading
import weakref

from dataplane.abuse_log import cut_log
from dataplane.engine import ErrorCode, H2Settings, engine_problem
from dataplane.http1_refusal import http1_refusal
from dataplane.linger import close_after_fin

NAME = "nghttp2"

log = logging.getLogger("nfmesh.dataplane.nghttp2")

_DEFAULT_SETTINGS = H2Settings()
cdef bytes _DRAIN_PING = b"nfmdrain"
cdef enum:
    RST_RING = 32
cdef double _REFUSE_LINGER_S = 1.0  # an HTTP/1.x client refused with 505 gets this to read it
cdef uint32_t _MAX_STREAMS_UNKNOWN = 2147483647
cdef size_t _WRITE_CHUNK = 262144


class StreamError(ConnectionError):
    """A stream of ``ClientConnection.request`` ended without a whole response."""

    def __init__(self, error_code: int, message: str = "") -> None:
        self.error_code = int(error_code)
        try:
            name = ErrorCode(self.error_code).name
        except ValueError:
            name = hex(self.error_code)
        super().__init__(message or f"HTTP/2 stream closed with {name}")


include "_nghttp2_alloc.pxi"
include "_nghttp2_fields.pxi"
include "_nghttp2_stream.pxi"
include "_nghttp2_loop.pxi"
include "_nghttp2_conn.pxi"
include "_nghttp2_callbacks.pxi"
include "_nghttp2_server.pxi"
include "_nghttp2_scan.pxi"
include "_nghttp2_client.pxi"
