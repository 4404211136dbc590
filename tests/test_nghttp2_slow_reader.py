"""A client that does not read (issue 13, per-stream memory): on the nghttp2 backend a spliced
stream's response bytes held for a client with a zero window are bounded by the window the
upstream side opens to the producer (H2Settings.relay_stream_buffer per stream, beyond 16 KiB
per stream only within relay_connection_buffer per downstream connection), and the upstream
connection is not stalled for others meanwhile.  When the client opens its windows every
response arrives whole.  Real sockets, a real origin (the engine's own), a raw client."""

from __future__ import annotations

import asyncio
import hashlib
import struct

import hpack
import pytest

from dataplane.engine import H2Settings
from tests.conftest import start_origin
from tests.h2_frames import read_bodies
from tests.nghttp2_rig import nghttp2, request, start_splice_proxy, stop_splice_proxy
from tests.test_rfc9113_errors import (
    ACK,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PREFACE,
    WINDOW,
    frame,
    settings,
)
from tests.waiting import wait_until

SIZE = 1 << 20
STREAMS = 100
RELAY = H2Settings()  # the defaults under test: 64 KiB per stream, 1 MiB per connection
BASE = min(16384, RELAY.relay_stream_buffer)
CAP = STREAMS * BASE + RELAY.relay_connection_buffer


def expected_body() -> bytes:
    return bytes(i % 251 for i in range(SIZE))


def get(sid: int, enc: hpack.Encoder) -> bytes:
    return frame(HEADERS, END_HEADERS | END_STREAM, sid, enc.encode(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"o"),
         (b":path", f"/download?size={SIZE}".encode())]))


@pytest.fixture
async def rig():
    origin = await start_origin("nghttp2", settings=H2Settings())
    server, port, proxy = await start_splice_proxy(nghttp2, origin.port, settings=RELAY)
    yield port, proxy
    await stop_splice_proxy(server, proxy)
    await origin.stop()


async def test_zero_window_client_holds_bounded_bytes_then_gets_everything(rig):
    port, proxy = rig
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        enc = hpack.Encoder()
        writer.write(PREFACE + settings((4, 0)) + settings(flags=ACK)
                     + b"".join(get(1 + 2 * i, enc) for i in range(STREAMS)))
        (down,) = proxy.connections
        # the producer fills every window it was given: the base of each stream, and the
        # grants beyond it up to the connection's budget
        await wait_until(lambda: down.buffered_bytes >= CAP, what="the relay buffers to fill")
        assert down.buffered_bytes == CAP  # the bound: streams x 16 KiB + 1 MiB
        assert down.relay_granted == RELAY.relay_connection_buffer
        assert down.peak_buffered <= RELAY.relay_stream_buffer
        # the upstream connection is shared: it still serves another client meanwhile
        status, _, body, _, err = await request(nghttp2, port, "GET", "/download?size=200000")
        assert (status, err, len(body)) == (200, None, 200000)
        assert down.buffered_bytes == CAP  # and the non-reader got nothing more
        # the client opens its windows: every response arrives whole
        writer.write(settings((4, 2**31 - 1))
                     + frame(WINDOW, 0, 0, struct.pack(">I", 2**31 - 1 - 65535)))
        bodies = await read_bodies(reader, [1 + 2 * i for i in range(STREAMS)])
        want = hashlib.sha256(expected_body()).digest()
        assert all(hashlib.sha256(b).digest() == want for b in bodies.values())
        await wait_until(lambda: down.relay_granted == 0, what="the grants to be given back")
    finally:
        writer.close()
