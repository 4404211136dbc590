"""Per-connection budgets, equal on both backends (issue 13): decoded header bytes (HPACK
bomb), one block's hard size, refused streams (stream-limit exhaustion), SETTINGS/PRIORITY
floods; each cut with GOAWAY(ENHANCE_YOUR_CALM) while a well-behaved connection beside it goes
on.  Event-driven: every wait is for a frame or a close, never a fixed time."""

from __future__ import annotations

import h2.events
import hpack
import pytest

from dataplane.engine import ErrorCode, H2Settings
from tests.conftest import start_origin
from tests.test_engine_limits import RawH2, is_, status_of
from tests.test_rfc9113_errors import PRIORITY, frame

CALM = ErrorCode.ENHANCE_YOUR_CALM


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


async def _legit_still_served(port: int) -> None:
    raw = await RawH2.connect(port)
    sid = raw.request("/legit")
    raw.flush()
    assert await status_of(raw, sid) == 200
    raw.close()


async def _calmed(raw: RawH2) -> None:
    ev = await raw.until(is_(h2.events.ConnectionTerminated))
    assert ev.error_code == CALM
    await raw.wait_closed()


async def test_hpack_bomb_spends_the_header_budget(origin_with):
    """Each block references one 3,000-byte dynamic-table entry: a few bytes on the wire,
    ~3 KB decoded, under the 4 KiB list limit, so each is served until the connection's
    64 KiB decoded-bytes budget for the second is spent."""
    origin = await origin_with(H2Settings(max_header_list_size=4096,
                                          max_header_bytes_per_second=64 * 1024))
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    for _ in range(60):  # 60 x ~3.1 KB decoded = ~190 KB, from a few KB on the wire
        raw.request("/x", [(b"x-bomb", b"b" * 3000)])
    raw.flush()
    await _calmed(raw)
    served = sum(1 for h in origin.handler.requests if dict(h).get(b"x-bomb"))
    assert served < 60  # (h2 decodes a whole read before serving: it may serve none)
    await _legit_still_served(origin.port)


async def test_header_block_over_the_hard_limit_ends_the_connection(origin_with):
    origin = await origin_with(H2Settings(max_header_list_size=4096))  # hard limit 64 KiB
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    raw.request("/x", [(f"x-h{i}".encode(), b"h" * 4000) for i in range(20)])  # ~80 KB
    raw.flush()
    await _calmed(raw)
    assert origin.handler.requests == []
    await _legit_still_served(origin.port)


async def test_one_100kb_header_value(backend, origin_with):
    """A 100 KB value (over the 64 KiB list limit, under the 256 KiB hard limit): 431 on its
    stream, the connection goes on, on h2.  libnghttp2's HPACK decoder caps one name or value
    at 64 KiB (NGHTTP2_HD_MAX_NV, compiled in) and ends the connection with COMPRESSION_ERROR
    before nfmesh sees the field: that backend can only say so with a GOAWAY."""
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    big = raw.request("/x", [(b"x-big", b"v" * 100_000)])
    raw.flush()
    if backend.NAME == "nghttp2":
        ev = await raw.until(is_(h2.events.ConnectionTerminated))
        assert ev.error_code == ErrorCode.COMPRESSION_ERROR
    else:
        assert await status_of(raw, big) == 431
        ok = raw.request("/x")
        raw.flush()
        assert await status_of(raw, ok) == 200
    assert not any(dict(h).get(b"x-big") for h in origin.handler.requests)


async def test_stream_limit_exhaustion_ends_the_connection(origin_with):
    origin = await origin_with(H2Settings(max_concurrent_streams=5,
                                          max_refused_streams_per_second=10))
    raw = await RawH2.connect(origin.port)
    for _ in range(40):  # sent before the server's SETTINGS are read: h2 does not hold us back
        raw.request("/hold")
    raw.flush()
    await _calmed(raw)
    refused = [e for e in raw.events if isinstance(e, h2.events.StreamReset)
               and e.error_code == ErrorCode.REFUSED_STREAM]
    assert 10 <= len(refused) <= 11
    await _legit_still_served(origin.port)


@pytest.mark.parametrize("kind", ["settings", "priority"])
async def test_control_frame_flood_is_cut(origin_with, kind):
    origin = await origin_with(H2Settings(max_control_frames_per_second=100))
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    if kind == "settings":
        for _ in range(300):
            raw.h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        raw.flush()
    else:
        raw.writer.write(b"".join(frame(PRIORITY, 0, 2 * i + 1, b"\x00\x00\x00\x00\x10")
                                  for i in range(300)))
    await _calmed(raw)
    await _legit_still_served(origin.port)


async def test_default_budget_keeps_a_busy_legit_connection(origin_with):
    """Many ordinary requests on one connection stay far inside the default budgets."""
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    sids = [raw.request(f"/r{i}", [(b"user-agent", b"AMF-1"),
                                   (b"3gpp-sbi-target-apiroot", b"http://10.0.0.1:8080")])
            for i in range(200)]
    raw.flush()
    for sid in sids:
        assert await status_of(raw, sid) == 200
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in raw.events)
    raw.close()


class _SmallBodyHandler:
    """Reads each request body with a 1,000-byte limit."""

    def __init__(self) -> None:
        self.bodies: list = []

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        def done(body, trailers):
            self.bodies.append(body)
            if body is not None:
                conn.respond(stream_id, 200, [], b"%d" % len(body))
        conn.read_body(stream_id, 1000, done)

    def on_connection_lost(self, conn) -> None:
        pass


async def _answer(raw: RawH2, sid: int) -> tuple[dict, bytes]:
    ev = await raw.until(is_(h2.events.ResponseReceived, sid))
    await raw.until(is_(h2.events.StreamEnded, sid))
    body = b"".join(e.data for e in raw.events
                    if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
    return dict(ev.headers), body


@pytest.mark.parametrize("status", [413, 431])
async def test_engine_errors_are_problem_details(backend, status):
    """413 (body over read_body's limit) and 431 (header list over the limit): the same
    application/problem+json body with a TS 29.500 cause on both backends."""
    import json

    from dataplane.engine import engine_problem
    from dataplane.listener import serve

    handler = _SmallBodyHandler()
    server = await serve("127.0.0.1", 0, lambda: handler, backend,
                         H2Settings(max_header_list_size=2048))
    port = server.sockets[0].getsockname()[1]
    raw = await RawH2.connect(port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    if status == 413:
        sid = raw.request("/up", end_stream=False)
        raw.h2.send_data(sid, b"x" * 5000, end_stream=True)
    else:
        sid = raw.request("/x", [(b"x-big", b"v" * 4000)])
    raw.flush()
    headers, body = await _answer(raw, sid)
    assert headers[b":status"] == str(status).encode()
    assert headers[b"content-type"] == b"application/problem+json"
    expected = engine_problem(status, 1000 if status == 413 else 2048)[1]
    assert body == expected
    problem = json.loads(body)
    assert problem["status"] == status and problem["cause"] == "INVALID_MSG_FORMAT"
    raw.close()
    server.close()


async def test_a_stream_of_oversized_blocks_ends_the_connection(origin_with):
    """Each block is over the list limit (431) but under the hard one: after
    max_refused_streams_per_second of them the connection is cut, on both backends."""
    origin = await origin_with(H2Settings(max_header_list_size=4096,
                                          max_refused_streams_per_second=10))
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    for _ in range(30):
        raw.request("/x", [(b"x-big", b"o" * 6000)])
    raw.flush()
    await _calmed(raw)
    answered = [e for e in raw.events if isinstance(e, h2.events.ResponseReceived)]
    assert all(dict(e.headers)[b":status"] == b"431" for e in answered)
    assert len(answered) <= 11
    assert origin.handler.requests == []
    await _legit_still_served(origin.port)


async def test_continuation_flood_is_cut(origin_with):
    """A header block that never ends (empty CONTINUATION frames): GOAWAY(ENHANCE_YOUR_CALM)
    on both backends (libnghttp2's CONTINUATION limit, h2's backlog of 64)."""
    origin = await origin_with(H2Settings())
    raw = await RawH2.connect(origin.port)
    raw.flush()
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    block = hpack.Encoder().encode([(b":method", b"GET"), (b":scheme", b"http"),
                                    (b":authority", b"t"), (b":path", b"/x")])
    raw.writer.write(frame(1, 0x1, 1, block) + frame(9, 0, 1, b"") * 1000)
    await _calmed(raw)
    assert origin.handler.requests == []
    await _legit_still_served(origin.port)
