"""Pure-Python HTTP/2 backend of the engine interface (``dataplane.engine``), on python-hyper h2.

``ServerConnection`` (downstream, we are the server) and ``ClientConnection`` (upstream, we are
the client) are asyncio Protocols around one ``h2.connection.H2Connection`` each.  The proxy
joins a downstream stream to an upstream stream with ``ServerConnection.splice``; from then on
this module relays DATA and trailers both ways without calling the proxy again:

* a received DATA byte is acknowledged (WINDOW_UPDATE) to its sender only once the other
  connection's session took it (sent into its flow-control window), so a slow reader slows the
  writer and the bytes held per stream stay below the stream window;
* a connection whose transport is paused (``pause_writing``) takes nothing more until
  ``resume_writing``;
* all the frames produced while handling one ``data_received`` batch (on this and the other
  connections touched) are written with one ``transport.write`` per connection.

h2 is used with manual flow control and three small adjustments (``_H2``): a GOAWAY does not
close h2's state machine (so in-flight streams finish: graceful drain both ways), a stream over
our SETTINGS_MAX_CONCURRENT_STREAMS gets RST_STREAM(REFUSED_STREAM) instead of a connection
error, and header blocks between the advertised and a hard header-list limit are decoded (HPACK
stays in sync) and answered 431, while larger ones end the connection (HPACK bomb defence).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from hyperframe.exceptions import InvalidDataError
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from dataplane.engine import (
    ErrorCode,
    H2Settings,
    Headers,
    ResponseCallback,
    SpliceObserver,
    engine_problem,
)
from dataplane.http1_refusal import http1_refusal
from dataplane.linger import close_after_fin

NAME = "h2"


def report_completions(limit: int = -1) -> int:
    """This backend tells observers of a finished exchange at once: none is ever waiting."""
    return 0


def waiting_completions() -> int:
    """Finished exchanges whose observers have not been told yet: never any here."""
    return 0


def flush_writes() -> None:
    """This backend writes at the end of each batch it handles: nothing is ever held."""


log = logging.getLogger("nfmesh.h2")

_MAX_STREAMS_UNKNOWN = 2**31 - 1
_LINGER_S = 1.0  # how long a closing connection keeps discarding input after its GOAWAY
_DRAIN_PING = b"nfmdrain"
_PREFACE_LEN = 24 + 9  # the client magic and the first frame's header
# Connections marked for a flush while a data_received batch runs; written once at its end.
_batch: list | None = None

# stream modes (downstream)
_HELD = 0  # request announced, body held in the engine, handler not decided yet
_READING = 1  # read_body in progress
_SPLICED = 2  # joined to an upstream stream
_LOCAL = 3  # answered locally (respond/reset); request body discarded
# upstream stream modes
_UP_SPLICE = 4
_UP_REQUEST = 5


class _ConnectionError(h2.exceptions.ProtocolError):
    """A connection error with the code RFC 9113 names (h2 would say PROTOCOL_ERROR)."""

    def __init__(self, msg: str, code: int) -> None:
        super().__init__(msg)
        self.error_code = code


class _CalmError(h2.exceptions.DenialOfServiceError):
    """A per-connection budget is spent: GOAWAY(ENHANCE_YOUR_CALM)."""


class _FrameBuffer(FrameBuffer):
    """h2's frame buffer, with the RFC 9113 §6.5 code for a SETTINGS ACK with a payload
    (FRAME_SIZE_ERROR; hyperframe reports it as invalid data, which h2 makes PROTOCOL_ERROR)
    and ENHANCE_YOUR_CALM for a header block in more than 64 CONTINUATION frames."""

    def __next__(self):
        try:
            return super().__next__()
        except h2.exceptions.ProtocolError as exc:
            cause = exc.__cause__
            if isinstance(cause, InvalidDataError) and "ack frame must not have payload" in str(
                    cause).lower():
                raise _ConnectionError(str(cause), ErrorCode.FRAME_SIZE_ERROR) from exc
            if "too many continuation frames" in str(exc).lower():
                # a CONTINUATION flood: ENHANCE_YOUR_CALM, as libnghttp2 answers it
                raise _CalmError(str(exc)) from exc
            raise


class _SizingDecoder(hpack.Decoder):
    """hpack's decoder that notes the decoded size of each block (RFC 9113 accounting) and
    turns h2's per-character header validation off for a block over ``max_list`` (it is
    answered 431, never handed on; validating 4 KB values costs ~0.4 ms each in Python, what
    made an HPACK bomb expensive on this backend).  ``_H2._receive_headers_frame`` turns the
    validation back on after each block."""

    def __init__(self, config, max_list: int) -> None:
        super().__init__()
        self._config = config
        self.max_list = max_list
        self.last_size = 0

    def decode(self, data, raw=False):
        headers = super().decode(data, raw=raw)
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
        self.last_size = size
        if size > self.max_list and not self._config.client_side:
            self._config.validate_inbound_headers = False
        return headers


class _H2(H2Connection):
    """h2's H2Connection with the adjustments described in the module docstring, and the
    per-connection budgets of ``H2Settings`` (decoded header bytes, refused streams)."""

    hard_header_list_size: int = 1 << 18
    refused_streams: int = 0
    malformed_requests: int = 0
    # budgets: set by _new_h2 from H2Settings; counted in one-second windows
    max_header_bytes: int = 8 << 20
    max_refused: int = 100
    _hb_window: float = 0.0
    _hb_count: int = 0
    _ref_window: float = 0.0
    _ref_count: int = 0

    def _charge_headers(self, nbytes: int) -> None:
        now = time.monotonic()
        if now - self._hb_window >= 1.0:
            self._hb_window = now
            self._hb_count = 0
        self._hb_count += nbytes
        if self._hb_count > self.max_header_bytes:
            raise _CalmError("decoded header bytes over budget (HPACK bomb)")

    def refused_over(self) -> bool:
        """Count a refused stream (REFUSED_STREAM, or a 431 for an oversized header block);
        True once more than ``max_refused`` came within a one-second window."""
        now = time.monotonic()
        if now - self._ref_window >= 1.0:
            self._ref_window = now
            self._ref_count = 0
        self._ref_count += 1
        return self._ref_count > self.max_refused

    def _receive_goaway_frame(self, frame):  # type: ignore[override]
        # h2 closes its state machine and drops queued output on GOAWAY; in-flight streams
        # must still finish (RFC 9113 §6.8), so only report the event.
        event = h2.events.ConnectionTerminated()
        event.error_code = h2.connection._error_code_from_int(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def _receive_headers_frame(self, frame):  # type: ignore[override]
        self.config.validate_inbound_headers = True  # (_SizingDecoder may turn it off)
        sid = frame.stream_id
        existed = sid in self.streams
        if (not existed and not self.config.client_side and sid % 2
                and sid <= self.highest_inbound_stream_id
                and self._closed_streams.get(sid) is not h2.stream.StreamClosedBy.SEND_RST_STREAM):
            # a new stream with an id not above every earlier one (RFC 9113 §5.1.1), or a
            # HEADERS on a stream that ended (§5.1): a connection error.  (A late HEADERS on
            # a stream we reset is ignored by h2, as the RFC allows.)
            raise _ConnectionError(f"HEADERS on stream {sid} not above the highest "
                                   f"({self.highest_inbound_stream_id})",
                                   ErrorCode.PROTOCOL_ERROR)
        if existed and not self.config.client_side:
            stream = self.streams[sid]
            state = stream.state_machine.state
            if state is h2.stream.StreamState.HALF_CLOSED_REMOTE or (
                    state is h2.stream.StreamState.CLOSED
                    and stream.closed_by is not h2.stream.StreamClosedBy.SEND_RST_STREAM):
                # a frame after the client's END_STREAM: STREAM_CLOSED (§5.1), a connection
                # error as libnghttp2 makes it
                raise _ConnectionError(f"HEADERS on stream {sid} after its END_STREAM",
                                       ErrorCode.STREAM_CLOSED)
        try:
            frames, events = super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            self.config.validate_inbound_headers = True
            if sid <= self.highest_inbound_stream_id or sid % 2 == 0:
                raise
            # Decode the block anyway so that the HPACK tables stay in sync, then refuse.
            try:
                h2.connection._decode_headers(self.decoder, frame.data)
            except h2.exceptions.ProtocolError as exc:
                self.config.validate_inbound_headers = True
                self._compression_error(exc)
                raise
            self.config.validate_inbound_headers = True
            self._charge_headers(self.decoder.last_size)
            self.highest_inbound_stream_id = sid
            self._closed_streams[sid] = h2.stream.StreamClosedBy.SEND_RST_STREAM
            rst = RstStreamFrame(sid)
            rst.error_code = ErrorCode.REFUSED_STREAM
            self.refused_streams += 1
            if self.refused_over():
                raise _CalmError("refused streams (stream-limit abuse)") from None
            return [rst], []
        except h2.exceptions.DenialOfServiceError:
            raise
        except h2.exceptions.ProtocolError as exc:
            self.config.validate_inbound_headers = True
            self._compression_error(exc)
            # A malformed request (bad pseudo-headers, uppercase names...) fails validation
            # after HPACK decoding, once its stream exists: a stream error (RFC 9113 §8.1.1),
            # not the whole connection's.  Anything else stays a connection error.
            stream = self.streams.get(frame.stream_id)
            if existed or stream is None or self.config.client_side:
                raise
            self.malformed_requests += 1
            return stream.reset_stream(ErrorCode.PROTOCOL_ERROR), []
        self.config.validate_inbound_headers = True
        size = self.decoder.last_size
        self._charge_headers(size)
        # a block the server will answer 431 counts as a refused stream, here and not when the
        # event is handled, so that a read full of them is not decoded whole first
        if size > self.decoder.max_list and not self.config.client_side and self.refused_over():
            raise _CalmError("oversized header blocks (HPACK bomb)")
        return frames, events

    @staticmethod
    def _compression_error(exc: Exception) -> None:
        """A header block HPACK cannot decode is a COMPRESSION_ERROR (RFC 9113 §4.3)."""
        if isinstance(exc.__cause__, (hpack.HPACKError, IndexError, TypeError,
                                      UnicodeDecodeError)) and not isinstance(
                exc.__cause__, hpack.OversizedHeaderListError):
            raise _ConnectionError(str(exc), ErrorCode.COMPRESSION_ERROR) from exc

    def _local_settings_acked(self):  # type: ignore[override]
        changes = super()._local_settings_acked()
        self.decoder.max_header_list_size = self.hard_header_list_size
        return changes

    # h2 counts open streams by walking all of them (and drops closed ones as it goes) on every
    # HEADERS sent or received: O(n) per request.  The engine drops each stream from
    # ``self.streams`` once it is closed (``forget_stream``), so the dict's size is the count;
    # the exact walk runs only when that count reaches the limit.
    @property
    def open_inbound_streams(self) -> int:  # type: ignore[override]
        n = len(self.streams)
        if n >= self.local_settings.max_concurrent_streams:
            n = self._open_streams(int(not self.config.client_side))
        return n

    @property
    def open_outbound_streams(self) -> int:  # type: ignore[override]
        n = len(self.streams)
        if n >= self.remote_settings.max_concurrent_streams:
            n = self._open_streams(int(self.config.client_side))
        return n

    def forget_stream(self, stream_id: int) -> None:
        """Drop a closed stream from h2's table (what ``_open_streams`` would do later)."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self.streams[stream_id]
            self._closed_streams[stream_id] = stream.closed_by

    def send_goaway_frame(self, error_code: int, last_stream_id: int) -> None:
        """Queue a GOAWAY without closing h2's state machine (graceful drain)."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error_code
        self._data_to_send += frame.serialize()


def _new_h2(settings: H2Settings, client_side: bool) -> _H2:
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        # what we send was validated when it came in (relayed) or is built by our own code
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = _H2(config)
    conn.decoder = _SizingDecoder(config, settings.max_header_list_size)
    conn.incoming_buffer = _FrameBuffer(server=not client_side)
    conn.max_header_bytes = settings.max_header_bytes_per_second
    conn.max_refused = settings.max_refused_streams_per_second
    codes = h2.settings.SettingCodes
    conn.local_settings = h2.settings.Settings(
        client=client_side,
        initial_values={
            codes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            codes.INITIAL_WINDOW_SIZE: settings.initial_window_size,
            codes.MAX_FRAME_SIZE: settings.max_frame_size,
            codes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
            codes.HEADER_TABLE_SIZE: settings.header_table_size,
            codes.ENABLE_PUSH: 0,
        },
    )
    conn.max_inbound_frame_size = settings.max_frame_size
    conn.hard_header_list_size = settings.hard_header_list_size
    conn.decoder.max_header_list_size = conn.hard_header_list_size
    conn.decoder.max_allowed_table_size = settings.header_table_size
    conn.initiate_connection()
    extra = settings.connection_window_size - 65535
    if extra > 0:
        conn.increment_flow_control_window(extra)
    return conn


def _header_list_size(headers: Headers) -> int:
    return sum(len(n) + len(v) + 32 for n, v in headers)


class _Stream:
    """Per-stream state, on either side.  ``out`` holds DATA waiting for this stream's send
    window (or a paused transport); ``out_end`` is what closes it afterwards (True: END_STREAM,
    a list: trailers).  ``peer`` is the joined stream on the other connection."""

    __slots__ = (
        "sid", "mode", "peer", "out", "out_len", "out_end", "relay_ack", "sent",
        "rx", "acked", "body", "body_len", "body_whole", "req_ended", "trailers",
        "local_closed", "remote_closed", "status", "observer", "extra", "retain",
        "callback", "limit", "got_headers", "headers", "req_headers", "conn",
    )

    def __init__(self, sid: int, mode: int, conn: _Connection) -> None:
        self.sid = sid
        self.mode = mode
        self.conn = conn
        self.peer: _Stream | None = None
        self.out: deque = deque()
        self.out_len = 0
        self.out_end: bool | Headers | None = None
        self.relay_ack = False  # bytes sent from out are acknowledged to peer's connection
        self.sent = 0  # request bytes sent on an upstream stream (for replay acks)
        self.rx = 0  # request (or response) body bytes received
        self.acked = 0  # of which acknowledged to the sender
        self.body: list[bytes] = []
        self.body_len = 0
        self.body_whole = True
        self.req_ended = False
        self.trailers: Headers = []
        self.local_closed = False
        self.remote_closed = False
        self.status = 0
        self.observer: SpliceObserver | None = None
        self.extra: Headers = []
        self.retain = False
        self.callback = None
        self.limit = 0
        self.got_headers = False
        self.headers: Headers = []
        self.req_headers: Headers = []


class _Connection(asyncio.Protocol):
    """What both sides share: the h2 session, batching of writes, flow-controlled pumping."""

    _client_side = False

    def __init__(self, settings: H2Settings) -> None:
        self.settings = settings
        self._h2: _H2 | None = None
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._waiting: set[_Stream] = set()  # streams with DATA waiting for window/transport
        self._paused = False
        self._queued = False
        self._lost = False
        self._goaway_sent = False
        self._goaway_last = 0
        self._close_when_idle = False
        self._lingering = False
        self._greeted = False  # the peer's first bytes came
        self._goaway_received = False
        self._resets: deque = deque()
        self._control: deque = deque()
        self.calm_goaway = False  # we ended the connection with ENHANCE_YOUR_CALM
        # a server checks the first 33 bytes: client magic + a SETTINGS frame header
        self._preface: bytes | None = None if self._client_side else b""

    # ---- transport side -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._h2 = _new_h2(self.settings, self._client_side)
        if self._client_side:
            self._mark()
        # a server's SETTINGS wait for the client's first bytes, so that an HTTP/1.x client
        # can be told 505 in its own protocol (dataplane.http1_refusal)

    def data_received(self, data: bytes) -> None:
        global _batch
        outer = _batch is None
        if outer:
            _batch = []
        try:
            h2c = self._h2
            if h2c is None or self._lost or self._lingering:
                return
            if not self._greeted:
                self._greeted = True
                reply = None if self._client_side else http1_refusal(bytes(data))
                if reply is not None:
                    self._refuse_http1(reply)
                    return
            if self._preface is not None and not self._check_preface(data):
                return
            try:
                events = h2c.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                if isinstance(exc, h2.exceptions.DenialOfServiceError):
                    self.calm_goaway = True
                    log.warning("HTTP/2 peer %s: %s: GOAWAY ENHANCE_YOUR_CALM",
                                getattr(self, "peer_info", {}).get("peername"), exc)
                else:
                    log.debug("h2 protocol error from peer: %s", exc)
                self._mark()
                self._abort_after_flush()
                return
            for event in events:
                try:
                    self._on_event(event)
                except Exception:
                    # a bug in a callback costs its stream, never the connection's others
                    log.exception("failed handling %r", event)
                    st = self._streams.get(getattr(event, "stream_id", 0) or 0)
                    if st is not None:
                        self._reset_stream(st, ErrorCode.INTERNAL_ERROR)
                if self._lost:
                    break
            self._mark()
        finally:
            if outer:
                pending, _batch = _batch, None
                for conn in pending:
                    conn._queued = False
                    conn._flush()

    def _check_preface(self, data: bytes) -> bool:
        """RFC 9113 §3.4: the client magic is followed by a SETTINGS frame (no ACK, stream
        0); anything else is an invalid preface, a connection error of type PROTOCOL_ERROR
        (h2 checks the magic only).  False: the connection is being closed."""
        head = self._preface + bytes(data[:_PREFACE_LEN - len(self._preface)])
        if len(head) < _PREFACE_LEN:
            self._preface = head
            return True
        self._preface = None
        if head[27] == 0x4 and not head[28] & 0x1 and not int.from_bytes(head[29:33], "big"):
            return True
        log.info("h2: %s: no SETTINGS after the client magic: GOAWAY PROTOCOL_ERROR",
                 getattr(self, "peer_info", {}).get("peername"))
        self._h2.close_connection(ErrorCode.PROTOCOL_ERROR)
        self._mark()
        self._abort_after_flush()
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump_all()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._transport = None
        self._on_lost(exc)

    def _mark(self) -> None:
        """Ask for a flush: now outside a batch, at the end of the batch inside one."""
        if _batch is None:
            self._flush()
        elif not self._queued:
            self._queued = True
            _batch.append(self)

    def _flush(self) -> None:
        h2c = self._h2
        if h2c is None:
            return
        data = h2c.data_to_send()
        transport = self._transport
        if data and transport is not None:
            transport.write(data)
        if self._close_when_idle and transport is not None and not self._streams:
            self._linger_close()

    def _abort_after_flush(self) -> None:
        self._flush()
        self._lost = True  # process nothing more
        self._linger_close()

    def _refuse_http1(self, reply: bytes) -> None:
        """Answer an HTTP/1.x client in HTTP/1.1 and close, our HTTP/2 SETTINGS unsent."""
        log.info("h2: HTTP/1.x request from %s on an HTTP/2 listener: 505",
                 getattr(self, "peer_info", {}).get("peername"))
        if self._transport is not None:
            self._transport.write(reply)
        self._linger_close()

    def _linger_close(self) -> None:
        """Close after a GOAWAY without losing it: send FIN, discard what the peer still had in
        flight, close when it closes (at most ``_LINGER_S`` later).  Closing with unread input
        makes the kernel answer RST, which can destroy the GOAWAY before the peer reads it."""
        transport = self._transport
        if transport is None or self._lingering:
            return
        self._lingering = True
        close_after_fin(transport, _LINGER_S)

    # ---- abuse limits ---------------------------------------------------------------------
    def _over_rate(self, window: deque, limit: int) -> bool:
        now = time.monotonic()
        window.append(now)
        while window and now - window[0] > 1.0:
            window.popleft()
        if len(window) > limit:
            self._calm(f"over a rate limit ({limit}/s)")
            return True
        return False

    def _calm(self, why: str) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) and close; nothing more the peer sends is processed."""
        log.warning("HTTP/2 peer %s %s: GOAWAY ENHANCE_YOUR_CALM",
                    getattr(self, "peer_info", {}).get("peername"), why)
        self.calm_goaway = True
        try:
            self._h2.close_connection(ErrorCode.ENHANCE_YOUR_CALM)
        except h2.exceptions.ProtocolError:
            pass
        self._abort_after_flush()

    # ---- sending DATA under flow control ----------------------------------------------------
    def _pump(self, st: _Stream) -> None:
        """Send what ``st.out`` holds as far as the send window and the transport allow."""
        if self._lost or st.local_closed:
            return
        h2c = self._h2
        out = st.out
        if out and not self._paused:
            sid = st.sid
            try:
                while out:
                    window = h2c.local_flow_control_window(sid)
                    if window <= 0:
                        break
                    chunk = out[0]
                    n = min(len(chunk), window, h2c.max_outbound_frame_size)
                    if n == len(chunk):
                        out.popleft()
                        h2c.send_data(sid, chunk)
                    else:
                        h2c.send_data(sid, chunk[:n])
                        out[0] = chunk[n:]
                    st.out_len -= n
                    if st.relay_ack:
                        self._ack_relayed(st, n)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                out.clear()
                st.out_len = 0
                st.out_end = None
        if out:
            self._waiting.add(st)
        else:
            self._waiting.discard(st)
            if st.out_end is not None:
                end, st.out_end = st.out_end, None
                self._send_end(st, end)
        self._mark()

    def _ack_relayed(self, st: _Stream, n: int) -> None:
        """``n`` relayed bytes were taken here: hand the window back to their sender."""
        src = st.peer
        if src is None:
            return
        st.sent += n
        if st.sent > src.acked:
            grant = st.sent - src.acked
            src.acked = st.sent
            conn = src.conn
            if not conn._lost:
                try:
                    conn._h2.acknowledge_received_data(grant, src.sid)
                except h2.exceptions.ProtocolError:
                    return
                conn._mark()

    def _send_end(self, st: _Stream, end: bool | Headers) -> None:
        try:
            if end is True:
                self._h2.end_stream(st.sid)
            else:
                self._h2.send_headers(st.sid, end, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            return
        st.local_closed = True
        self._after_local_end(st)
        self._mark()

    def _after_local_end(self, st: _Stream) -> None:
        self._maybe_forget(st)

    def _pump_all(self) -> None:
        for st in list(self._waiting):
            self._pump(st)

    def _on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            self._pump_all()
        else:
            st = self._streams.get(stream_id)
            if st is not None and st in self._waiting:
                self._pump(st)

    def _discard_unacked(self, st: _Stream) -> None:
        """The stream's received body will not be consumed: release its flow-control credit."""
        owed = st.rx - st.acked
        st.acked = st.rx
        if owed > 0 and not self._lost:
            try:
                self._h2.acknowledge_received_data(owed, st.sid)
            except h2.exceptions.ProtocolError:
                pass
            self._mark()

    def _reset_stream(self, st: _Stream, error_code: int) -> None:
        if not self._lost:
            try:
                self._h2.reset_stream(st.sid, error_code)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                pass
            self._mark()
        self._discard_unacked(st)
        st.local_closed = st.remote_closed = True
        st.out.clear()
        st.out_len = 0
        st.out_end = None
        self._waiting.discard(st)
        self._forget(st)

    def _maybe_forget(self, st: _Stream) -> None:
        if st.local_closed and st.remote_closed:
            self._forget(st)

    def _forget(self, st: _Stream) -> None:
        if self._streams.pop(st.sid, None) is not None:
            if self._h2 is not None:
                self._h2.forget_stream(st.sid)
            self._waiting.discard(st)
            self._on_forgotten(st)
        if self._close_when_idle and not self._streams:
            self._mark()

    def _on_forgotten(self, st: _Stream) -> None:
        pass

    # ---- events -----------------------------------------------------------------------------
    def _on_event(self, event) -> None:
        raise NotImplementedError

    def _on_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    def _common_event(self, event) -> None:
        """Handle the events both sides treat alike (others are ignored)."""
        if isinstance(event, h2.events.WindowUpdated):
            self._on_window(event.stream_id)
        elif isinstance(event, h2.events.PingReceived):
            self._over_rate(self._control, self.settings.max_control_frames_per_second)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self._over_rate(self._control, self.settings.max_control_frames_per_second):
                self._on_remote_settings(event)
        elif isinstance(event, h2.events.PriorityUpdated):
            self._over_rate(self._control, self.settings.max_control_frames_per_second)

    def _on_remote_settings(self, event) -> None:
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._pump_all()

    # ---- shared public surface -------------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def buffered_bytes(self) -> int:
        """Body bytes this connection holds right now (held, retained, or waiting to be sent):
        what tests use to check that nothing is buffered whole."""
        return sum(st.out_len + st.body_len for st in self._streams.values())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._lost = True


class ServerConnection(_Connection):
    """One downstream HTTP/2 connection (see ``dataplane.engine.ServerConnection``)."""

    def __init__(
        self, handler, settings: H2Settings = H2Settings(), peer_info: dict | None = None
    ) -> None:
        super().__init__(settings)
        self.handler = handler
        self.peer_info: dict = peer_info if peer_info is not None else {}
        self._drain_timer: asyncio.TimerHandle | None = None
        self.peak_buffered = 0  # largest body buffer seen on one stream (held + relayed)
        # response header names taken out for SpliceObserver.on_response_headers (engine doc)
        self._tap = frozenset(settings.tap_response_headers)

    # ---- events -----------------------------------------------------------------------------
    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.StreamEnded):
            st = self._streams.get(event.stream_id)
            if st is not None:
                self._on_request_end(st)
        elif isinstance(event, h2.events.TrailersReceived):
            st = self._streams.get(event.stream_id)
            if st is not None:
                st.trailers = list(event.headers)
                if event.stream_ended is not None:
                    self._on_request_end(st)
        elif isinstance(event, h2.events.StreamReset):
            if self._over_rate(self._resets, self.settings.max_resets_per_second):
                return
            st = self._streams.get(event.stream_id)
            if st is not None:
                self._on_client_reset(st, event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway_received = True
            self._close_when_idle = True
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == _DRAIN_PING and self._drain_timer is not None:
                self._final_goaway(ErrorCode.NO_ERROR)
        else:
            self._common_event(event)

    def _on_request(self, event) -> None:
        sid = event.stream_id
        if self._goaway_sent and sid > self._goaway_last:
            self._refuse(sid)
            return
        headers = list(event.headers)
        ended = event.stream_ended is not None
        st = _Stream(sid, _HELD, self)
        st.remote_closed = ended
        st.req_ended = ended
        self._streams[sid] = st
        if _header_list_size(headers) > self.settings.max_header_list_size:
            problem_headers, body = engine_problem(431, self.settings.max_header_list_size)
            self.respond(sid, 431, list(problem_headers), body)  # counted by _H2 (refused)
            return
        st.req_headers = headers
        try:
            self.handler.on_request(self, sid, headers, ended)
        except Exception:
            log.exception("handler failed on stream %d", sid)
            if sid in self._streams:
                self.reset(sid, ErrorCode.INTERNAL_ERROR)

    def _refuse(self, sid: int) -> None:
        try:
            self._h2.reset_stream(sid, ErrorCode.REFUSED_STREAM)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self._h2.forget_stream(sid)
        self._mark()

    def _on_data(self, event) -> None:
        sid = event.stream_id
        data = event.data
        n = len(data)
        pad = event.flow_controlled_length - n
        st = self._streams.get(sid)
        if st is None:
            self._h2.acknowledge_received_data(event.flow_controlled_length, sid)
            return
        if pad:
            self._h2.acknowledge_received_data(pad, sid)
        if not n:
            pass
        elif st.mode == _SPLICED and st.peer is not None and not st.peer.local_closed:
            st.rx += n
            up = st.peer
            if st.retain and st.body_whole:
                if st.body_len + n <= self.settings.max_retained_body:
                    st.body.append(data)
                    st.body_len += n
                else:
                    st.body.clear()
                    st.body_len = 0
                    st.body_whole = False
            up.out.append(data)
            up.out_len += n
            up.conn._pump(up)
        elif st.mode == _HELD:
            st.rx += n
            st.body.append(data)
            st.body_len += n
        elif st.mode == _READING:
            st.rx += n
            st.acked += n
            self._h2.acknowledge_received_data(n, sid)
            if st.body_len + n > st.limit:
                cb = st.callback
                st.callback = None
                st.body.clear()
                st.body_len = 0
                problem_headers, body = engine_problem(413, st.limit)
                self.respond(sid, 413, list(problem_headers), body)
                if cb is not None:
                    cb(None, [])
                return
            st.body.append(data)
            st.body_len += n
        else:  # answered locally: drop
            st.rx += n
            st.acked += n
            self._h2.acknowledge_received_data(n, sid)
        if event.stream_ended is not None:
            self._on_request_end(st)
        buffered = st.body_len + (st.peer.out_len if st.peer is not None else 0)
        if buffered > self.peak_buffered:
            self.peak_buffered = buffered

    def _on_request_end(self, st: _Stream) -> None:
        if st.req_ended and st.remote_closed:
            return
        st.req_ended = True
        st.remote_closed = True
        if st.mode == _SPLICED:
            up = st.peer
            up.out_end = st.trailers if st.trailers else True
            up.conn._pump(up)
        elif st.mode == _READING:
            self._finish_read(st)
        self._maybe_forget(st)

    def _finish_read(self, st: _Stream) -> None:
        cb = st.callback
        st.callback = None
        body = b"".join(st.body)
        st.body.clear()
        st.body_len = 0
        st.mode = _LOCAL
        if cb is not None:
            cb(body, st.trailers)

    def _on_client_reset(self, st: _Stream, error_code: int) -> None:
        st.remote_closed = st.local_closed = True
        mode = st.mode
        self._discard_unacked(st)
        st.out.clear()
        st.out_len = 0
        up = st.peer
        if mode == _SPLICED and up is not None:
            st.peer = None
            up.peer = None
            up.conn._reset_stream(up, ErrorCode.CANCEL)
            obs = st.observer
            st.observer = None
            self._forget(st)
            if obs is not None:
                obs.on_complete(st.sid, st.status, error_code or ErrorCode.CANCEL)
            return
        cb = st.callback
        st.callback = None
        self._forget(st)
        if cb is not None:
            cb(None, [])
        if mode in (_HELD, _READING):
            hook = getattr(self.handler, "on_stream_reset", None)
            if hook is not None:
                try:
                    hook(self, st.sid, error_code)
                except Exception:
                    log.exception("on_stream_reset hook failed")

    def _after_local_end(self, st: _Stream) -> None:
        obs = st.observer
        if st.mode != _SPLICED:
            # a local answer (respond) that replaced a splice still ends the exchange once
            st.observer = None
            if not st.remote_closed:
                # complete answer before the whole request (413, a problem): stop the upload
                # politely (RFC 9113 §8.1)
                self._reset_stream(st, ErrorCode.NO_ERROR)
            if obs is not None:
                obs.on_complete(st.sid, st.status, 0)
        else:
            st.observer = None
            up = st.peer
            if not st.remote_closed:
                # complete response before the whole request: stop the client politely
                self._reset_stream(st, ErrorCode.NO_ERROR)
                if up is not None and not up.local_closed:
                    up.conn._reset_stream(up, ErrorCode.CANCEL)
            if up is not None:
                up.peer = None
            st.peer = None
            if obs is not None:
                obs.on_complete(st.sid, st.status, 0)
        self._maybe_forget(st)

    def _on_lost(self, exc: Exception | None) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        streams = list(self._streams.values())
        self._streams.clear()
        self._waiting.clear()
        for st in streams:
            up = st.peer
            if st.mode == _SPLICED and up is not None:
                st.peer = None
                up.peer = None
                up.conn._reset_stream(up, ErrorCode.CANCEL)
                if st.observer is not None:
                    obs, st.observer = st.observer, None
                    obs.on_complete(st.sid, st.status, ErrorCode.CANCEL)
            elif st.callback is not None:
                cb, st.callback = st.callback, None
                cb(None, [])
        try:
            self.handler.on_connection_lost(self)
        except Exception:
            log.exception("on_connection_lost failed")

    # ---- public API (engine.ServerConnection) ------------------------------------------------
    def _live(self, stream_id: int) -> _Stream | None:
        st = self._streams.get(stream_id)
        if st is None or self._lost:
            return None
        return st

    def _detach_upstream(self, st: _Stream) -> None:
        up = st.peer
        if up is not None:
            st.peer = None
            up.peer = None
            up.conn._reset_stream(up, ErrorCode.CANCEL)

    def respond(
        self, stream_id: int, status: int, headers: Headers, body: bytes = b"",
        trailers: Headers | None = None,
    ) -> None:
        st = self._live(stream_id)
        if st is None:
            return
        if st.got_headers:
            raise RuntimeError(f"stream {stream_id}: the response has already started")
        if st.mode == _SPLICED:
            self._detach_upstream(st)
        st.mode = _LOCAL
        st.callback = None
        st.body.clear()
        st.body_len = 0
        st.body_whole = False
        self._discard_unacked(st)
        out = [(b":status", str(status).encode())]
        out.extend(headers)
        if body and not any(n == b"content-length" for n, _ in headers):
            out.append((b"content-length", str(len(body)).encode()))
        st.got_headers = True
        st.status = status
        end_now = not body and not trailers
        try:
            self._h2.send_headers(stream_id, out, end_stream=end_now)
        except (h2.exceptions.ProtocolError, KeyError) as exc:
            log.warning("cannot send response on stream %d: %s", stream_id, exc)
            self._reset_stream(st, ErrorCode.INTERNAL_ERROR)
            return
        if end_now:
            st.local_closed = True
            self._after_local_end(st)
            self._mark()
            return
        if body:
            st.out.append(body)
            st.out_len += len(body)
        st.out_end = list(trailers) if trailers else True
        self._pump(st)

    def reset(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        st = self._live(stream_id)
        if st is None:
            return
        obs = st.observer
        st.observer = None
        if st.mode == _SPLICED:
            self._detach_upstream(st)
        st.mode = _LOCAL
        st.callback = None
        self._reset_stream(st, error_code)
        if obs is not None:
            obs.on_complete(stream_id, st.status, error_code)

    def read_body(
        self, stream_id: int, limit: int, callback: Callable[[bytes | None, Headers], None]
    ) -> None:
        st = self._live(stream_id)
        if st is None:
            callback(None, [])
            return
        if st.mode != _HELD:
            raise RuntimeError(f"read_body on stream {stream_id} that is not held")
        st.mode = _READING
        st.limit = limit
        st.callback = callback
        # what was held is consumed now
        owed = st.rx - st.acked
        st.acked = st.rx
        if owed:
            self._h2.acknowledge_received_data(owed, stream_id)
            self._mark()
        if st.body_len > limit:
            st.callback = None
            st.body.clear()
            st.body_len = 0
            problem_headers, body = engine_problem(413, limit)
            self.respond(stream_id, 413, list(problem_headers), body)
            callback(None, [])
            return
        if st.req_ended:
            self._finish_read(st)

    def can_replay(self, stream_id: int) -> bool:
        st = self._streams.get(stream_id)
        return st is not None and st.body_whole and not st.got_headers

    def splice(
        self,
        stream_id: int,
        upstream: ClientConnection,
        headers: Headers,
        observer: SpliceObserver,
        extra_response_headers: Headers = (),  # type: ignore[assignment]
        retain_body: bool = False,
    ) -> None:
        st = self._live(stream_id)
        if st is None:
            return
        if st.mode != _HELD:
            raise RuntimeError(f"splice on stream {stream_id} that is not held")
        if not st.body_whole:
            raise RuntimeError(f"splice on stream {stream_id} whose body cannot be replayed")
        st.observer = observer
        st.extra = list(extra_response_headers) if extra_response_headers else []
        st.retain = retain_body
        up = upstream._open_splice(st, headers)
        if up is None:
            st.observer = None
            observer.on_upstream_failed(stream_id, ErrorCode.REFUSED_STREAM, False)
            return
        st.mode = _SPLICED
        st.peer = up
        # the held (or retained) body goes first; already acknowledged bytes are not acked twice
        up.out.extend(st.body)
        up.out_len += st.body_len
        if not retain_body or st.body_len > self.settings.max_retained_body:
            st.body = []
            st.body_len = 0
            st.body_whole = st.rx == 0 and st.req_ended
        if st.req_ended:
            up.out_end = st.trailers if st.trailers else True
        upstream._pump(up)

    def _upstream_failed(self, st: _Stream, error_code: int, reached: bool) -> None:
        """The upstream stream ended before response headers: hand the stream back."""
        st.peer = None
        st.mode = _HELD
        obs = st.observer
        st.observer = None
        if not st.body_whole:
            st.body.clear()
            st.body_len = 0
        if obs is not None:
            obs.on_upstream_failed(st.sid, error_code, reached)

    def _relay_response_headers(self, st: _Stream, headers: Headers, ended: bool) -> None:
        status = 0
        for name, value in headers:
            if name == b":status":
                status = int(value)
                break
        if status >= 200 or status == 0:
            st.status = status
            st.got_headers = True
            st.body.clear()
            st.body_len = 0
            st.body_whole = False
        extra = st.extra
        if status >= 200 and self._tap:
            headers, extra = self._tap_response(st, status, headers, extra)
        out = headers + extra if (status >= 200 and extra) else headers
        try:
            self._h2.send_headers(st.sid, out, end_stream=ended)
        except (h2.exceptions.ProtocolError, KeyError) as exc:
            log.debug("cannot relay response headers on %d: %s", st.sid, exc)
            self._fail_spliced(st, ErrorCode.INTERNAL_ERROR)
            return
        if ended:
            st.local_closed = True
            self._after_local_end(st)
        self._mark()

    def _tap_response(
        self, st: _Stream, status: int, headers: Headers, extra: Headers
    ) -> tuple[Headers, Headers]:
        """Take the tapped fields out of the final response ``headers`` and ask the observer
        what to relay instead (engine doc, "Response header tap").  Returns the headers to
        relay and the fields to append after them (``extra`` plus the observer's)."""
        tap = self._tap
        tapped = [field for field in headers if field[0] in tap]
        if not tapped:
            return headers, extra
        hook = getattr(st.observer, "on_response_headers", None)
        if hook is None:
            return headers, extra  # an observer that does not tap: relayed unchanged
        kept = [field for field in headers if field[0] not in tap]
        try:
            add = hook(st.sid, status, tapped)
            if add is not None:
                add = [(name, value) for name, value in add]
        except Exception:
            log.exception("on_response_headers failed on stream %d; tapped fields dropped",
                          st.sid)
            add = None
        return kept, (extra + add if add else extra)

    def _fail_spliced(self, st: _Stream, error_code: int) -> None:
        """Reset a spliced downstream stream after the response began (propagate a reset)."""
        obs = st.observer
        st.observer = None
        up = st.peer
        st.peer = None
        if up is not None:
            up.peer = None
        st.mode = _LOCAL
        self._reset_stream(st, error_code)
        if obs is not None:
            obs.on_complete(st.sid, st.status, error_code)

    def drain(self, error_code: int = ErrorCode.NO_ERROR) -> None:
        """Graceful shutdown in two steps (RFC 9113 §6.8): GOAWAY(2**31-1) and a PING; once
        the PING comes back (or after ``_LINGER_S``) every stream the client opened meanwhile
        has arrived, and GOAWAY(last stream id) follows.  With an error code: one step."""
        if self._lost or self._h2 is None or self._goaway_sent or self._drain_timer is not None:
            return
        if error_code:
            self._final_goaway(error_code)
            return
        self._h2.send_goaway_frame(ErrorCode.NO_ERROR, _MAX_STREAMS_UNKNOWN)
        self._h2.ping(_DRAIN_PING)
        self._drain_timer = asyncio.get_running_loop().call_later(
            _LINGER_S, self._final_goaway, ErrorCode.NO_ERROR)
        self._mark()

    def _final_goaway(self, error_code: int) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._lost or self._goaway_sent:
            return
        self._goaway_sent = True
        self._goaway_last = self._h2.highest_inbound_stream_id
        self._h2.send_goaway_frame(error_code, self._goaway_last)
        self._close_when_idle = True
        self._mark()


class ClientConnection(_Connection):
    """One upstream HTTP/2 connection (see ``dataplane.engine.ClientConnection``)."""

    _client_side = True

    def __init__(
        self,
        settings: H2Settings = H2Settings(),
        on_closed: Callable[[ClientConnection], None] | None = None,
    ) -> None:
        super().__init__(settings)
        self.on_closed = on_closed
        self.max_streams = _MAX_STREAMS_UNKNOWN
        try:
            self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        except RuntimeError:
            self.ready = asyncio.get_event_loop().create_future()
        self._closed_reported = False
        self.last_used = time.monotonic()

    @property
    def available(self) -> bool:
        return (
            self._transport is not None and not self._lost and not self._goaway_received
            and not self._goaway_sent and len(self._streams) < self.max_streams
        )

    @property
    def closed(self) -> bool:
        return self._lost or (
            (self._goaway_received or self._goaway_sent) and not self._streams
        )

    def _new_stream(self, mode: int) -> _Stream | None:
        if not self.available:
            return None
        sid = self._h2.get_next_available_stream_id()
        st = _Stream(sid, mode, self)
        st.conn = self
        self._streams[sid] = st
        self.last_used = time.monotonic()
        return st

    def _open_splice(self, down: _Stream, headers: Headers) -> _Stream | None:
        st = self._new_stream(_UP_SPLICE)
        if st is None:
            return None
        st.peer = down
        st.relay_ack = True
        st.sent = 0
        ended = down.req_ended and down.rx == 0 and not down.trailers
        try:
            self._h2.send_headers(st.sid, headers, end_stream=ended)
        except (h2.exceptions.ProtocolError, KeyError) as exc:
            log.warning("upstream refused our request headers: %s", exc)
            self._streams.pop(st.sid, None)
            return None
        if ended:
            st.local_closed = True
        self._mark()
        return st

    # ---- events -----------------------------------------------------------------------------
    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.ResponseReceived):
            st = self._streams.get(event.stream_id)
            if st is not None:
                self._on_response(st, list(event.headers), event.stream_ended is not None)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            st = self._streams.get(event.stream_id)
            if st is not None and st.mode == _UP_SPLICE and st.peer is not None:
                st.peer.conn._relay_response_headers(st.peer, list(event.headers), False)
        elif isinstance(event, h2.events.TrailersReceived):
            st = self._streams.get(event.stream_id)
            if st is not None:
                self._on_response_end(st, list(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            st = self._streams.get(event.stream_id)
            if st is not None and not st.remote_closed:
                self._on_response_end(st, None)
        elif isinstance(event, h2.events.StreamReset):
            if self._over_rate(self._resets, self.settings.max_resets_per_second):
                return
            st = self._streams.get(event.stream_id)
            if st is not None:
                self._on_server_reset(st, event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event.error_code, event.last_stream_id)
        else:
            self._common_event(event)

    def _on_remote_settings(self, event) -> None:
        code = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
        if code in event.changed_settings:
            self.max_streams = event.changed_settings[code].new_value
        super()._on_remote_settings(event)
        if not self.ready.done():
            self.ready.set_result(None)

    def _on_response(self, st: _Stream, headers: Headers, ended: bool) -> None:
        st.got_headers = True
        if ended:
            st.remote_closed = True
        if st.mode == _UP_SPLICE:
            down = st.peer
            if down is None:
                return
            down_conn = down.conn
            down_conn._relay_response_headers(down, headers, ended)
            if ended:
                self._maybe_forget(st)
        else:
            st.headers = headers
            if ended:
                self._complete_request(st, None)

    def _on_data(self, event) -> None:
        sid = event.stream_id
        data = event.data
        n = len(data)
        st = self._streams.get(sid)
        if st is None:
            self._h2.acknowledge_received_data(event.flow_controlled_length, sid)
            return
        pad = event.flow_controlled_length - n
        if pad:
            self._h2.acknowledge_received_data(pad, sid)
        st.rx += n
        if st.mode == _UP_SPLICE:
            down = st.peer
            if down is None:
                st.acked += n
                self._h2.acknowledge_received_data(n, sid)
            elif n:
                down.out.append(data)
                down.out_len += n
                down.relay_ack = True
                down_conn = down.conn
                down_conn._pump(down)
                buffered = down.out_len
                if buffered > down_conn.peak_buffered:
                    down_conn.peak_buffered = buffered
        else:
            st.acked += n
            if n:
                self._h2.acknowledge_received_data(n, sid)
                st.body.append(data)
                st.body_len += n
        if event.stream_ended is not None and not st.remote_closed:
            self._on_response_end(st, None)

    def _on_response_end(self, st: _Stream, trailers: Headers | None) -> None:
        st.remote_closed = True
        if st.mode == _UP_SPLICE:
            down = st.peer
            if down is not None:
                down.out_end = trailers if trailers else True
                down.conn._pump(down)
            self._maybe_forget(st)
        else:
            self._complete_request(st, trailers)

    def _complete_request(self, st: _Stream, trailers: Headers | None) -> None:
        st.remote_closed = True
        cb = st.callback
        st.callback = None
        if not st.local_closed:
            # the server answered before our whole body was sent: stop sending it
            try:
                self._h2.reset_stream(st.sid, ErrorCode.NO_ERROR)
            except (h2.exceptions.ProtocolError, KeyError):
                pass
            st.local_closed = True
            st.out.clear()
            st.out_len = 0
            self._mark()
        self._forget(st)
        if cb is not None:
            status = 0
            for name, value in st.headers:
                if name == b":status":
                    status = int(value)
                    break
            body = b"".join(st.body)
            st.body.clear()
            st.body_len = 0
            cb(status, st.headers, body, trailers or [], None)

    def _on_server_reset(self, st: _Stream, error_code: int) -> None:
        response_complete = st.remote_closed
        st.local_closed = st.remote_closed = True
        st.out.clear()
        st.out_len = 0
        self._discard_unacked(st)
        self._forget(st)
        if response_complete and st.mode == _UP_SPLICE:
            return  # the whole response is relayed; the server just wants no more request body
        self._fail_stream(st, error_code, error_code != ErrorCode.REFUSED_STREAM)

    def _fail_stream(self, st: _Stream, error_code: int, reached: bool) -> None:
        if st.mode == _UP_SPLICE:
            down = st.peer
            st.peer = None
            if down is None:
                return
            down_conn = down.conn
            if down.got_headers:
                down_conn._fail_spliced(down, error_code or ErrorCode.INTERNAL_ERROR)
            else:
                down_conn._upstream_failed(down, error_code, reached)
        else:
            cb = st.callback
            st.callback = None
            if cb is not None:
                err = ConnectionError(
                    f"upstream stream {st.sid} reset ({_code_name(error_code)})"
                    + ("" if reached else ", request not processed")
                )
                cb(0, st.headers, b"", [], err)

    def _on_goaway(self, error_code: int, last_stream_id: int) -> None:
        self._goaway_received = True
        self._close_when_idle = True
        for st in [s for s in self._streams.values() if s.sid > last_stream_id]:
            st.local_closed = st.remote_closed = True
            self._discard_unacked(st)
            self._forget(st)
            self._fail_stream(st, ErrorCode.REFUSED_STREAM, False)
        self._report_closed_if_idle()
        self._mark()

    def _on_forgotten(self, st: _Stream) -> None:
        if self._close_when_idle and not self._streams:
            self._report_closed_if_idle()

    def _report_closed_if_idle(self) -> None:
        if not self._streams and (self._goaway_received or self._goaway_sent):
            if self._transport is not None:
                self._flush()
                self._transport.close()
            self._notify_closed()

    def _notify_closed(self) -> None:
        if not self._closed_reported:
            self._closed_reported = True
            if self.on_closed is not None:
                try:
                    self.on_closed(self)
                except Exception:
                    log.exception("on_closed callback failed")

    def _on_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before SETTINGS: {exc}"))
            self.ready.exception()  # mark retrieved
        streams = list(self._streams.values())
        self._streams.clear()
        self._waiting.clear()
        for st in streams:
            st.local_closed = st.remote_closed = True
            self._fail_stream(st, ErrorCode.CANCEL if exc is None else ErrorCode.INTERNAL_ERROR,
                              True)
        self._notify_closed()

    # ---- public API (engine.ClientConnection) ------------------------------------------------
    def request(
        self, headers: Headers, body: bytes | None, callback: ResponseCallback,
        trailers: Headers | None = None,
    ) -> int:
        st = self._new_stream(_UP_REQUEST)
        if st is None:
            raise ConnectionError("upstream connection cannot take a new stream")
        st.callback = callback
        ended = not body and not trailers
        try:
            self._h2.send_headers(st.sid, headers, end_stream=ended)
        except h2.exceptions.ProtocolError:
            self._streams.pop(st.sid, None)
            raise
        if ended:
            st.local_closed = True
            self._mark()
        else:
            if body:
                st.out.append(bytes(body))
                st.out_len = len(body)
            st.out_end = list(trailers) if trailers else True
            self._pump(st)
        return st.sid

    def reset_stream(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        """Cancel one of our own requests (its callback is not called)."""
        st = self._streams.get(stream_id)
        if st is not None:
            st.callback = None
            self._reset_stream(st, error_code)

    def ping(self) -> None:
        if self._h2 is not None and not self._lost:
            self._h2.ping(b"nfmesh\x00\x00")
            self._mark()

    def drain(self) -> None:
        if self._lost or self._h2 is None:
            return
        if not self._goaway_sent:
            self._goaway_sent = True
            self._h2.send_goaway_frame(ErrorCode.NO_ERROR, 0)
        self._close_when_idle = True
        self._report_closed_if_idle()
        self._mark()

    def close(self) -> None:
        super().close()
        if self._transport is None:
            self._notify_closed()


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return hex(code)
