"""python-hyper's ``H2Connection`` adjusted for the pure engine (``dataplane.h2_engine``).

h2 is used with manual flow control and three small adjustments (``H2Session``): a GOAWAY does
not close h2's state machine (so in-flight streams finish: graceful drain both ways), a stream
over our SETTINGS_MAX_CONCURRENT_STREAMS gets RST_STREAM(REFUSED_STREAM) instead of a connection
error, and header blocks between the advertised and a hard header-list limit are decoded (HPACK
stays in sync) and answered 431, while larger ones end the connection (HPACK bomb defence).
Also here: the per-connection budgets of ``H2Settings`` (decoded header bytes and refused
streams per second), the RFC 9113 error codes h2 would report as PROTOCOL_ERROR, and
``new_session``, which builds one from ``H2Settings``.  It overrides and calls private parts of
h2 (``tests/test_private_apis.py`` names each).
"""

from __future__ import annotations

import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from hyperframe.exceptions import InvalidDataError
from hyperframe.frame import GoAwayFrame, RstStreamFrame, WindowUpdateFrame

from dataplane.engine import ErrorCode, H2Settings, Headers


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
    made an HPACK bomb expensive on this backend).  ``H2Session._receive_headers_frame`` turns the
    validation back on after each block."""

    # A server-side block may decode to at most this many times its encoded size once it is
    # over ``max_list``: beyond, hpack stops decoding at once and the connection ends with
    # GOAWAY(ENHANCE_YOUR_CALM) (an HPACK bomb: references to a large table entry).  A large
    # block sent literally (ratio ~1) is still decoded and answered 431 up to ``hard_list``.
    bomb_ratio = 16

    def __init__(self, config, max_list: int) -> None:
        super().__init__()
        self._config = config
        self.max_list = max_list
        self.hard_list = max(4 * max_list, 1 << 16)
        self.last_size = 0

    def decode(self, data, raw=False):
        if not self._config.client_side:
            self.max_header_list_size = min(self.hard_list,
                                            max(self.max_list, self.bomb_ratio * len(data)))
        headers = super().decode(data, raw=raw)
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
        self.last_size = size
        if size > self.max_list and not self._config.client_side:
            self._config.validate_inbound_headers = False
        return headers


class H2Session(H2Connection):
    """h2's H2Connection with the adjustments described in the module docstring, and the
    per-connection budgets of ``H2Settings`` (decoded header bytes, refused streams)."""

    hard_header_list_size: int = 1 << 18
    refused_streams: int = 0
    malformed_requests: int = 0
    # budgets: set by new_session from H2Settings; counted in one-second windows
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

    def ack_connection(self, n: int) -> None:
        """``acknowledge_received_data`` for the connection window only (relayed DATA: the
        connection's window is handed back on arrival, the stream's as the bytes are taken)."""
        inc = self._inbound_flow_control_window_manager.process_bytes(n)
        if inc:
            frame = WindowUpdateFrame(0)
            frame.window_increment = inc
            self._data_to_send += frame.serialize()

    def ack_stream(self, n: int, stream_id: int) -> None:
        """``acknowledge_received_data`` for the stream window only (see ``ack_connection``)."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.open:
            for frame in stream.acknowledge_received_data(n):
                self._data_to_send += frame.serialize()

    def send_goaway_frame(self, error_code: int, last_stream_id: int) -> None:
        """Queue a GOAWAY without closing h2's state machine (graceful drain)."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error_code
        self._data_to_send += frame.serialize()


def new_session(settings: H2Settings, client_side: bool) -> H2Session:
    """An ``H2Session`` advertising and enforcing ``settings``, its preface queued."""
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        # what we send was validated when it came in (relayed) or is built by our own code
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = H2Session(config)
    conn.decoder = _SizingDecoder(config, settings.max_header_list_size)
    conn.decoder.hard_list = settings.hard_header_list_size
    conn.incoming_buffer = _FrameBuffer(server=not client_side)
    conn.max_header_bytes = settings.max_header_bytes_per_second
    conn.max_refused = settings.max_refused_streams_per_second
    codes = h2.settings.SettingCodes
    conn.local_settings = h2.settings.Settings(
        client=client_side,
        initial_values={
            codes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            codes.INITIAL_WINDOW_SIZE: (upstream_stream_window(settings) if client_side
                                        else settings.initial_window_size),
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


def upstream_stream_window(settings: H2Settings) -> int:
    """The stream window an upstream (client) session advertises: min(initial_window_size,
    relay_stream_buffer, 16 KiB).  A spliced stream gets more, up to relay_stream_buffer, from
    its downstream connection's relay_connection_buffer; our own requests get
    initial_window_size (``dataplane.h2_client``)."""
    return min(settings.initial_window_size, settings.relay_stream_buffer, 16384)


def header_list_size(headers: Headers) -> int:
    """RFC 9113 §6.5.2 size of a header list: name + value + 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in headers)
