"""The shared core of the pure engine's connections (``dataplane.h2_engine``): per-stream
state, flow-controlled relaying, write batching, abuse limits.

``H2Stream`` is one stream on either side of a splice; ``BaseConnection`` (the asyncio Protocol
both ``ServerConnection`` and ``ClientConnection`` extend) holds the h2 session and relays DATA
between joined streams without calling the proxy:

* a received DATA byte is acknowledged (WINDOW_UPDATE) to its sender only once the other
  connection's session took it (sent into its flow-control window), so a slow reader slows the
  writer and the bytes held per stream stay below the stream window;
* a connection whose transport is paused (``pause_writing``) takes nothing more until
  ``resume_writing``;
* all the frames produced while handling one ``data_received`` batch (on this and the other
  connections touched) are written with one ``transport.write`` per connection.  The batch
  being gathered is per event loop (``LoopBatch``, looked up once per connection), so loops in
  different threads never write each other's connections.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
import weakref
from collections import deque

import h2.events
import h2.exceptions
import h2.settings

from dataplane.abuse_log import cut_log
from dataplane.engine import ErrorCode, H2Settings, Headers, SpliceObserver
from dataplane.h2_session import H2Session, new_session
from dataplane.http1_refusal import http1_refusal
from dataplane.linger import close_after_fin

log = logging.getLogger("nfmesh.h2")

MAX_STREAMS_UNKNOWN = 2**31 - 1
LINGER_S = 1.0  # how long a closing connection keeps discarding input after its GOAWAY
_MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4, the client's first bytes
_PREFACE_LEN = 24 + 9  # the client magic and the first frame's header
# frames handed to h2 at once: a read holding more is fed over several loop iterations, so that
# no read holds the loop long (the gateway sheds load when its loop runs late)
FEED_FRAMES = 64
# a HEADERS frame weighs this many frames in a slice (a request costs the proxy far more than a
# control frame): at most FEED_FRAMES / HEADERS_WEIGHT new requests a loop iteration
HEADERS_WEIGHT = 4
_FRAME_HEAD = struct.Struct(">BHBB")  # a frame header's length (8 + 16 bits), type, flags


class LoopBatch:
    """The connections of one event loop marked for a flush while one of its connections
    handles a ``data_received`` batch; each is written once, at the batch's end.  ``pending``
    is None outside a batch (a mark then flushes at once)."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[BaseConnection] | None = None


# the batch of each event loop that has had a connection (an entry goes with its loop)
_batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# connections made or driven outside a running loop: one batch per thread
_unlooped = threading.local()


def loop_batch() -> LoopBatch:
    """The running loop's batch (made at its first connection); outside a running loop, the
    thread's own.  Looked up once per connection, never per frame."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        batch = getattr(_unlooped, "batch", None)
        if batch is None:
            batch = _unlooped.batch = LoopBatch()
        return batch
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = LoopBatch()
    return batch


class H2Stream:
    """Per-stream state, on either side.  ``out`` holds DATA waiting for this stream's send
    window (or a paused transport); ``out_end`` is what closes it afterwards (True: END_STREAM,
    a list: trailers).  ``peer`` is the joined stream on the other connection."""

    __slots__ = (
        "sid", "mode", "peer", "out", "out_len", "out_end", "relay_ack", "sent",
        "rx", "acked", "body", "body_len", "body_whole", "req_ended", "trailers",
        "local_closed", "remote_closed", "status", "observer", "extra", "retain",
        "callback", "limit", "got_headers", "headers", "req_headers", "conn",
        "conn_acked", "grant", "grant_to", "stall_told",
    )

    def __init__(self, sid: int, mode: int, conn: BaseConnection) -> None:
        self.sid = sid
        self.mode = mode
        self.conn = conn
        self.peer: H2Stream | None = None
        self.out: deque = deque()
        self.out_len = 0
        self.out_end: bool | Headers | None = None
        self.relay_ack = False  # bytes sent from out are acknowledged to peer's connection
        self.stall_told = False  # relayed bytes waited for this stream's window (_stalled)
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
        self.conn_acked = False  # received DATA acknowledged to the connection window at once
        self.grant = 0  # window granted beyond the session's initial one (upstream splice)
        self.grant_to: BaseConnection | None = None  # whose relay budget the grant came from


class BaseConnection(asyncio.Protocol):
    """What both sides share: the h2 session, batching of writes, flow-controlled pumping."""

    _client_side = False
    _lazy = False  # the session is made at the first frame that needs it (_session)

    def __init__(self, settings: H2Settings) -> None:
        self.settings = settings
        self._h2: H2Session | None = None
        self._transport: asyncio.Transport | None = None
        self._batch = loop_batch()  # looked up again in connection_made
        self._streams: dict[int, H2Stream] = {}
        self._waiting: set[H2Stream] = set()  # streams with DATA waiting for window/transport
        self._paused = False
        self._queued = False
        self._lost = False
        self._goaway_sent = False
        self._goaway_last = 0
        self._close_when_idle = False
        self._lingering = False
        self._greeted = False  # the peer's first bytes came
        self._goaway_received = False
        # abuse budgets, charged by _scan from the raw frame headers before h2 parses a read
        self._budget_window = 0.0
        self._resets_left = 0
        self._controls_left = 0
        self._scan_skip = 0 if self._client_side else 24  # payload bytes (the magic) to skip
        self._scan_head = b""  # a frame header cut by the end of a read
        self._scan_fed = 0
        self.frames_scanned = 0  # frame headers charged to the budgets
        self.frames_fed = 0  # frame headers handed to h2 (parsed)
        self.deferred_slices = 0  # slices of long reads fed on a later loop iteration
        # window granted to producers beyond the base for this (downstream) connection's
        # spliced streams, at most settings.relay_connection_buffer (dataplane.h2_client)
        self.relay_granted = 0
        self._backlog: tuple | None = None  # a read being fed in slices
        self._later: deque | None = None  # reads that came meanwhile
        self.calm_goaway = False  # we ended the connection with ENHANCE_YOUR_CALM
        # a server checks the first 33 bytes: client magic + a SETTINGS frame header
        self._preface: bytes | None = None if self._client_side else b""

    # ---- transport side -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._batch = loop_batch()
        if not self._lazy:
            self._h2 = new_session(self.settings, self._client_side)
        if self._client_side:
            self._mark()
        # a server's SETTINGS wait for the client's first bytes, so that an HTTP/1.x client
        # can be told 505 in its own protocol (dataplane.http1_refusal)

    def data_received(self, data: bytes) -> None:
        if self._backlog is not None:
            # still feeding an earlier read in slices (reading is paused; this one was already
            # on its way): it goes after the rest of that read
            if self._later is None:
                self._later = deque()
            self._later.append(bytes(data))
            return
        batch = self._batch
        outer = batch.pending is None
        if outer:
            batch.pending = []
        try:
            self._take(data)
        finally:
            if outer:
                self._end_batch(batch)

    @staticmethod
    def _end_batch(batch: LoopBatch) -> None:
        pending, batch.pending = batch.pending, None
        for conn in pending:
            conn._queued = False
            conn._flush()

    def _take(self, data: bytes) -> None:
        """One read: the first-bytes checks, the frame-header scan against the abuse budgets,
        then h2, at most ``FEED_FRAMES`` frames at a time (the rest on later loop iterations,
        reading paused meanwhile)."""
        if self._transport is None or self._lost or self._lingering:
            return
        if not self._greeted:
            self._greeted = True
            reply = None if self._client_side else http1_refusal(bytes(data))
            if reply is not None:
                self._refuse_http1(reply)
                return
        if self._preface is not None and not self._check_preface(data):
            return
        cuts = self._scan(data)
        if cuts is None:
            return  # over a budget: cut, nothing of this read parsed
        if self._h2 is None and self._dormant_take(data):
            return
        if not cuts:
            self._feed(data, self._scan_fed)
            return
        # a long read: the first slice now, the others one per loop iteration
        first, nframes = cuts[0]
        self._backlog = (bytes(data), cuts, first, self._scan_fed)
        self._feed(data[:first], nframes)
        if self._backlog is not None and self._transport is not None and not self._lost:
            self._transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._feed_backlog)

    def _feed_backlog(self) -> None:
        backlog = self._backlog
        if backlog is None:
            return
        batch = self._batch
        outer = batch.pending is None
        if outer:
            batch.pending = []
        try:
            if self._lost or self._lingering:
                self._backlog = None
                self._later = None
                return
            data, cuts, start, last = backlog
            self.deferred_slices += 1
            cuts.pop(0)
            if cuts:
                end, nframes = cuts[0]
                self._backlog = (data, cuts, end, last)
                self._feed(data[start:end], nframes)
                if self._backlog is not None:
                    asyncio.get_running_loop().call_soon(self._feed_backlog)
                return
            self._backlog = None
            self._feed(data[start:], last)
            later = self._later
            while later is not None and later and self._backlog is None and not self._lost:
                self._take(later.popleft())
            if self._backlog is None and self._transport is not None and not self._lost:
                self._transport.resume_reading()
        finally:
            if outer:
                self._end_batch(batch)

    def _scan(self, data: bytes) -> list[tuple[int, int]] | None:
        """Walk the raw 9-byte frame headers of a read (no payload is looked at) and charge
        RST_STREAM, and SETTINGS/PING (not ACKs) and PRIORITY, to the connection's one-second
        budgets (``H2Settings.max_resets_per_second``, ``max_control_frames_per_second``),
        before h2 parses any of it.  Over a budget: GOAWAY(ENHANCE_YOUR_CALM), close, None.
        Else where each slice of the read ends, with its frame count: a slice holds frames
        weighing ``FEED_FRAMES`` (a HEADERS ``HEADERS_WEIGHT``, any other 1); empty when the
        read is one slice; ``_scan_fed`` is the count of frames after the last cut."""
        shift = len(self._scan_head)
        if shift:
            # a frame header began at the end of the last read: scan it whole (a rare copy)
            data = self._scan_head + bytes(data)
            self._scan_head = b""
        n = len(data)
        i = self._scan_skip
        now = time.monotonic()
        if now - self._budget_window >= 1.0:
            self._budget_window = now
            self._resets_left = self.settings.max_resets_per_second
            self._controls_left = self.settings.max_control_frames_per_second
        resets = self._resets_left
        controls = self._controls_left
        frames = 0
        weight = 0
        total = 0
        cuts: list[tuple[int, int]] = []
        unpack = _FRAME_HEAD.unpack_from
        while i + 9 <= n:
            hi, lo, ftype, flags = unpack(data, i)
            if ftype == 3:
                resets -= 1
                if resets < 0:
                    self._calm(f"over the RST_STREAM budget "
                               f"({self.settings.max_resets_per_second}/s)")
                    return None
            elif ftype == 2 or (not flags & 1 and (ftype == 4 or ftype == 6)):
                controls -= 1
                if controls < 0:
                    self._calm(f"over the control frame budget "
                               f"({self.settings.max_control_frames_per_second}/s)")
                    return None
            i += 9 + ((hi << 16) | lo)
            frames += 1
            weight += HEADERS_WEIGHT if ftype == 1 else 1
            if weight >= FEED_FRAMES:
                if i < n:
                    cuts.append((i - shift, frames))
                    total += frames
                    frames = 0
                weight = 0
        self._resets_left = resets
        self._controls_left = controls
        if i < n:
            self._scan_head = bytes(data[i:])
            self._scan_skip = 0
        else:
            self._scan_skip = i - n
        self._scan_fed = frames
        self.frames_scanned += total + frames
        return cuts

    def _feed(self, data: bytes, frames: int) -> None:
        """Hand bytes to h2 and handle its events (``frames``: the frame headers counted)."""
        self.frames_fed += frames
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            if isinstance(exc, h2.exceptions.DenialOfServiceError):
                self.calm_goaway = True
                cut_log.warn("HTTP/2 peer %s: %s: GOAWAY ENHANCE_YOUR_CALM",
                             getattr(self, "peer_info", {}).get("peername"), exc)
            else:
                log.debug("h2 protocol error from peer: %s", exc)
            self._mark()
            self._abort_after_flush()
            return
        self._before_events(events)
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

    def _session(self) -> H2Session:
        """The h2 session (a lazy connection makes it now)."""
        return self._h2

    def _dormant_take(self, data: bytes) -> bool:
        """A lazy connection without a session yet: True when it answered ``data`` itself."""
        return False

    def _check_preface(self, data: bytes) -> bool:
        """RFC 9113 §3.4: the client magic is followed by a SETTINGS frame (no ACK, stream
        0); anything else is an invalid preface, a connection error of type PROTOCOL_ERROR
        (h2 checks the magic only).  False: the connection is being closed."""
        head = self._preface + bytes(data[:_PREFACE_LEN - len(self._preface)])
        if len(head) < _PREFACE_LEN and _MAGIC.startswith(head[:24]):
            self._preface = head  # so far so good: wait for the rest
            return True
        self._preface = None
        if (len(head) == _PREFACE_LEN and head[:24] == _MAGIC and head[27] == 0x4
                and not head[28] & 0x1 and not int.from_bytes(head[29:33], "big")):
            return True
        log.info("h2: %s: invalid connection preface (not the client magic and SETTINGS): "
                 "GOAWAY PROTOCOL_ERROR",
                 getattr(self, "peer_info", {}).get("peername"))
        self._session().close_connection(ErrorCode.PROTOCOL_ERROR)
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
        pending = self._batch.pending
        if pending is None:
            self._flush()
        elif not self._queued:
            self._queued = True
            pending.append(self)

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
        flight, close when it closes (at most ``LINGER_S`` later).  Closing with unread input
        makes the kernel answer RST, which can destroy the GOAWAY before the peer reads it."""
        transport = self._transport
        if transport is None or self._lingering:
            return
        self._lingering = True
        close_after_fin(transport, LINGER_S)

    # ---- abuse limits ---------------------------------------------------------------------
    def _calm(self, why: str) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) and close; nothing more the peer sends is processed."""
        cut_log.warn("HTTP/2 peer %s %s: GOAWAY ENHANCE_YOUR_CALM",
                     getattr(self, "peer_info", {}).get("peername"), why)
        self.calm_goaway = True
        try:
            self._session().close_connection(ErrorCode.ENHANCE_YOUR_CALM)
        except h2.exceptions.ProtocolError:
            pass
        self._abort_after_flush()

    # ---- sending DATA under flow control ----------------------------------------------------
    def _pump(self, st: H2Stream) -> None:
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
            if st.relay_ack and not st.stall_told:
                st.stall_told = True
                self._stalled(st)
        else:
            self._waiting.discard(st)
            if st.out_end is not None:
                end, st.out_end = st.out_end, None
                self._send_end(st, end)
        self._mark()

    def _stalled(self, st: H2Stream) -> None:
        """Relayed bytes on ``st`` wait for the peer's window or a paused transport (once per
        stream); the server side tells the splice's observer."""

    def _ack_relayed(self, st: H2Stream, n: int) -> None:
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
                if not conn._credit(src, grant):
                    return
                conn._mark()

    def _send_end(self, st: H2Stream, end: bool | Headers) -> None:
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

    def _after_local_end(self, st: H2Stream) -> None:
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

    def _discard_unacked(self, st: H2Stream) -> None:
        """The stream's received body will not be consumed: release its flow-control credit."""
        owed = st.rx - st.acked
        st.acked = st.rx
        if owed > 0 and not self._lost:
            self._credit(st, owed)
            self._mark()

    def _credit(self, st: H2Stream, n: int) -> bool:
        """Give back ``n`` bytes of ``st``'s received body as flow-control credit: the stream
        window only when its connection window was given back on arrival (a relayed
        response), else both.  False on a protocol error (the stream is gone)."""
        try:
            if st.conn_acked:
                self._h2.ack_stream(n, st.sid)
            else:
                self._h2.acknowledge_received_data(n, st.sid)
        except h2.exceptions.ProtocolError:
            return False
        return True

    def _reset_stream(self, st: H2Stream, error_code: int) -> None:
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

    def _maybe_forget(self, st: H2Stream) -> None:
        if st.local_closed and st.remote_closed:
            self._forget(st)

    def _forget(self, st: H2Stream) -> None:
        if self._streams.pop(st.sid, None) is not None:
            if self._h2 is not None:
                self._h2.forget_stream(st.sid)
            self._waiting.discard(st)
            self._on_forgotten(st)
        if self._close_when_idle and not self._streams:
            self._mark()

    def _on_forgotten(self, st: H2Stream) -> None:
        pass

    # ---- events -----------------------------------------------------------------------------
    def _before_events(self, events: list) -> None:
        """A look at one slice's events before they are handled (nothing here)."""

    def _on_event(self, event) -> None:
        raise NotImplementedError

    def _on_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    def _common_event(self, event) -> None:
        """Handle the events both sides treat alike (others are ignored)."""
        if isinstance(event, h2.events.WindowUpdated):
            self._on_window(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            # (SETTINGS, PING, PRIORITY and RST_STREAM are charged to the budgets by _scan)
            self._on_remote_settings(event)

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
