"""The per-consumer in-flight cap through the real proxy, on both HTTP/2 backends: one anonymous
connection opens many streams that hold a producer's admission slot (a POST whose body never
ends, or a 1 MiB GET read through a zero window), another consumer's requests are still all
answered.  The consumer key is ``nf_adapters.overload_control.consumer_key``: the attacker has
neither a mesh identity nor a User-Agent, so it is its address; the other names itself with a
User-Agent (as TS 29.500 asks of an NF), so the two are two consumers.  Alone, the attacker may take every slot (the cap is work-conserving) and its
other streams wait; once the other consumer comes, it is sent past the full gate (up to the
attacker's excess over ``floor(limit * max_share)``), and the attacker's waiting streams get
429.  Each admission twin (pure and compiled)."""

from __future__ import annotations

import asyncio

import hpack
import pytest

from dataplane.admission import AdmissionSettings, available_admissions, load_admission
from dataplane.client import H2Client
from dataplane.engine import H2Settings
from dataplane.routing import Forward
from nf_adapters.overload_control import consumer_key
from tests.conftest import header, start_origin, start_proxy
from tests.h2_frames import HEADERS, frame, greeting
from tests.waiting import wait_until

LIMIT = 8
SHARE = 0.75
STREAMS = 14  # the attacker's: LIMIT forwarded, the rest wait, then refused
LEGIT = 20


class ByConsumer:
    """Everything to the origin, with the consumer key the SCP routers compute."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint

    def route(self, headers, peer):
        return Forward(self.endpoint, list(headers), cluster="test", priority=16,
                       consumer=consumer_key(peer, header(headers, b"user-agent")))


def attack(enc: hpack.Encoder, kind: str, port: int) -> bytes:
    """The attacker's greeting and its ``STREAMS`` requests."""
    out = [greeting((0x4, 0)) if kind == "zero_window" else greeting()]  # INITIAL_WINDOW_SIZE
    for i in range(STREAMS):
        if kind == "zero_window":
            path, method, flags = b"/download?size=1048576", b"GET", 0x5  # END_STREAM|HEADERS
        else:
            path, method, flags = b"/hold", b"POST", 0x4  # the body never comes
        block = enc.encode([(b":method", method), (b":scheme", b"http"),
                            (b":authority", f"127.0.0.1:{port}".encode()), (b":path", path)])
        out.append(frame(1, flags, 1 + 2 * i, block))
    return b"".join(out)


async def statuses(reader: asyncio.StreamReader, want: int) -> list[int]:
    """Read frames until ``want`` response HEADERS came (a hang guard bounds it)."""
    dec = hpack.Decoder()
    got: list[int] = []
    buf = b""
    while len(got) < want:
        data = await asyncio.wait_for(reader.read(65536), 30)
        assert data, f"connection closed after {got}"
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags, payload = buf[3], buf[4], buf[9:9 + length]
            if ftype == HEADERS:
                if flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                if flags & 0x20:  # PRIORITY
                    payload = payload[5:]
                fields = dict(dec.decode(payload, raw=True))
                if b":status" in fields:
                    got.append(int(fields[b":status"]))
            buf = buf[9 + length:]
    return got


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


@pytest.mark.parametrize("admission", available_admissions())
@pytest.mark.parametrize("kind", ["held_body", "zero_window"])
async def test_one_anonymous_connection_cannot_take_every_slot(backend, origin, kind, admission):
    adm = load_admission(admission)(AdmissionSettings(
        initial_limit=LIMIT, min_limit=LIMIT, max_limit=LIMIT, reserved_share=0.0,
        consumer_rate_per_s=0.0, probe_interval_s=1e9, queue_target_s=60.0,
        queue_interval_s=60.0, consumer_max_share=SHARE))
    proxy = await start_proxy(backend, ByConsumer(origin.endpoint),
                              settings=H2Settings(max_concurrent_streams=100), admission=adm)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(attack(hpack.Encoder(), kind, proxy.port))
        await writer.drain()
        gate = await wait_until(lambda: next(iter(adm.gates.values()), None))
        # alone at the gate: every slot, the rest waits (nothing refused yet)
        await wait_until(lambda: gate.in_flight == LIMIT and gate.queued == STREAMS - LIMIT,
                         what=lambda: f"in flight {gate.in_flight}, queued {gate.queued}")
        assert list(gate.held.values()) == [LIMIT] and gate.shed_counts == {}
        if kind == "held_body":
            await wait_until(lambda: len(origin.handler.held) == LIMIT)

        client = H2Client(backend.NAME)
        try:
            answers = await asyncio.wait_for(asyncio.gather(*(
                client.request("GET", f"http://127.0.0.1:{proxy.port}/status/204",
                               [("user-agent", "AMF-legit")])
                for _ in range(LEGIT))), 30)
        finally:
            await client.close()
        assert [r.status for r in answers] == [204] * LEGIT
        refused = STREAMS - LIMIT  # the attacker's waiting streams, once the gate was contended
        got = await statuses(reader, STREAMS if kind == "zero_window" else refused)
        assert got.count(429) == refused
        assert gate.in_flight == LIMIT and list(gate.held.values()) == [LIMIT]
        assert gate.shed_counts == {("consumer_cap", 16): refused}
        assert gate.queued == 0
    finally:
        writer.close()
        await proxy.stop()
