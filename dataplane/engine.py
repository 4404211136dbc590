"""The HTTP/2 engine interface of nfmesh, shared by the fast and the pure backend.

Two backends implement it with the same classes and methods:

* ``dataplane._nghttp2`` (fast): a Cython binding of libnghttp2; per-frame work and the relay
  of spliced streams stay in C.
* ``dataplane.h2_engine`` (pure): the python-hyper ``h2`` library.

The proxy (``dataplane.proxy``) is written once against this interface.  Python is called once
per request (``ServerHandler.on_request``) and once when a spliced exchange ends
(``SpliceObserver.on_complete``), never per frame; plus once per response carrying a tapped
header field (``SpliceObserver.on_response_headers``, see "Response header tap").

Vocabulary
----------
``Headers``
    ``list[tuple[bytes, bytes]]``, lowercase names, pseudo-headers first, as on the wire.
``ServerConnection``
    One downstream HTTP/2 connection (we are the server).  It is an ``asyncio.Protocol``:
    the listener creates it with ``ServerConnection(handler, settings)`` and hands it to
    ``loop.create_server``.  A received request is announced with ``handler.on_request``; the
    request body is held in the engine (bounded by flow control: no WINDOW_UPDATE is sent for
    held bytes) until the handler calls ``respond``, ``reset``, ``read_body`` or ``splice``.
``ClientConnection``
    One upstream HTTP/2 connection (we are the client), also an ``asyncio.Protocol``, created
    with ``ClientConnection(settings, on_closed=None)`` through ``loop.create_connection``.
    It is what ``splice`` sends requests on, and it can send requests of its own with
    ``request`` (used by the project's load generator, emulated NFs and NRF notifications).
``splice``
    Joins a downstream stream to a new upstream stream: the engine submits the request
    headers upstream, relays request DATA (and trailers) downstream→upstream and the
    response HEADERS, DATA and trailers upstream→downstream, with flow control both ways:
    a byte is acknowledged (WINDOW_UPDATE) to the sender only once the other side's session
    has taken it, so a slow reader slows the writer and memory per stream stays bounded.

Response header tap
-------------------
``H2Settings.tap_response_headers`` names (lower case) response header fields that a
``ServerConnection`` built with those settings takes out of the final response HEADERS of its
spliced streams (not 1xx, not trailers) instead of relaying them: the overload headers
``3gpp-sbi-oci`` / ``3gpp-sbi-lci`` are read by the proxy and not passed on as they came.
When at least one such field arrived, the engine calls
``observer.on_response_headers(stream_id, status, fields)`` (``fields``: the tapped
``(name, value)`` pairs in arrival order) just before it submits the response HEADERS
downstream, and appends what the call returns (a list of pairs; None: nothing) after the
splice's ``extra_response_headers``.  An observer without ``on_response_headers`` gets the
fields relayed unchanged; an exception from it is logged and the response goes on without
the tapped fields.  Names are matched exactly (HTTP/2 names are lower case on the wire); a
response without any tapped field costs a length test per field and makes no call.

Resets
------
A client's RST_STREAM (or a lost downstream connection) on a spliced stream whose response
has not ended resets the upstream stream with CANCEL on both backends, so that a producer
honouring RST_STREAM stops working on a request nobody waits for.  (Before the upstream
stream's HEADERS were written, the request is simply never sent.)

``report_completions()``
    A backend function.  ``on_complete`` may come a little after the exchange's last frame:
    the nghttp2 backend tells observers at the event loop's next quiet moment (an iteration
    in which no connection read anything), so that under a burst the bookkeeping (metrics,
    access log, freeing the stream) does not delay the responses still to go.  It tells them
    anyway after 4 busy iterations or with more than 128 waiting.  ``report_completions()``
    tells every waiting observer now (a metrics scrape, shutdown); the h2 backend tells them
    at once, so there its ``report_completions()`` has nothing to do.

``flush_writes()``
    A backend function.  While the nghttp2 backend handles what a downstream connection read,
    what that sends upstream waits for the end of the event loop iteration, so that requests
    read from many client connections in one iteration go upstream in one write (each write
    to a local peer wakes it).  ``flush_writes()`` writes it now; the h2 backend holds nothing.

Per event loop
--------------
What a backend queues between a read and the end of the loop iteration (connections to
write, held upstream writes, waiting completion reports; the h2 backend's write batch) is
kept per running event loop, looked up once per connection: gateways running loops in
several threads share none of it.  The connections joined by ``splice`` belong to one loop.
``report_completions()``, ``waiting_completions()`` and ``flush_writes()`` act on the
running loop's; called outside a running loop, on those of every loop not running.

Error codes are the RFC 9113 codes (``ErrorCode`` below).

Answers of the engine's own
---------------------------
A request body over ``read_body``'s limit is answered 413 and a header list over
``max_header_list_size`` 431, with the same ``application/problem+json`` body on both backends
(``engine_problem``): TS 29.571 ProblemDetails with the TS 29.500 cause ``INVALID_MSG_FORMAT``
(the table has no cause of its own for either status; the NRF answers its 413 the same way).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Headers = list[tuple[bytes, bytes]]

PROBLEM_CONTENT_TYPE = b"application/problem+json"
_PROBLEM_TITLES = {413: "Payload Too Large", 431: "Request Header Fields Too Large"}


@functools.lru_cache(maxsize=64)
def engine_problem(status: int, limit: int) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """Headers and body of an answer of the engine's own (module doc): 413 for a body over
    ``limit`` bytes, 431 for a header list over ``limit`` bytes."""
    what = "request body" if status == 413 else "request header list"
    body = json.dumps({
        "title": _PROBLEM_TITLES.get(status, "Error"),
        "status": status,
        "detail": f"{what} larger than {limit} bytes",
        "cause": "INVALID_MSG_FORMAT",
    }, separators=(",", ":")).encode()
    return ((b"content-type", PROBLEM_CONTENT_TYPE),), body


class ErrorCode(enum.IntEnum):
    """RFC 9113 §7 error codes."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


@dataclass(frozen=True, slots=True)
class H2Settings:
    """What we advertise and the limits we enforce on one connection (both backends)."""

    max_concurrent_streams: int = 1000
    initial_window_size: int = 1 << 20  # per stream, bytes we accept before WINDOW_UPDATE
    connection_window_size: int = 16 << 20  # connection-level receive window
    max_frame_size: int = 16384
    max_header_list_size: int = 65536  # larger header blocks -> 431 / RST_STREAM
    header_table_size: int = 4096
    # abuse limits (rapid reset CVE-2023-44487, SETTINGS/PING floods): over the limit in a
    # one-second window -> GOAWAY(ENHANCE_YOUR_CALM)
    max_resets_per_second: int = 1000
    max_control_frames_per_second: int = 1000
    # HPACK-bomb budget: header bytes decoded on one connection (RFC 9113 §6.5.2 accounting,
    # name + value + 32 per field, 431'd blocks included) within a one-second window; over it
    # -> GOAWAY(ENHANCE_YOUR_CALM).  One header block decoding to more than
    # ``hard_header_list_size`` (4x max_header_list_size, at least 64 KiB) ends the
    # connection the same way; blocks between the two limits are answered 431.
    max_header_bytes_per_second: int = 64 << 20
    # streams refused (RST_STREAM REFUSED_STREAM: over max_concurrent_streams; or answered 431:
    # a header block over max_header_list_size) within a one-second window; over it ->
    # GOAWAY(ENHANCE_YOUR_CALM) (stream-limit exhaustion, a stream of oversized blocks)
    max_refused_streams_per_second: int = 100
    # a body the engine holds for an un-spliced stream, or retains for a replay
    max_retained_body: int = 65536
    # response bytes held for a spliced stream whose client does not read (zero window): the
    # window our upstream side opens to the producer for one stream, at most
    # ``relay_stream_buffer``: min(16 KiB, it) always, the rest only while the grants beyond
    # that of all the downstream connection's streams stay within ``relay_connection_buffer``
    # (both backends); a non-reader holds at most streams x 16 KiB + the connection cap
    relay_stream_buffer: int = 64 << 10
    relay_connection_buffer: int = 1 << 20
    # response header names (lower case, bytes) taken out of the final response HEADERS of
    # spliced streams and handed to ``SpliceObserver.on_response_headers`` (module doc)
    tap_response_headers: tuple[bytes, ...] = ()
    # tell a spliced stream's observer when its response is held up by the client
    # (``SpliceObserver.on_response_stalled``): the proxy gives the producer's admission slot
    # back there, so a client that does not read holds no producer capacity
    report_response_stall: bool = False

    @property
    def hard_header_list_size(self) -> int:
        """A header block decoding to more than this ends the connection (not just a 431)."""
        return max(4 * self.max_header_list_size, 1 << 16)

    def __post_init__(self) -> None:
        names = self.tap_response_headers
        if names:
            norm = tuple(n.encode("ascii") if isinstance(n, str) else bytes(n) for n in names)
            for n in norm:
                if not n or n != n.lower() or n.startswith(b":"):
                    raise ValueError(
                        f"tap_response_headers: {n!r} is not a lower-case header field name")
            if norm != names:
                object.__setattr__(self, "tap_response_headers", norm)


class ServerHandler(Protocol):
    """Implemented by whoever serves a ``ServerConnection`` (the proxy, an emulated NF)."""

    def on_request(
        self, conn: ServerConnection, stream_id: int, headers: Headers, end_stream: bool
    ) -> None:
        """A complete request header block arrived.

        ``end_stream`` is True when the request has no body.  The handler must eventually
        call exactly one of ``conn.respond``, ``conn.reset``, ``conn.read_body`` (then
        ``respond``) or ``conn.splice`` for this stream; it may do so later (after an await).
        """

    def on_stream_reset(self, conn: ServerConnection, stream_id: int, error_code: int) -> None:
        """The client reset a stream that the handler had not finished (optional hook)."""

    def on_connection_lost(self, conn: ServerConnection) -> None:
        """The downstream connection is gone."""


class SpliceObserver(Protocol):
    """Told, once per spliced request, how it went.  Never called per frame.

    ``on_response_headers`` is optional (looked up only when a tapped field arrives): an
    observer without it has the tapped fields relayed unchanged."""

    def on_response_headers(
        self, stream_id: int, status: int, fields: Headers
    ) -> Headers | None:
        """Optional.  The final response HEADERS (``status`` >= 200) of the spliced stream
        arrived from upstream carrying fields named in ``settings.tap_response_headers``:
        ``fields`` are those, ``(name, value)`` in arrival order; they are not relayed.
        Called once per response (never for 1xx or trailers, never when no tapped field is
        present), just before the response HEADERS are submitted downstream.  Return None to
        relay none of them, or a list of ``(name, value)`` pairs to append to the relayed
        response headers (after ``extra_response_headers``).  An exception is logged and the
        response relayed without the tapped fields.  The response is under way: the
        observer must not answer, reset or splice the stream from here."""

    def on_response_stalled(self, stream_id: int, status: int) -> None:
        """Called only when ``settings.report_response_stall`` (then the observer must have
        it): response bytes of the spliced stream arrived from upstream that the client's
        flow-control windows cannot take now (it does not read, or reads slower than the
        producer sends), after the final response HEADERS (``status``).  At most once per
        response; ``on_complete`` still comes at the end.  An exception is logged.  The
        observer must not answer, reset or splice the stream from here."""

    def on_upstream_failed(self, stream_id: int, error_code: int, reached: bool) -> None:
        """The upstream stream ended before response HEADERS came (reset, GOAWAY above its
        id, connection lost).  ``reached`` is False when the request provably never reached
        the producer (REFUSED_STREAM, GOAWAY last-stream-id below it, not yet written).

        The downstream stream is still open: the observer must answer it with
        ``conn.respond`` (an error), ``conn.reset``, or ``conn.splice`` to another upstream
        (allowed only when ``conn.can_replay(stream_id)``: the engine then replays the
        retained request body).
        """

    def on_complete(self, stream_id: int, status: int, error_code: int) -> None:
        """The exchange is over on both sides.  ``status`` is the response status sent
        downstream (0 if none); ``error_code`` is 0 for a clean end, else the RST/GOAWAY code.
        Called once, possibly a few loop iterations later (see ``report_completions``)."""


class ResponseCallback(Protocol):
    """Receives the answer to ``ClientConnection.request``."""

    def __call__(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        trailers: Headers,
        error: BaseException | None,
    ) -> None: ...


class ServerConnection(Protocol):
    """One downstream connection.  Each backend's class has this shape (an asyncio.Protocol)."""

    # ServerConnection(handler: ServerHandler, settings: H2Settings = H2Settings(),
    #                  peer_info: dict | None = None)
    peer_info: dict  # set by the listener: {"peername":..., "sslobject":..., "alpn":...}
    open_streams: int  # streams not yet fully closed

    def respond(
        self, stream_id: int, status: int, headers: Headers, body: bytes = b"",
        trailers: Headers | None = None,
    ) -> None:
        """Send a complete local response (ProblemDetails, NRF API answers).  Any held
        request body is discarded (and acknowledged).

        On a spliced stream whose response HEADERS have not been sent yet (the proxy's 504 on
        a deadline), the splice is cancelled (upstream stream reset with CANCEL) and this
        response is sent instead; ``observer.on_complete`` then reports its status.  Raises
        ``RuntimeError`` when the stream's response has already started."""

    def reset(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        """RST_STREAM the stream (on a spliced stream the upstream stream is reset too)."""

    def count_refused(self) -> None:
        """Charge one refused request to this connection's budget
        (``max_refused_streams_per_second``, shared with the streams the engine refuses
        itself): the handler refused a request that the client should not have sent (the
        proxy: a consumer over its share of a producer, 429).  Over the budget the connection
        ends with GOAWAY(ENHANCE_YOUR_CALM), so a client cannot make the gateway answer
        refusals as fast as it can write requests."""

    def read_body(
        self, stream_id: int, limit: int,
        callback: Callable[[bytes | None, Headers], None],
    ) -> None:
        """Collect the whole request body (at most ``limit`` bytes) then call
        ``callback(body, trailers)``; ``body`` is None if the limit was exceeded (the engine
        has then answered 413 itself) or the stream was reset."""

    def splice(
        self,
        stream_id: int,
        upstream: ClientConnection,
        headers: Headers,
        observer: SpliceObserver,
        extra_response_headers: Headers = (),  # type: ignore[assignment]
        retain_body: bool = False,
    ) -> None:
        """Send ``headers`` (the rewritten request) on a new stream of ``upstream`` and join
        the two streams (see module doc).  ``extra_response_headers`` are appended to the
        response HEADERS sent downstream (``3gpp-sbi-producer-id``...).  With
        ``retain_body`` the engine keeps up to ``settings.max_retained_body`` request bytes so
        that the request can be spliced again after ``on_upstream_failed``.
        If ``upstream`` cannot take a stream now (closed, GOAWAY received), the engine calls
        ``observer.on_upstream_failed(stream_id, REFUSED_STREAM, reached=False)``.
        Response header fields named in ``settings.tap_response_headers`` go to
        ``observer.on_response_headers`` instead of downstream (module doc).  A client reset
        (or lost connection) before the response ended resets the upstream stream (CANCEL)."""

    def can_replay(self, stream_id: int) -> bool:
        """True when the stream's request body (if any) is retained whole for a replay."""

    def drain(self, error_code: int = ErrorCode.NO_ERROR) -> None:
        """Graceful shutdown: GOAWAY with the last processed stream id; in-flight streams
        finish; the transport closes once none is left."""

    def close(self) -> None:
        """Abort the connection now."""


class ClientConnection(Protocol):
    """One upstream connection.  Each backend's class has this shape (an asyncio.Protocol)."""

    # ClientConnection(settings: H2Settings = H2Settings(),
    #                  on_closed: Callable[[ClientConnection], None] | None = None)
    open_streams: int
    max_streams: int  # the peer's SETTINGS_MAX_CONCURRENT_STREAMS (2**31-1 until known)
    ready: asyncio.Future[None]  # done when the peer's first SETTINGS arrived (or failed)

    @property
    def available(self) -> bool:
        """Connected, no GOAWAY received, and open_streams < max_streams."""

    @property
    def closed(self) -> bool:
        """Transport lost or GOAWAY received with no stream left."""

    def request(
        self, headers: Headers, body: bytes | None, callback: ResponseCallback,
        trailers: Headers | None = None,
    ) -> int:
        """Send a whole request of our own; the whole response goes to ``callback``.
        Returns the stream id."""

    def reset_stream(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        """Cancel one of our own requests (``request``) with RST_STREAM; its callback is not
        called."""

    def ping(self) -> None:
        """Send a PING (liveness of pooled connections)."""

    def drain(self) -> None:
        """Stop taking new streams, close once the open ones are done."""

    def close(self) -> None:
        """Abort the connection now."""


BACKENDS = ("nghttp2", "h2")


def load_backend(name: str = "auto"):
    """Return the backend module (with ``ServerConnection``, ``ClientConnection`` and
    ``NAME``).  ``auto`` picks nghttp2 when the Cython binding is built, else h2."""
    if name in ("auto", "nghttp2"):
        try:
            return importlib.import_module("dataplane._nghttp2")
        except ImportError:
            if name == "nghttp2":
                raise
    if name in ("auto", "h2"):
        return importlib.import_module("dataplane.h2_engine")
    raise ValueError(f"unknown HTTP/2 backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    """Names of the backends that import here."""
    names = []
    for name in BACKENDS:
        try:
            load_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names
