"""A client that does not read (issue 13, per-stream memory), h2 backend, through the real
proxy: the response bytes held for a spliced stream whose client has a zero window are bounded
by the window the upstream side opens to the producer (a 16 KiB base per stream; up to
H2Settings.relay_stream_buffer per stream within relay_connection_buffer per downstream
connection), the shared upstream connection still serves others (its connection window is
handed back on arrival), and once the client opens its windows every response arrives whole."""

from __future__ import annotations

import asyncio
import hashlib
import struct

import pytest

from dataplane.client import H2Client
from dataplane.engine import H2Settings, load_backend
from tests.conftest import StaticRouter, start_origin, start_proxy
from tests.h2_frames import WINDOW_UPDATE, frame, get_requests, greeting, read_bodies
from tests.waiting import wait_until

SIZE = 1 << 20
STREAMS = 100
RELAY = H2Settings()  # the defaults under test: 64 KiB per stream, 1 MiB per connection
BASE = min(16384, RELAY.relay_stream_buffer)
CAP = STREAMS * BASE + RELAY.relay_connection_buffer


@pytest.fixture
async def rig():
    h2b = load_backend("h2")
    origin = await start_origin(h2b)
    proxy = await start_proxy(h2b, StaticRouter(origin.endpoint), settings=RELAY)
    yield proxy
    await proxy.stop()
    await origin.stop()


async def test_zero_window_client_holds_bounded_bytes_then_gets_everything(rig):
    proxy = rig
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(greeting((4, 0))
                     + get_requests(STREAMS, f"/download?size={SIZE}".encode()))
        await wait_until(lambda: len(proxy.handler.connections) == 1)
        (down,) = proxy.handler.connections
        # the producer fills every window it was given: the base of each stream, and the
        # grants beyond it up to the connection's budget
        await wait_until(lambda: down.buffered_bytes >= CAP, what="the relay buffers to fill")
        assert down.buffered_bytes == CAP  # the bound: streams x 16 KiB + 1 MiB
        assert down.relay_granted == RELAY.relay_connection_buffer
        assert down.peak_buffered <= RELAY.relay_stream_buffer
        # the upstream connection is shared: it still serves another client meanwhile
        client = H2Client("h2")
        try:
            resp = await asyncio.wait_for(client.request(
                "GET", f"http://127.0.0.1:{proxy.port}/download?size=200000"), 30)
        finally:
            await client.close()
        assert (resp.status, len(resp.body)) == (200, 200000)
        assert down.buffered_bytes == CAP  # and the non-reader got nothing more
        # the client opens its windows: every response arrives whole
        writer.write(frame(4, 0, 0, struct.pack(">HI", 4, 2**31 - 1))
                     + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65535)))
        bodies = await read_bodies(reader, [1 + 2 * i for i in range(STREAMS)])
        want = hashlib.sha256(bytes(i % 251 for i in range(SIZE))).digest()
        assert all(hashlib.sha256(b).digest() == want for b in bodies.values())
        assert down.peak_buffered <= RELAY.relay_stream_buffer
        await wait_until(lambda: down.relay_granted == 0, what="the grants to be given back")
    finally:
        writer.close()
