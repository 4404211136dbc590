"""The python-hyper ``h2`` library as a raw client through the proxy (an implementation we did
not write, used at frame level): concurrent streams, flow-controlled upload, trailers."""

from __future__ import annotations

import h2.events
import pytest

from tests.conftest import StaticRouter, pattern, start_origin, start_proxy
from tests.test_engine_limits import RawH2, is_, status_of

pytestmark = pytest.mark.interop


@pytest.fixture
async def proxy(backend):
    origin = await start_origin(backend)
    running = await start_proxy(backend, StaticRouter(origin.endpoint))
    yield running
    await running.stop()
    await origin.stop()


async def test_concurrent_streams_and_trailers(proxy):
    raw = await RawH2.connect(proxy.port)
    sids = [raw.request(f"/headers?n={i}") for i in range(20)]
    trailer_sid = raw.request("/trailers")
    raw.flush()
    for sid in sids:
        assert await status_of(raw, sid) == 200
    ev = await raw.until(is_(h2.events.TrailersReceived, trailer_sid))
    assert dict(ev.headers)[b"grpc-status"] == b"0"
    raw.close()


async def test_upload_respects_flow_control(proxy):
    raw = await RawH2.connect(proxy.port)
    raw.flush()  # our preface first: the server's SETTINGS answer it
    await raw.until(is_(h2.events.RemoteSettingsChanged))
    body = pattern(3 << 20)
    sid = raw.h2.get_next_available_stream_id()
    raw.h2.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                              (b":authority", b"test"), (b":path", b"/upload")])
    sent = 0
    while sent < len(body):
        window = raw.h2.local_flow_control_window(sid)
        if window == 0:
            # only the proxy's WINDOW_UPDATEs let us go on
            await raw.until(lambda e: isinstance(e, h2.events.WindowUpdated)
                            and (raw.h2.local_flow_control_window(sid) > 0))
            continue
        n = min(window, raw.h2.max_outbound_frame_size, len(body) - sent)
        raw.h2.send_data(sid, body[sent:sent + n])
        sent += n
        raw.flush()
    raw.h2.end_stream(sid)
    raw.flush()
    assert await status_of(raw, sid) == 200
    data = await raw.until(is_(h2.events.DataReceived, sid))
    assert b'"len": 3145728' in data.data
    raw.close()
