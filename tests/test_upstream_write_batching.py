"""Upstream writes wait for the end of the loop iteration while downstream reads are handled.

In the nghttp2 backend, what handling a downstream read sends upstream (spliced requests,
their DATA) is written when the event loop iteration ends, so that requests read from many
client connections in one iteration go upstream in one write.  Driven by hand over in-memory
transports (``tests.test_completion_reports``), the peers played by python-hyper's ``h2``:

* three downstream connections read in one iteration: one upstream write with all three;
* an upstream connection's own reads, and connections outside a running loop, write at once;
* ``flush_writes()`` writes what is held; a flush left on a stopped loop strands nothing.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import pytest

from tests.test_completion_reports import SETTINGS, MemTransport, Splicer

nghttp2 = pytest.importorskip("dataplane._nghttp2")


class CountingTransport(MemTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def request_bytes(path: str) -> bytes:
    """A client connection's first bytes: preface, SETTINGS and one GET."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "nf"),
                       (":path", path)], end_stream=True)
    return c.data_to_send()


def requests_in(data: bytes) -> list[bytes]:
    """The paths of the requests an upstream peer finds in ``data``."""
    origin = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    origin.initiate_connection()
    return [dict(ev.headers)[b":path"] for ev in origin.receive_data(data)
            if isinstance(ev, h2.events.RequestReceived)]


def wire(n: int) -> tuple[Splicer, CountingTransport, list]:
    handler = Splicer()
    handler.upstream = nghttp2.ClientConnection(SETTINGS)
    up_t = CountingTransport()
    handler.upstream.connection_made(up_t)  # its preface and SETTINGS go at once
    servers = []
    for _ in range(n):
        server = nghttp2.ServerConnection(handler, SETTINGS)
        server.connection_made(MemTransport())
        servers.append(server)
    return handler, up_t, servers


async def test_requests_read_from_many_connections_in_one_iteration_go_up_in_one_write():
    handler, up_t, servers = wire(3)
    preface = up_t.take()
    before = up_t.writes
    for i, server in enumerate(servers):
        server.data_received(request_bytes(f"/r{i}"))
    assert up_t.writes == before  # held for the end of the iteration
    await asyncio.sleep(0)
    assert up_t.writes == before + 1
    assert requests_in(preface + up_t.take()) == [b"/r0", b"/r1", b"/r2"]


async def test_flush_writes_writes_what_is_held_now():
    handler, up_t, servers = wire(1)
    preface = up_t.take()
    servers[0].data_received(request_bytes("/now"))
    assert up_t.buf == b""
    nghttp2.flush_writes()
    assert requests_in(preface + up_t.take()) == [b"/now"]


async def test_an_upstream_connections_own_reads_answer_at_once():
    handler, up_t, servers = wire(0)
    origin = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    origin.initiate_connection()
    origin.receive_data(up_t.take())  # our preface and SETTINGS
    handler.upstream.data_received(origin.data_to_send())  # the peer's SETTINGS (and ACK)
    acks = [ev for ev in origin.receive_data(up_t.take())
            if isinstance(ev, h2.events.SettingsAcknowledged)]
    assert acks  # our ACK went without a loop turn


def test_outside_a_running_loop_nothing_is_held():
    loop = asyncio.new_event_loop()  # the client connection's ready future needs one set
    asyncio.set_event_loop(loop)
    try:
        handler, up_t, servers = wire(1)
        preface = up_t.take()
        servers[0].data_received(request_bytes("/hand"))
        assert requests_in(preface + up_t.take()) == [b"/hand"]
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_a_flush_left_on_a_stopped_loop_strands_nothing():
    async def read_one(path: str, stop: bool):
        handler, up_t, servers = wire(1)
        preface = up_t.take()
        servers[0].data_received(request_bytes(path))
        if stop:
            asyncio.get_running_loop().stop()  # ends this iteration: the flush never runs
        else:
            await asyncio.sleep(0)
        return up_t, preface

    first = asyncio.new_event_loop()
    up1, pre1 = first.run_until_complete(read_one("/first", True))
    first.close()
    assert up1.buf == b""
    second = asyncio.new_event_loop()
    try:
        up2, pre2 = second.run_until_complete(read_one("/second", False))
    finally:
        second.close()
    assert requests_in(pre1 + up1.take()) == [b"/first"]
    assert requests_in(pre2 + up2.take()) == [b"/second"]


def test_a_connection_whose_loop_has_closed_writes_at_once():
    async def made():
        return wire(1)

    loop = asyncio.new_event_loop()
    handler, up_t, servers = loop.run_until_complete(made())
    loop.close()  # the downstream connection keeps it as its loop
    asyncio.set_event_loop(asyncio.new_event_loop())  # ClientConnection futures need one
    try:
        preface = up_t.take()
        servers[0].data_received(request_bytes("/late"))
        assert requests_in(preface + up_t.take()) == [b"/late"]
    finally:
        asyncio.get_event_loop().close()
        asyncio.set_event_loop(None)
