"""The pure engine's downstream connection (``dataplane.h2_engine``): ``ServerConnection``.

It announces each request to its handler, holds the request body (bounded by flow control)
until the handler answers (``respond``), resets, reads the body (``read_body``) or joins the
stream to an upstream one (``splice``), relays the spliced response downstream (taking the
tapped header fields out for the observer), and drains gracefully with GOAWAY + PING.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h2.events
import h2.exceptions

from dataplane.engine import ErrorCode, H2Settings, Headers, SpliceObserver, engine_problem
from dataplane.h2_client import ClientConnection
from dataplane.h2_session import H2Session, header_list_size, new_session
from dataplane.h2_splice import LINGER_S, MAX_STREAMS_UNKNOWN, BaseConnection, H2Stream, log

_DRAIN_PING = b"nfmdrain"
_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
# a connection stays without an h2 session while the client has sent only the preface,
# SETTINGS and SETTINGS ACKs, at most this many bytes of them (an idle connection costs a few
# KiB instead of the ~15 KiB of an h2 H2Connection)
_DORMANT_MAX = 512
_MAX_WINDOW = 2**31 - 1
# our first bytes (SETTINGS, connection WINDOW_UPDATE) for each H2Settings: what a new session
# queues, sent by a connection that has none yet
_greetings: dict[H2Settings, bytes] = {}


def _greeting(settings: H2Settings) -> bytes:
    data = _greetings.get(settings)
    if data is None:
        if len(_greetings) > 64:
            _greetings.clear()
        data = _greetings[settings] = new_session(settings, False).data_to_send()
    return data


def _settings_ok(payload: bytes) -> bool:
    """The values of a SETTINGS payload that h2 would take without a connection error."""
    for i in range(0, len(payload), 6):
        ident = int.from_bytes(payload[i:i + 2], "big")
        value = int.from_bytes(payload[i + 2:i + 6], "big")
        if ident == 0x2 and value > 1:
            return False
        if ident == 0x4 and value > _MAX_WINDOW:
            return False
        if ident == 0x5 and not 16384 <= value <= 16777215:
            return False
    return True

# stream modes (downstream)
_HELD = 0  # request announced, body held in the engine, handler not decided yet
_READING = 1  # read_body in progress
_SPLICED = 2  # joined to an upstream stream
_LOCAL = 3  # answered locally (respond/reset); request body discarded


class ServerConnection(BaseConnection):
    """One downstream HTTP/2 connection (see ``dataplane.engine.ServerConnection``).

    Lazy: until the client sends a frame other than SETTINGS (or a SETTINGS ACK), the
    connection has no h2 session; it answers the handshake itself (its SETTINGS and
    WINDOW_UPDATE, an ACK per client SETTINGS) and keeps the few bytes received, which the
    session, made at the first other frame, parses first (its duplicate output dropped)."""

    _lazy = True

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
        self._report_stall = settings.report_response_stall
        self._torn_down = False  # _on_lost ran (at the abort, or when the transport closed)
        self._reset_soon: set[int] | None = None  # streams reset later in the slice at hand
        self._dormant = b""  # bytes received while without a session (None: session made)
        self._dormant_acked = 0  # client SETTINGS frames acknowledged meanwhile
        self._greeting_sent = False
        self.skipped_requests = 0  # requests opened and reset in one slice: never announced

    # ---- the lazy session -------------------------------------------------------------------
    def _dormant_take(self, data: bytes) -> bool:
        if self._dormant is None:
            return False
        buf = self._dormant + bytes(data)
        if len(buf) > _DORMANT_MAX:
            self._session()
            return False
        i = 24  # after the client magic (checked by _check_preface)
        n = len(buf)
        settings_frames = 0
        while i + 9 <= n:
            length = int.from_bytes(buf[i:i + 3], "big")
            ftype, flags = buf[i + 3], buf[i + 4]
            if ftype != 4 or buf[i + 5:i + 9] != b"\0\0\0\0" or (
                    length if flags & 1 else length % 6):
                self._session()  # a frame the session must see (or a bad SETTINGS)
                return False
            if i + 9 + length > n:
                break  # its payload is still to come
            if not flags & 1:
                if not _settings_ok(buf[i + 9:i + 9 + length]):
                    self._session()
                    return False
                settings_frames += 1
            i += 9 + length
        out = b""
        if not self._greeting_sent:
            self._greeting_sent = True
            out = _greeting(self.settings)
        if settings_frames > self._dormant_acked:
            out += _SETTINGS_ACK * (settings_frames - self._dormant_acked)
            self._dormant_acked = settings_frames
        self._dormant = buf
        if out and self._transport is not None:
            self._transport.write(out)
        return True

    def _session(self) -> H2Session:
        h2c = self._h2
        if h2c is not None:
            return h2c
        h2c = self._h2 = new_session(self.settings, False)
        replay, self._dormant = self._dormant, None
        if self._greeting_sent:
            h2c.data_to_send()  # our SETTINGS and WINDOW_UPDATE: sent already
        if replay:
            try:
                events = h2c.receive_data(replay)
            except h2.exceptions.ProtocolError:  # (only SETTINGS h2 takes were kept)
                log.exception("h2: replaying the handshake failed")
                events = []
            h2c.data_to_send()  # the ACKs of the client's SETTINGS: sent already
            for event in events:
                self._on_event(event)
        return h2c

    # ---- events -----------------------------------------------------------------------------
    def _before_events(self, events: list) -> None:
        # Streams the client opens and resets within one slice (rapid reset) never reach the
        # handler: announcing one would start its exchange (a splice upstream) only to cancel it
        gone = None
        for event in events:
            if type(event) is h2.events.StreamReset:
                if gone is None:
                    gone = set()
                gone.add(event.stream_id)
        self._reset_soon = gone

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
            st = self._streams.get(event.stream_id)
            if st is not None:
                self._on_client_reset(st, event.error_code)
            else:
                self._h2.forget_stream(event.stream_id)
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
        gone = self._reset_soon
        if gone is not None and sid in gone:
            self.skipped_requests += 1
            return  # its StreamReset, later in this slice, finds no stream of ours
        if self._goaway_sent and sid > self._goaway_last:
            self._refuse(sid)
            return
        headers = list(event.headers)
        ended = event.stream_ended is not None
        st = H2Stream(sid, _HELD, self)
        st.remote_closed = ended
        st.req_ended = ended
        self._streams[sid] = st
        if header_list_size(headers) > self.settings.max_header_list_size:
            problem_headers, body = engine_problem(431, self.settings.max_header_list_size)
            self.respond(sid, 431, list(problem_headers), body)  # counted by H2Session (refused)
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

    def _on_request_end(self, st: H2Stream) -> None:
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

    def _finish_read(self, st: H2Stream) -> None:
        cb = st.callback
        st.callback = None
        body = b"".join(st.body)
        st.body.clear()
        st.body_len = 0
        st.mode = _LOCAL
        if cb is not None:
            cb(body, st.trailers)

    def _on_client_reset(self, st: H2Stream, error_code: int) -> None:
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

    def _after_local_end(self, st: H2Stream) -> None:
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

    def _abort_after_flush(self) -> None:
        # the connection is over for us now (nothing more is read): end its exchanges at once
        # rather than when the transport closes, up to LINGER_S later
        super()._abort_after_flush()
        self._on_lost(None)

    def _on_lost(self, exc: Exception | None) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        streams = list(self._streams.values())
        self._streams.clear()
        self._waiting.clear()
        # The handler first: it forgets the requests still waiting (admission queue, connect),
        # so that a slot given back by a spliced stream below is not handed to one of them
        try:
            self.handler.on_connection_lost(self)
        except Exception:
            log.exception("on_connection_lost failed")
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

    # ---- public API (engine.ServerConnection) ------------------------------------------------
    def _live(self, stream_id: int) -> H2Stream | None:
        st = self._streams.get(stream_id)
        if st is None or self._lost:
            return None
        return st

    def _detach_upstream(self, st: H2Stream) -> None:
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

    def count_refused(self) -> None:
        """Charge one refused request to the connection's budget (engine doc)."""
        h2c = self._h2
        if h2c is not None and not self._lost and h2c.refused_over():
            self._calm("refused requests (stream-limit abuse)")

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
            # the stream or its connection is gone: the exchange is over all the same (its
            # observer gives back what it holds: an admission slot), told on the next
            # iteration so that admission handing slots on does not recurse
            asyncio.get_running_loop().call_soon(
                observer.on_complete, stream_id, 0, ErrorCode.CANCEL)
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

    def _upstream_failed(self, st: H2Stream, error_code: int, reached: bool) -> None:
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

    def _relay_response_headers(self, st: H2Stream, headers: Headers, ended: bool) -> None:
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

    def _stalled(self, st: H2Stream) -> None:
        """The client cannot take the relayed response now: tell the observer
        (settings.report_response_stall; SpliceObserver.on_response_stalled)."""
        obs = st.observer
        if self._report_stall and obs is not None:
            try:
                obs.on_response_stalled(st.sid, st.status)
            except Exception:
                log.exception("on_response_stalled failed on stream %d", st.sid)

    def _tap_response(
        self, st: H2Stream, status: int, headers: Headers, extra: Headers
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

    def _fail_spliced(self, st: H2Stream, error_code: int) -> None:
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
        the PING comes back (or after ``LINGER_S``) every stream the client opened meanwhile
        has arrived, and GOAWAY(last stream id) follows.  With an error code: one step."""
        if self._lost or self._goaway_sent or self._drain_timer is not None:
            return
        self._session()
        if error_code:
            self._final_goaway(error_code)
            return
        self._h2.send_goaway_frame(ErrorCode.NO_ERROR, MAX_STREAMS_UNKNOWN)
        self._h2.ping(_DRAIN_PING)
        self._drain_timer = asyncio.get_running_loop().call_later(
            LINGER_S, self._final_goaway, ErrorCode.NO_ERROR)
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
