"""When a spliced exchange's observer hears ``on_complete``: the engines' completion reports.

The nghttp2 backend tells observers at the event loop's next quiet moment instead of inside
the flush that sent the last frame (``dataplane.engine``, ``report_completions``).  These tests
drive one downstream and one upstream connection by hand (in-memory transports, the peers
played by python-hyper's ``h2``), so that which loop iteration reads what is exact:

* nothing is told inside the flush; the first quiet iteration tells it, in completion order;
* a loop that never goes quiet still tells every observer after ``REPORT_AFTER_BUSY``
  iterations, or as soon as more than ``REPORT_MAX`` wait;
* ``report_completions()`` tells them at once; a connection driven outside a running loop
  is told at once; a probe left on a closed loop does not strand later completions;
* the h2 backend tells observers at once, with the same arguments, in the same order.
"""

from __future__ import annotations

import asyncio
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from dataplane.engine import H2Settings, available_backends, load_backend

nghttp2 = pytest.importorskip("dataplane._nghttp2")

SETTINGS = H2Settings(max_concurrent_streams=1000)


class MemTransport:
    """An asyncio transport that keeps what is written."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.buf += data

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:  # a long read is fed in slices (the rig feeds them all)
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Observer:
    def __init__(self, told: list) -> None:
        self.told = told

    def on_upstream_failed(self, stream_id, error_code, reached) -> None:
        self.told.append(("failed", stream_id, error_code))

    def on_complete(self, stream_id, status, error_code) -> None:
        self.told.append((stream_id, status, error_code))


class Splicer:
    """Splices every request to one upstream connection."""

    def __init__(self) -> None:
        self.upstream = None
        self.told: list = []

    def on_connection_made(self, conn) -> None:
        pass

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        conn.splice(stream_id, self.upstream, headers, Observer(self.told), [])

    def on_stream_reset(self, conn, stream_id, error_code) -> None:
        pass

    def on_connection_lost(self, conn) -> None:
        pass


class Rig:
    """downstream h2 client -> ServerConnection ~ splice ~ ClientConnection -> upstream h2
    server, every byte moved by hand."""

    def __init__(self, backend, handler: Splicer | None = None) -> None:
        self.backend = backend
        self.handler = handler or Splicer()
        self.server = backend.ServerConnection(self.handler, SETTINGS)
        self.down_t = MemTransport()
        self.server.connection_made(self.down_t)
        self.upstream = backend.ClientConnection(SETTINGS)
        self.up_t = MemTransport()
        self.upstream.connection_made(self.up_t)
        self.handler.upstream = self.upstream
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        self.client.initiate_connection()
        self.origin = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.origin.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        self.origin.initiate_connection()
        self.next_sid = 1
        self.responses: dict[int, int] = {}  # downstream stream id -> status
        self.pump()

    def pump(self) -> None:
        """Move bytes until nobody has anything to say; the origin answers each request
        (status from the path ``/NNN``) as soon as it has it whole."""
        for _ in range(100):
            moved = False
            out = self.client.data_to_send()
            if out:
                self.server.data_received(out)
                self.feed_slices()
                self.backend.flush_writes()  # what it sent upstream, without a loop turn
                moved = True
            up = self.up_t.take()
            if up:
                for ev in self.origin.receive_data(up):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[b":path"]
                        status = int(path.rsplit(b"/", 1)[1])
                        self.origin.send_headers(
                            ev.stream_id, [(":status", str(status))], end_stream=True)
                moved = True
            out = self.origin.data_to_send()
            if out:
                self.upstream.data_received(out)
                moved = True
            down = self.down_t.take()
            if down:
                for ev in self.client.receive_data(down):
                    if isinstance(ev, h2.events.ResponseReceived):
                        self.responses[ev.stream_id] = int(dict(ev.headers)[b":status"])
                moved = True
            if not moved:
                return
        raise AssertionError("the rig never settled")

    def feed_slices(self) -> None:
        """A long read's later slices, which the engines leave to later loop iterations, now
        (which iteration tells the observers is what these tests watch, not the reads)."""
        while True:
            if getattr(self.server, "deferred", None) is not None:
                self.server._feed_deferred()
            elif getattr(self.server, "_backlog", None) is not None:
                self.server._feed_backlog()
            else:
                return

    def send(self, *statuses: int) -> list[int]:
        """Requests for these statuses, all written before any is answered."""
        sids = []
        for status in statuses:
            sid = self.next_sid
            self.next_sid += 2
            self.client.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                           (":authority", "nf"), (":path", f"/s/{status}")],
                                     end_stream=True)
            sids.append(sid)
        return sids

    def ping(self) -> None:
        """Traffic that completes nothing: a PING the server reads (and answers)."""
        self.client.ping(b"12345678")
        self.server.data_received(self.client.data_to_send())
        self.backend.flush_writes()
        self.client.receive_data(self.down_t.take())


async def turns(n: int = 1) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _nothing_waiting():
    nghttp2.report_completions()
    yield
    nghttp2.report_completions()


async def test_observers_hear_at_the_first_quiet_iteration_in_completion_order():
    rig = Rig(nghttp2)
    sids = rig.send(200, 404, 503)
    rig.pump()
    # every response went out, and nobody was told inside the flush that sent it
    assert rig.responses == dict(zip(sids, (200, 404, 503), strict=True))
    assert rig.handler.told == []
    assert nghttp2.waiting_completions() == 3
    await turns()  # one iteration in which nothing was read
    assert rig.handler.told == [(sids[0], 200, 0), (sids[1], 404, 0), (sids[2], 503, 0)]
    assert nghttp2.waiting_completions() == 0


async def test_a_busy_loop_still_tells_after_report_after_busy_iterations():
    rig = Rig(nghttp2)
    (sid,) = rig.send(200)
    rig.pump()
    busy = nghttp2.REPORT_AFTER_BUSY
    for i in range(busy):
        rig.ping()  # something read in every iteration: never quiet
        assert rig.handler.told == [], f"told after {i} busy iterations"
        await turns()
    assert rig.handler.told == [(sid, 200, 0)]


async def test_more_than_report_max_waiting_are_told_without_a_quiet_moment():
    rig = Rig(nghttp2)
    n = nghttp2.REPORT_MAX + 1
    sids = rig.send(*([200] * n))
    rig.pump()
    assert len(rig.responses) == n and nghttp2.waiting_completions() == n
    rig.ping()  # the next look finds the loop busy, but too many waiting
    await turns()
    assert [t[0] for t in rig.handler.told] == sids


async def test_quiet_iterations_tell_report_chunk_at_a_time():
    rig = Rig(nghttp2)
    chunk = nghttp2.REPORT_CHUNK
    rig.send(*([200] * (chunk + 5)))
    rig.pump()
    await turns()
    assert len(rig.handler.told) == chunk
    await turns()
    assert len(rig.handler.told) == chunk + 5


class _WatchingSplicer(Splicer):
    """Keeps each request's ``:path`` field (the tuple the engine submits uncopied)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[bytes, bytes]] = []

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        self.fields.append(next(f for f in headers if f[0] == b":path"))
        super().on_request(conn, stream_id, headers, end_stream)


async def test_a_waiting_stream_has_let_go_of_its_header_fields():
    """While it waits for its report, a finished stream holds no more than the report needs:
    the request fields it submitted uncopied (and its buffers and rcbufs) are let go of."""
    rig = Rig(nghttp2, _WatchingSplicer())
    rig.send(200, 200)
    rig.pump()
    assert len(rig.responses) == 2 and nghttp2.waiting_completions() == 2
    # held by the test's list, the loop variable and getrefcount's argument: nobody else
    # (before the stream lets go, its tuple of fields submitted uncopied makes it 4)
    assert [sys.getrefcount(f) for f in rig.handler.fields] == [3, 3]
    await turns()
    assert len(rig.handler.told) == 2


async def test_report_completions_tells_everyone_now():
    rig = Rig(nghttp2)
    sids = rig.send(201, 202)
    rig.pump()
    assert rig.handler.told == []
    assert nghttp2.report_completions() == 2
    assert rig.handler.told == [(sids[0], 201, 0), (sids[1], 202, 0)]
    assert nghttp2.report_completions() == 0


def test_a_connection_driven_outside_a_running_loop_is_told_at_once():
    loop = asyncio.new_event_loop()  # the client connection's ready future needs one set
    asyncio.set_event_loop(loop)
    try:
        rig = Rig(nghttp2)
        (sid,) = rig.send(200)
        rig.pump()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert rig.handler.told == [(sid, 200, 0)]
    assert nghttp2.waiting_completions() == 0


def test_a_probe_left_on_a_closed_loop_does_not_strand_later_completions():
    async def complete_one(rig: Rig) -> None:
        rig.send(200)
        rig.pump()

    async def complete_one_and_stop(rig: Rig) -> None:
        await complete_one(rig)
        asyncio.get_running_loop().stop()  # ends this iteration: the probe it armed never runs

    first_loop = asyncio.new_event_loop()
    rig1 = first_loop.run_until_complete(_rig_and(complete_one_and_stop))
    first_loop.close()
    assert rig1.handler.told == [] and nghttp2.waiting_completions() == 1

    async def second() -> Rig:
        rig2 = await _rig_and(complete_one)
        await turns()
        return rig2

    second_loop = asyncio.new_event_loop()
    try:
        rig2 = second_loop.run_until_complete(second())
    finally:
        second_loop.close()
    # the new loop's probe told both: the stranded one first
    assert len(rig1.handler.told) == 1 and len(rig2.handler.told) == 1
    assert nghttp2.waiting_completions() == 0


async def _rig_and(step) -> Rig:
    rig = Rig(nghttp2)
    await step(rig)
    return rig


@pytest.mark.skipif("h2" not in available_backends(), reason="pure backend not importable")
async def test_both_backends_tell_the_same_things_in_the_same_order():
    statuses = (200, 204, 404, 500, 503, 201)
    told = {}
    for name in ("nghttp2", "h2"):
        backend = load_backend(name)
        rig = Rig(backend)
        rig.send(*statuses[:3])
        rig.pump()
        rig.send(*statuses[3:])
        rig.pump()
        backend.report_completions()
        assert backend.waiting_completions() == 0
        told[name] = rig.handler.told
    assert told["nghttp2"] == told["h2"]
    assert [t[1] for t in told["h2"]] == list(statuses)


# ---- the gateway: a metrics scrape and a stop tell every waiting observer first ---------------


async def test_a_metrics_scrape_counts_every_request_answered_before_it():
    """The scrape reports the engine's waiting completions before it reads the counters: a
    completion made waiting right before it (no loop turn in between) is told, and the
    counters hold every request the clients got an answer to."""
    from dataplane.client import H2Client
    from gateway.app import Gateway
    from gateway.config import parse_config
    from tests.conftest import start_origin

    origin = await start_origin(nghttp2)
    gw = Gateway(parse_config({
        "gateway": {"name": "reports", "backend": "nghttp2", "workers": 1},
        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0, "protocol": "h2c"}],
        "clusters": [{"name": "o", "endpoints": [{"host": "127.0.0.1", "port": origin.port}]}],
        "routes": [{"name": "all", "match": {"path_prefix": "/"}, "cluster": "o"}],
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }))
    await gw.start()
    client = H2Client("nghttp2")
    try:
        port = gw.ports["sbi"]
        got = await asyncio.gather(*[
            client.request("GET", f"http://127.0.0.1:{port}/status/201") for _ in range(40)])
        assert [r.status for r in got] == [201] * 40
        rig = Rig(nghttp2)  # one more exchange, finished and waiting, in this very turn
        rig.send(200)
        rig.pump()
        assert rig.handler.told == []
        body = (await gw._metrics._body()).decode()
        assert len(rig.handler.told) == 1
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                      if line.startswith("nfmesh_requests_total{") and 'status="201"' in line)
        assert counted == 40
    finally:
        client.close()
        await gw.stop(drain=False)
        await origin.stop()
    assert nghttp2.waiting_completions() == 0


async def test_metrics_server_runs_before_scrape_before_making_the_body():
    from prometheus_client import CollectorRegistry, Gauge

    from gateway.metrics import MetricsServer

    reg = CollectorRegistry()
    g = Gauge("nfmesh_test_value", "set by the hook", registry=reg)
    server = MetricsServer(reg, before_scrape=lambda: g.set(7))
    assert b"nfmesh_test_value 7.0" in await server._body()
