"""Stream exhaustion through the real proxy, on both HTTP/2 backends and both proxy twins: an
attacker opens streams of POST /hold whose body never comes (some forwarded to the producer,
which holds them, the rest queued by admission), then is cut (it closes, or the gateway ends the
connection with GOAWAY ENHANCE_YOUR_CALM over its refused-stream budget).  Every admission slot
those requests held comes back and a legitimate request is answered afterwards.

The h2 backend used to lose the slots: completing a spliced stream of the dead connection
released its slot, admission handed it to a request queued on that same connection, and the
engine ignored the splice of a stream of a lost connection without telling the observer."""

from __future__ import annotations

import asyncio

import hpack
import pytest

from dataplane.admission import AdmissionController, AdmissionSettings
from dataplane.client import H2Client
from dataplane.engine import ErrorCode, H2Settings
from dataplane.routing import Forward
from tests.conftest import start_origin, start_proxy
from tests.h2_frames import frame, greeting, read_until_eof
from tests.waiting import wait_until

SLOTS = 4
HELD = 12  # streams the attacker opens: SLOTS forwarded, the rest queued


class ToOrigin:
    """Everything to the origin, no deadline."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint

    def route(self, headers, peer):
        held = (b":path", b"/hold") in headers  # the attacker's requests: one consumer
        return Forward(self.endpoint, list(headers), cluster="test", priority=16,
                       consumer="attacker" if held else None)


def held_posts(enc: hpack.Encoder, first_sid: int, n: int, port: int) -> bytes:
    """``n`` HEADERS of POST /hold with END_HEADERS and no END_STREAM."""
    out = []
    for i in range(n):
        block = enc.encode([(b":method", b"POST"), (b":scheme", b"http"),
                            (b":authority", f"127.0.0.1:{port}".encode()), (b":path", b"/hold")])
        out.append(frame(1, 0x4, first_sid + 2 * i, block))
    return b"".join(out)


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


@pytest.mark.parametrize("cut", ["attacker_closes", "gateway_cuts", "gateway_cuts_over_429s"])
async def test_cut_attacker_gives_every_admission_slot_back(backend, origin, cut):
    over_429s = cut == "gateway_cuts_over_429s"
    adm = AdmissionController(AdmissionSettings(
        initial_limit=SLOTS, min_limit=SLOTS, max_limit=SLOTS, reserved_share=0.0,
        consumer_rate_per_s=1e-3 if over_429s else 0.0, consumer_burst=float(HELD),
        probe_interval_s=1e9, queue_target_s=60.0, queue_interval_s=60.0))
    # the gateway cuts a client after 2 refused streams (over 16 concurrent) in a second
    settings = H2Settings(max_concurrent_streams=16, max_refused_streams_per_second=2)
    proxy = await start_proxy(backend, ToOrigin(origin.endpoint), settings=settings,
                              admission=adm)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    enc = hpack.Encoder()
    try:
        writer.write(greeting() + held_posts(enc, 1, HELD, proxy.port))
        await writer.drain()
        await wait_until(lambda: len(origin.handler.held) == SLOTS)
        gate = next(iter(adm.gates.values()))
        await wait_until(lambda: gate.queued == HELD - SLOTS)
        assert adm.in_flight == SLOTS
        if cut == "attacker_closes":
            writer.transport.abort()
        elif over_429s:
            # 4 more, under 16 concurrent but over the consumer's request rate: 429s, charged
            # to the refused-stream budget: ENHANCE_YOUR_CALM on both backends, and the queued
            # requests that admission hands the freed slots to find their connection gone
            writer.write(held_posts(enc, 1 + 2 * HELD, 4, proxy.port))
            await writer.drain()
            got = await read_until_eof(reader)
            assert got.goaway[-1:] == [ErrorCode.ENHANCE_YOUR_CALM]
        else:
            # 8 more: 4 fit under 16 concurrent, 4 do not: the gateway ends the connection
            # (h2: refused streams over their budget, ENHANCE_YOUR_CALM; libnghttp2: a stream
            # over the acknowledged limit is a PROTOCOL_ERROR)
            writer.write(held_posts(enc, 1 + 2 * HELD, 8, proxy.port))
            await writer.drain()
            got = await read_until_eof(reader)
            assert got.goaway[-1:] == [ErrorCode.ENHANCE_YOUR_CALM if backend.NAME == "h2"
                                       else ErrorCode.PROTOCOL_ERROR]
        await wait_until(lambda: adm.in_flight == 0 and gate.queued == 0,
                         what=lambda: f"in flight {adm.in_flight}, queued {gate.queued}")
        await wait_until(lambda: not proxy.handler.connections)
        client = H2Client(backend.NAME)
        try:
            resp = await asyncio.wait_for(
                client.request("GET", f"http://127.0.0.1:{proxy.port}/status/204"), 10)
        finally:
            await client.close()
        assert resp.status == 204
        assert adm.in_flight == 0
    finally:
        writer.close()
        await proxy.stop()
