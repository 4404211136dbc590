"""The pure engine's upstream connection (``dataplane.h2_engine``): ``ClientConnection``.

What ``ServerConnection.splice`` opens streams on (``_open_splice``: the response is relayed
to the joined downstream stream), and requests of our own (``request``) whose whole response
goes to a callback; GOAWAY, resets and a lost connection are reported to whichever waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import h2.events
import h2.exceptions
import h2.settings

from dataplane.engine import ErrorCode, H2Settings, Headers, ResponseCallback
from dataplane.h2_session import upstream_stream_window
from dataplane.h2_splice import MAX_STREAMS_UNKNOWN, BaseConnection, H2Stream, log

# upstream stream modes (numbered after the downstream ones of dataplane.h2_server)
_UP_SPLICE = 4
_UP_REQUEST = 5


class ClientConnection(BaseConnection):
    """One upstream HTTP/2 connection (see ``dataplane.engine.ClientConnection``)."""

    _client_side = True

    def __init__(
        self,
        settings: H2Settings = H2Settings(),
        on_closed: Callable[[ClientConnection], None] | None = None,
    ) -> None:
        super().__init__(settings)
        self.on_closed = on_closed
        self.max_streams = MAX_STREAMS_UNKNOWN
        try:
            self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        except RuntimeError:
            self.ready = asyncio.get_event_loop().create_future()
        self._closed_reported = False
        self.last_used = time.monotonic()
        self._base_window = upstream_stream_window(settings)  # our advertised stream window

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

    def _new_stream(self, mode: int) -> H2Stream | None:
        if not self.available:
            return None
        sid = self._h2.get_next_available_stream_id()
        st = H2Stream(sid, mode, self)
        st.conn = self
        self._streams[sid] = st
        self.last_used = time.monotonic()
        return st

    def _open_splice(self, down: H2Stream, headers: Headers) -> H2Stream | None:
        st = self._new_stream(_UP_SPLICE)
        if st is None:
            return None
        st.peer = down
        st.relay_ack = True
        st.conn_acked = True
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
        # Bounded relay buffer: the producer may send this stream what its window allows
        # before the client takes any of it; beyond the session's small initial window, the
        # stream gets up to relay_stream_buffer, from its downstream connection's budget
        settings = self.settings
        down_conn = down.conn
        extra = min(settings.relay_stream_buffer - self._base_window,
                    settings.relay_connection_buffer - down_conn.relay_granted)
        if extra > 0:
            try:
                self._h2.increment_flow_control_window(extra, st.sid)
            except (h2.exceptions.ProtocolError, KeyError):
                extra = 0
            if extra > 0:
                st.grant = extra
                st.grant_to = down_conn
                down_conn.relay_granted += extra
        self._mark()
        return st

    @staticmethod
    def _return_grant(st: H2Stream) -> None:
        to = st.grant_to
        if to is not None:
            to.relay_granted -= st.grant
            st.grant_to = None
            st.grant = 0

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

    def _on_response(self, st: H2Stream, headers: Headers, ended: bool) -> None:
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
            # relayed DATA: the connection window goes back at once (a client that does not
            # read must not stall the producer's other streams), the stream's as it is taken
            if n:
                self._h2.ack_connection(n)
            down = st.peer
            if down is None:
                st.acked += n
                self._h2.ack_stream(n, sid)
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

    def _on_response_end(self, st: H2Stream, trailers: Headers | None) -> None:
        st.remote_closed = True
        if st.mode == _UP_SPLICE:
            down = st.peer
            if down is not None:
                down.out_end = trailers if trailers else True
                down.conn._pump(down)
            self._maybe_forget(st)
        else:
            self._complete_request(st, trailers)

    def _complete_request(self, st: H2Stream, trailers: Headers | None) -> None:
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

    def _on_server_reset(self, st: H2Stream, error_code: int) -> None:
        response_complete = st.remote_closed
        st.local_closed = st.remote_closed = True
        st.out.clear()
        st.out_len = 0
        self._discard_unacked(st)
        self._forget(st)
        if response_complete and st.mode == _UP_SPLICE:
            return  # the whole response is relayed; the server just wants no more request body
        self._fail_stream(st, error_code, error_code != ErrorCode.REFUSED_STREAM)

    def _fail_stream(self, st: H2Stream, error_code: int, reached: bool) -> None:
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

    def _on_forgotten(self, st: H2Stream) -> None:
        if st.grant_to is not None:
            self._return_grant(st)
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
            if st.grant_to is not None:
                self._return_grant(st)
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
        extra = self.settings.initial_window_size - self._base_window
        if extra > 0:  # our own requests: the whole initial_window_size, as advertised before
            self._h2.increment_flow_control_window(extra, st.sid)
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
