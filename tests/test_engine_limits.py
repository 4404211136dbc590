"""Engine limits and abuse handling, driven by the python-hyper ``h2`` library as a raw client
(so the client can misbehave on purpose).  Runs on every backend."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import pytest

from dataplane.engine import ErrorCode, H2Settings
from tests.conftest import start_origin
from tests.waiting import wait_until


class _KeepOpenH2(h2.connection.H2Connection):
    """h2 drops queued frames (a PING ACK) and refuses to send after a GOAWAY; a client in a
    graceful drain must go on, so only report it."""

    def _receive_goaway_frame(self, frame):
        event = h2.events.ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class RawH2:
    """A deliberately low-level HTTP/2 client: we choose every frame."""

    def __init__(self, reader, writer) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = _KeepOpenH2(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False))
        self.events: list = []
        self.closed = False
        self.reset_seen = False  # the connection ended with a TCP RST

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        raw.h2.initiate_connection()
        return raw

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, path: str, extra=(), end_stream: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"),
                                   (b":authority", b"test"), (b":path", path.encode()),
                                   *extra], end_stream=end_stream)
        return sid

    async def until(self, predicate, timeout: float = 3.0):
        """Read until ``predicate(event)`` holds for a received event; return it."""
        for event in self.events:
            if predicate(event):
                return event
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching event; got {self.events[-10:]}")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except TimeoutError:
                raise TimeoutError(f"no matching event; got {self.events[-10:]}") from None
            except ConnectionError as exc:
                self.reset_seen = isinstance(exc, ConnectionResetError)
                data = b""
            if not data:
                self.closed = True
                raise ConnectionError(f"connection closed; events {self.events[-10:]}")
            new = self.h2.receive_data(data)
            self.flush()
            self.events.extend(new)
            for event in new:
                if predicate(event):
                    return event

    async def wait_closed(self, timeout: float = 3.0) -> None:
        try:
            await self.until(lambda e: False, timeout)
        except ConnectionError:
            return

    def close(self) -> None:
        self.writer.close()


def is_(kind, sid=None):
    return lambda e: isinstance(e, kind) and (sid is None or getattr(e, "stream_id", None) == sid)


async def status_of(raw: RawH2, sid: int) -> int:
    ev = await raw.until(is_(h2.events.ResponseReceived, sid))
    return int(dict(ev.headers)[b":status"])


@pytest.fixture
async def origin_with(backend):
    started = []

    async def make(settings: H2Settings):
        running = await start_origin(backend, settings=settings)
        started.append(running)
        return running

    yield make
    for running in started:
        await running.stop()


async def test_max_concurrent_streams_refuses_extra_streams(origin_with):
    origin = await origin_with(H2Settings(max_concurrent_streams=5))
    raw = await RawH2.connect(origin.port)
    # sent before the server's SETTINGS are read, so our h2 does not hold us back
    sids = [raw.request("/hold") for _ in range(7)]
    raw.flush()
    refused = []
    for sid in sids[5:]:
        ev = await raw.until(is_(h2.events.StreamReset, sid))
        refused.append(ev.error_code)
    assert refused == [ErrorCode.REFUSED_STREAM] * 2
    assert len(origin.handler.held) == 5
    # the connection is fine: answer one held stream and it arrives
    conn, held_sid = origin.handler.held[0]
    conn.respond(held_sid, 200, [], b"late")
    assert await status_of(raw, sids[0]) == 200
    raw.close()


async def test_oversized_header_list_is_431_and_connection_survives(origin_with):
    origin = await origin_with(H2Settings(max_header_list_size=4096))
    raw = await RawH2.connect(origin.port)
    big = raw.request("/x", [(b"x-big", b"a" * 8000)])
    raw.flush()
    assert await status_of(raw, big) == 431
    ok = raw.request("/x")
    raw.flush()
    assert await status_of(raw, ok) == 200
    assert len(origin.handler.requests) == 1  # the handler never saw the oversized request
    raw.close()


async def test_huge_header_block_is_refused(origin_with):
    """Far over the limit (HPACK bomb territory): 431, RST or GOAWAY; never the handler."""
    origin = await origin_with(H2Settings(max_header_list_size=4096))
    raw = await RawH2.connect(origin.port)
    sid = raw.request("/x", [(f"x-h{i}".encode(), b"b" * 4000) for i in range(40)])
    raw.flush()
    ev = await raw.until(lambda e: isinstance(e, (h2.events.ConnectionTerminated,
                                                  h2.events.StreamReset,
                                                  h2.events.ResponseReceived)))
    if isinstance(ev, h2.events.ConnectionTerminated):
        assert ev.error_code != ErrorCode.NO_ERROR
    elif isinstance(ev, h2.events.ResponseReceived):
        assert ev.stream_id == sid and dict(ev.headers)[b":status"] == b"431"
    else:
        assert ev.stream_id == sid
    assert origin.handler.requests == []
    raw.close()


async def test_rapid_reset_gets_goaway_enhance_your_calm(origin_with):
    origin = await origin_with(H2Settings(max_resets_per_second=50))
    raw = await RawH2.connect(origin.port)
    for _ in range(200):
        sid = raw.request("/hold")
        raw.h2.reset_stream(sid, ErrorCode.CANCEL)
    raw.flush()
    ev = await raw.until(is_(h2.events.ConnectionTerminated))
    assert ev.error_code == ErrorCode.ENHANCE_YOUR_CALM
    await raw.wait_closed()
    raw.close()


async def test_ping_flood_gets_goaway_enhance_your_calm(origin_with):
    origin = await origin_with(H2Settings(max_control_frames_per_second=100))
    raw = await RawH2.connect(origin.port)
    for i in range(300):
        raw.h2.ping(i.to_bytes(8, "big"))
    raw.flush()
    ev = await raw.until(is_(h2.events.ConnectionTerminated))
    assert ev.error_code == ErrorCode.ENHANCE_YOUR_CALM
    raw.close()


async def test_graceful_drain_finishes_in_flight_and_refuses_new(origin_with):
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    first = raw.request("/hold")
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    await wait_until(lambda: origin.handler.held)
    conn, held_sid = origin.handler.held[0]
    conn.drain()
    # a two-step drain first announces 2**31-1; wait for the GOAWAY that names the last stream
    goaway = await raw.until(lambda e: isinstance(e, h2.events.ConnectionTerminated)
                             and e.last_stream_id < 2**31 - 1)
    assert goaway.error_code == ErrorCode.NO_ERROR
    assert goaway.last_stream_id == first
    # a stream opened after the GOAWAY (ignoring it on purpose) is refused or ignored
    late = raw.request("/late")
    raw.flush()
    # the in-flight request still completes, then the server closes the connection
    conn.respond(held_sid, 200, [], b"finished")
    assert await status_of(raw, first) == 200
    data = await raw.until(is_(h2.events.DataReceived, first))
    assert data.data == b"finished"
    await raw.wait_closed()
    late_resets = [e for e in raw.events if isinstance(e, h2.events.StreamReset)
                   and e.stream_id == late]
    assert all(e.error_code == ErrorCode.REFUSED_STREAM for e in late_resets)
    assert not any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == late
                   for e in raw.events)
    assert all(dict(h)[b":path"] != b"/late" for h in origin.handler.requests)
    raw.close()


async def test_malformed_request_is_a_stream_error(origin_with):
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    sid = raw.h2.get_next_available_stream_id()
    raw.h2.send_headers(sid, [(b":method", b"GET"), (b":path", b"/x")], end_stream=True)
    raw.flush()
    ev = await raw.until(lambda e: isinstance(e, (h2.events.StreamReset,
                                                  h2.events.ConnectionTerminated)))
    assert isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid
    assert ev.error_code == ErrorCode.PROTOCOL_ERROR
    assert origin.handler.requests == []
    # a stream error: the connection goes on
    ok = raw.request("/fine")
    raw.flush()
    assert await status_of(raw, ok) == 200
    raw.close()


async def test_header_block_split_over_continuation_frames(origin_with):
    origin = await origin_with(H2Settings())  # 64 KiB header list, 16 KiB frames
    raw = await RawH2.connect(origin.port)
    raw.flush()  # our preface first: the server's SETTINGS answer it
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    value = bytes(ord("a") + i % 26 for i in range(40000))  # > two frames, < the limit
    sid = raw.request("/headers", [(b"x-long", value)])
    raw.flush()
    assert await status_of(raw, sid) == 200
    assert any(dict(h).get(b"x-long") == value for h in origin.handler.requests)
    raw.close()


async def test_client_ping_keeps_the_connection(backend, origin_with):
    origin = await origin_with(H2Settings())
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: backend.ClientConnection(H2Settings()),
                                           "127.0.0.1", origin.port)
    await conn.ready
    for _ in range(5):
        conn.ping()
    fut = loop.create_future()
    conn.request([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"),
                  (b":path", b"/x")], None, lambda *a: fut.done() or fut.set_result(a))
    status, headers, body, trailers, error = await asyncio.wait_for(fut, 3)
    assert (status, body, error) == (200, b"ok origin", None)
    assert conn.available and not conn.closed
    conn.close()


async def test_stream_racing_the_first_goaway_is_still_served(origin_with):
    """Two-step drain: a request the client sent before it saw the first GOAWAY (here: before
    its PING ACK) is processed, not dropped."""
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    await wait_until(lambda: origin.handler.connections)
    origin.handler.connections[0].drain()
    while True:  # read until the drain PING arrived, without sending its ACK yet
        data = await asyncio.wait_for(raw.reader.read(65536), 3)
        assert data
        new = raw.h2.receive_data(data)
        raw.events.extend(new)
        if any(isinstance(e, h2.events.PingReceived) for e in new):
            break
    ack = raw.h2.data_to_send()
    racing = raw.request("/racing")
    raw.writer.write(raw.h2.data_to_send())  # the request goes out before the PING ACK
    raw.writer.write(ack)
    assert await status_of(raw, racing) == 200
    final = await raw.until(lambda e: isinstance(e, h2.events.ConnectionTerminated)
                            and e.last_stream_id < 2**31 - 1)
    assert final.last_stream_id == racing
    await raw.wait_closed()
    raw.close()


async def test_handler_exception_costs_only_its_stream(origin_with):
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    bad = raw.request("/raise")
    good = raw.request("/fine")
    raw.flush()
    ev = await raw.until(is_(h2.events.StreamReset, bad))
    assert ev.error_code == ErrorCode.INTERNAL_ERROR
    assert await status_of(raw, good) == 200
    raw.close()
