"""Admission through the real proxy, on both HTTP/2 backends and both proxy twins: the wait
queue's priority order, a queued request that reaches its deadline is answered 504 and never
forwarded, a client that gives up while queued frees its place, refusals are ProblemDetails,
a forwarded request carries the time that is left (re-stamped headers), and a client that does
not read its responses holds no producer slot once the producer has answered, and a client that
keeps sending past its consumer's 429s has its connection ended (GOAWAY ENHANCE_YOUR_CALM)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import hpack
import pytest

from dataplane.admission import AdmissionController, AdmissionSettings
from dataplane.client import H2Client
from dataplane.engine import ErrorCode, H2Settings
from dataplane.routing import Forward
from nf_adapters import sbi_headers as sh
from nf_adapters.overload_control import Restamp
from nf_adapters.scp_router import ScpRouter
from tests.conftest import header, start_origin, start_proxy
from tests.h2_frames import HEADERS, frame, greeting, read_until_eof, request_block
from tests.waiting import wait_until


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


class PriorityRouter:
    """Everything to the origin; ``x-prio`` is the priority, ``x-timeout`` the deadline."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint

    def route(self, headers, peer):
        h = dict(headers)
        timeout = float(h[b"x-timeout"]) if b"x-timeout" in h else None
        return Forward(self.endpoint, list(headers), cluster="test", timeout=timeout,
                       priority=int(h.get(b"x-prio", b"-1")))


def one_at_a_time(**kw) -> AdmissionController:
    base = dict(initial_limit=1, min_limit=1, max_limit=1, reserved_share=0.0,
                consumer_rate_per_s=0.0, probe_interval_s=1e9, queue_target_s=5.0,
                queue_interval_s=10.0)
    base.update(kw)
    return AdmissionController(AdmissionSettings(**base))


def request(port: int, path: str, *extra: tuple[bytes, bytes]):
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", f"127.0.0.1:{port}".encode()),
            (b":path", path.encode()), *extra]


async def open_client(backend, port: int):
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: backend.ClientConnection(H2Settings()),
                                           "127.0.0.1", port)
    await conn.ready
    return conn


def send(conn, headers) -> tuple[asyncio.Future, int]:
    fut = asyncio.get_running_loop().create_future()
    sid = conn.request(headers, None, lambda *a: fut.done() or fut.set_result(a))
    return fut, sid


async def test_queue_releases_by_priority(backend, origin):
    adm = one_at_a_time()
    proxy = await start_proxy(backend, PriorityRouter(origin.endpoint), admission=adm)
    conn = await open_client(backend, proxy.port)
    try:
        first, _ = send(conn, request(proxy.port, "/hold", (b"x-prio", b"16")))
        await wait_until(lambda: len(origin.handler.held) == 1)
        waiting = [send(conn, request(proxy.port, "/hold", (b"x-prio", p)))[0]
                   for p in (b"28", b"16", b"2")]
        await wait_until(lambda: adm.gates and next(iter(adm.gates.values())).queued == 3)
        seen = []
        for _ in range(4):
            oconn, sid = origin.handler.held.pop(0)
            got = origin.handler.requests[-1]
            seen.append(header(got, b"x-prio"))
            oconn.respond(sid, 200, [], b"done")
            if len(seen) < 4:
                await wait_until(lambda: len(origin.handler.held) == 1)
        assert seen == [b"16", b"2", b"16", b"28"]
        for fut in [first, *waiting]:
            status = (await asyncio.wait_for(fut, 5))[0]
            assert status == 200
    finally:
        conn.close()
        await proxy.stop()


async def test_queued_request_past_its_deadline_is_504_and_never_forwarded(backend, origin):
    adm = one_at_a_time()
    proxy = await start_proxy(backend, PriorityRouter(origin.endpoint), admission=adm)
    conn = await open_client(backend, proxy.port)
    try:
        first, _ = send(conn, request(proxy.port, "/hold", (b"x-prio", b"16")))
        await wait_until(lambda: len(origin.handler.held) == 1)
        late, _ = send(conn, request(proxy.port, "/hold", (b"x-prio", b"3"),
                                     (b"x-timeout", b"0.2")))
        status, headers, body, _trailers, _err = await asyncio.wait_for(late, 5)
        assert status == 504
        assert header(headers, b"content-type") == b"application/problem+json"
        assert json.loads(body)["cause"] == "TIMED_OUT_REQUEST"
        oconn, sid = origin.handler.held.pop(0)
        oconn.respond(sid, 200, [], b"done")
        assert (await asyncio.wait_for(first, 5))[0] == 200
        assert len(origin.handler.requests) == 1  # the late one never reached the producer
        gate = next(iter(adm.gates.values()))
        assert gate.queued == 0 and gate.in_flight == 0
    finally:
        conn.close()
        await proxy.stop()


async def test_client_gone_while_queued_is_never_forwarded(backend, origin):
    if not hasattr(backend.ClientConnection, "reset_stream"):
        pytest.skip(f"the {backend.NAME} client connection cannot reset one stream")
    adm = one_at_a_time()
    proxy = await start_proxy(backend, PriorityRouter(origin.endpoint), admission=adm)
    conn = await open_client(backend, proxy.port)
    try:
        first, _ = send(conn, request(proxy.port, "/hold", (b"x-prio", b"16")))
        await wait_until(lambda: len(origin.handler.held) == 1)
        _gone, sid = send(conn, request(proxy.port, "/hold", (b"x-prio", b"2")))
        nxt, _ = send(conn, request(proxy.port, "/status/204", (b"x-prio", b"20")))
        await wait_until(lambda: adm.gates and next(iter(adm.gates.values())).queued == 2)
        gate = next(iter(adm.gates.values()))
        conn.reset_stream(sid, ErrorCode.CANCEL)
        await wait_until(lambda: gate.queued == 1)
        oconn, osid = origin.handler.held.pop(0)
        oconn.respond(osid, 200, [], b"done")
        assert (await asyncio.wait_for(nxt, 5))[0] == 204
        paths = [header(r, b":path") for r in origin.handler.requests]
        assert paths == [b"/hold", b"/status/204"]
        assert (await asyncio.wait_for(first, 5))[0] == 200
    finally:
        conn.close()
        await proxy.stop()


async def test_refusal_is_a_problem_and_the_top_band_gets_through(backend, origin):
    adm = one_at_a_time(queue_max=1)
    proxy = await start_proxy(backend, PriorityRouter(origin.endpoint), admission=adm)
    conn = await open_client(backend, proxy.port)
    try:
        first, _ = send(conn, request(proxy.port, "/hold", (b"x-prio", b"16")))
        await wait_until(lambda: len(origin.handler.held) == 1)
        low, _ = send(conn, request(proxy.port, "/status/204", (b"x-prio", b"28")))
        await wait_until(lambda: next(iter(adm.gates.values())).queued == 1)
        high, _ = send(conn, request(proxy.port, "/status/204", (b"x-prio", b"1")))
        status, headers, body, _t, _e = await asyncio.wait_for(low, 5)
        assert status == 503 and json.loads(body)["cause"] == "NF_CONGESTION"
        assert header(headers, b"content-type") == b"application/problem+json"
        oconn, osid = origin.handler.held.pop(0)
        oconn.respond(osid, 200, [], b"done")
        assert (await asyncio.wait_for(high, 5))[0] == 204
        assert (await asyncio.wait_for(first, 5))[0] == 200
    finally:
        conn.close()
        await proxy.stop()


async def test_a_client_that_does_not_read_holds_no_producer_slot(backend, origin):
    """One slot; a client with a zero window GETs three 1 MiB bodies it never reads: each slot
    goes back at the producer's response headers, so all three reach the producer one after
    another, and another client is answered at once while their bodies still wait."""
    adm = one_at_a_time()
    proxy = await start_proxy(backend, PriorityRouter(origin.endpoint), admission=adm,
                              settings=H2Settings(report_response_stall=True))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    conn = await open_client(backend, proxy.port)
    try:
        enc = hpack.Encoder()
        writer.write(greeting((0x4, 0)) + b"".join(  # SETTINGS_INITIAL_WINDOW_SIZE = 0
            frame(HEADERS, 0x5, sid, request_block(enc, b"/download?size=1048576"))
            for sid in (1, 3, 5)))
        await wait_until(lambda: len(origin.handler.requests) == 3)
        gate = next(iter(adm.gates.values()))
        await wait_until(lambda: gate.in_flight == 0)
        down = next(c for c in proxy.handler.connections if c.buffered_bytes > 0)
        fut, _ = send(conn, request(proxy.port, "/status/204"))
        assert (await asyncio.wait_for(fut, 5))[0] == 204
        assert down.buffered_bytes > 0  # the non-reader's bodies are still held
        assert gate.queued == 0 and gate.in_flight == 0
    finally:
        writer.close()
        conn.close()
        await proxy.stop()


class OneConsumerRouter(PriorityRouter):
    def route(self, headers, peer):
        fwd = super().route(headers, peer)
        fwd.consumer = "amf-1"
        return fwd


async def test_a_client_that_keeps_sending_past_its_429s_is_cut(backend, origin):
    """A consumer over its request rate gets 429s; each is charged to its connection's
    refused-stream budget, so the gateway answers at most that many before GOAWAY."""
    budget = 5
    adm = one_at_a_time(consumer_rate_per_s=0.001, consumer_burst=1.0)
    proxy = await start_proxy(backend, OneConsumerRouter(origin.endpoint), admission=adm,
                              settings=H2Settings(max_refused_streams_per_second=budget))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        enc = hpack.Encoder()
        writer.write(greeting() + b"".join(
            frame(HEADERS, 0x5, 1 + 2 * i, request_block(enc, b"/status/204"))
            for i in range(50)))
        got = await read_until_eof(reader, timeout=10)
    finally:
        writer.close()
    assert got.goaway == [ErrorCode.ENHANCE_YOUR_CALM]
    assert len(origin.handler.requests) <= 1  # the one token (the cut may come first)
    # at most the 204 and the budget's 429s (+ 1); nghttp2 drops the answers not yet sent
    assert len(got.headers) <= 2 + budget
    await proxy.stop()


async def test_forwarded_request_carries_the_time_left(backend, origin):
    router = ScpRouter()
    proxy = await start_proxy(backend, router, admission=one_at_a_time(), restamp=Restamp())
    client = H2Client(backend.NAME)
    try:
        sent = time.time() - 0.1  # the consumer sent it 100 ms ago
        stamp = sh.format_sender_timestamp(dt.datetime.fromtimestamp(sent, dt.UTC))
        # what the test itself saw pass bounds what the hop may take off: no speed assumed
        before = time.time()
        resp = await client.request(
            "GET", f"http://127.0.0.1:{proxy.port}/headers",
            [("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}"),
             ("3gpp-sbi-max-rsp-time", "500"), ("3gpp-sbi-sender-timestamp", stamp.decode()),
             ("3gpp-sbi-message-priority", "5"), ("user-agent", "AMF-1")])
        after = time.time()
        assert resp.status == 200
        got = {k: v for k, v in resp.json()}
        left = int(got["3gpp-sbi-max-rsp-time"])
        # 500 ms less what was spent when the proxy forwarded it: at least the 100 ms before
        # the test sent it, at most all the time until the answer came back (the timestamp's
        # and the header's whole milliseconds are truncated: 2 ms of slack below)
        assert 500 - (after - sent) * 1000 - 2 <= left <= 500 - (before - sent) * 1000 + 1
        restamped = sh.parse_sender_timestamp(got["3gpp-sbi-sender-timestamp"]).timestamp()
        assert restamped > sent + 0.05
        assert got["3gpp-sbi-message-priority"] == "5"
        bad = await client.request(
            "GET", f"http://127.0.0.1:{proxy.port}/headers",
            [("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}"),
             ("3gpp-sbi-message-priority", "32")])
        assert bad.status == 400 and bad.json()["cause"] == "OPTIONAL_IE_INCORRECT"
        assert len(origin.handler.requests) == 1
    finally:
        client.close()
        await proxy.stop()


class OciOrigin:
    """A producer that puts the given overload/load headers on every answer."""

    def __init__(self, extra: list) -> None:
        self.extra = extra
        self.on = False  # the headers go out only once this is set
        self.requests = 0
        self.connections: list = []

    def on_connection_made(self, conn) -> None:
        self.connections.append(conn)

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        self.requests += 1
        conn.respond(stream_id, 200, list(self.extra) if self.on else [], b"{}")

    def on_stream_reset(self, conn, stream_id, error_code) -> None:
        pass

    def on_connection_lost(self, conn) -> None:
        pass


async def test_producer_oci_is_relayed_and_sheds_lowest_priority_first(backend):
    from dataplane.listener import serve
    from gateway.overload import OverloadProtection

    inst = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64"
    when = dt.datetime.now(dt.UTC)
    oci = sh.format_oci([sh.OverloadControl(when, 60, 50, sh.ControlScope("NF-Instance", inst))])
    handler = OciOrigin([(b"3gpp-sbi-oci", oci), (b"3gpp-sbi-lci", b"not an lci")])
    server = await serve("127.0.0.1", 0, lambda: handler, backend, H2Settings())
    port = server.sockets[0].getsockname()[1]

    from gateway.config import Config
    protection = OverloadProtection.from_config(Config())
    settings = protection.h2_settings(H2Settings())
    assert settings.tap_response_headers  # the engine taps 3gpp-sbi-oci / -lci
    from dataplane.routing import Endpoint

    proxy = await start_proxy(backend, PriorityRouter(Endpoint("127.0.0.1", port)), settings,
                              **protection.proxy_kwargs())
    conn = await open_client(backend, proxy.port)
    mix = (b"2", b"16", b"16", b"16", b"16", b"16", b"16", b"28", b"28", b"28")
    try:
        for prio in mix * 5:  # the gate learns the priority mix of the traffic
            fut, _ = send(conn, request(proxy.port, "/x", (b"x-prio", prio)))
            assert (await asyncio.wait_for(fut, 5))[0] == 200
        handler.on = True
        first, _ = send(conn, request(proxy.port, "/x", (b"x-prio", b"16")))
        status, headers, _body, _t, _e = await asyncio.wait_for(first, 5)
        assert status == 200
        assert header(headers, b"3gpp-sbi-oci") == oci  # valid: relayed
        assert header(headers, b"3gpp-sbi-lci") is None  # malformed: dropped
        assert protection.responses.malformed["lci"] == 1
        gate = next(iter(protection.controller.gates.values()))
        assert gate.shed_fraction == pytest.approx(0.5)
        results: dict[bytes, list[int]] = {b"2": [], b"16": [], b"28": []}
        for _ in range(20):
            for prio in mix:
                fut, _ = send(conn, request(proxy.port, "/x", (b"x-prio", prio)))
                results[prio].append((await asyncio.wait_for(fut, 5))[0])
        assert set(results[b"2"]) == {200}  # the top band untouched
        assert set(results[b"28"]) == {503}  # lowest first
        ok16 = results[b"16"].count(200)
        assert 0 < ok16 < len(results[b"16"])  # the rest of the 50% from the next priority
        total_ok = sum(r.count(200) for r in results.values())
        assert 0.35 <= total_ok / 200 <= 0.65
    finally:
        conn.close()
        await proxy.stop()
        server.close()
        for c in handler.connections:
            c.close()


async def test_failing_producer_is_ejected_and_skipped(backend, origin):
    from tests.conftest import StaticRouter

    bad = await start_origin(backend, name="bad")
    bad.handler.reset_all = int(ErrorCode.INTERNAL_ERROR)
    adm = AdmissionController(AdmissionSettings(consecutive_failures=3, base_ejection_s=60.0,
                                                max_ejected_share=0.5))
    router = StaticRouter(bad.endpoint, [origin.endpoint], retryable=True)
    proxy = await start_proxy(backend, router, admission=adm)
    client = H2Client(backend.NAME)
    try:
        for _ in range(3):  # each reaches the bad producer, then its alternate answers
            resp = await client.request("GET", f"http://127.0.0.1:{proxy.port}/hello")
            assert resp.status == 200 and resp.body == b"ok origin"
        assert len(bad.handler.requests) == 3
        assert adm.ejected(bad.endpoint)
        for _ in range(5):  # ejected: the alternate is chosen first
            resp = await client.request("GET", f"http://127.0.0.1:{proxy.port}/hello")
            assert resp.status == 200
        assert len(bad.handler.requests) == 3
        assert adm.retries_in_flight == 0
    finally:
        client.close()
        await proxy.stop()
        await bad.stop()


class _Waiting:
    """An exchange in the proxy's ``_connecting`` (queued, or awaiting its upstream connect)
    whose cancel, like a real one, hands its slot on: admission's pump then answers ``other``
    (which drops it from ``_connecting``, as ``refused`` and ``admitted`` do)."""

    def __init__(self, proxy, other=None) -> None:
        self.proxy, self.other, self.cancels = proxy, other, 0

    def cancel(self, error_code) -> None:
        self.cancels += 1
        if self.other is not None:
            key, ex = self.other
            self.proxy._connecting.pop(key, None)
            ex.cancel(error_code)


async def test_connection_lost_cancels_each_waiting_exchange_once(backend, origin):
    """When the first cancel answers another exchange of the same connection, the sweep
    over the connection's exchanges goes on (it stopped with a KeyError, leaving the rest
    holding their admission slots until the gateway restarted)."""
    running = await start_proxy(backend, PriorityRouter(origin.endpoint))
    proxy = running.handler
    try:
        conn = object()
        second = _Waiting(proxy)
        third = _Waiting(proxy)
        first = _Waiting(proxy, ((id(conn), 3), second))
        proxy._connecting.update({(id(conn), 1): first, (id(conn), 3): second,
                                  (id(conn), 5): third, (0, 1): _Waiting(proxy)})
        proxy.on_connection_lost(conn)
        assert (first.cancels, second.cancels, third.cancels) == (1, 1, 1)
        assert list(proxy._connecting) == [(0, 1)]  # another connection's is untouched
        proxy._connecting.clear()
    finally:
        await running.stop()
