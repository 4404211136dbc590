"""The pure-Python engine's lazy session (issue 13, idle-connection memory): a downstream
connection whose client has sent only the preface, SETTINGS and SETTINGS ACKs has no h2
``H2Connection`` (~15 KiB); it answers the handshake itself and the session, made at the first
other frame, parses the kept bytes first.  None of it may show on the wire: one server SETTINGS,
one WINDOW_UPDATE, one ACK per client SETTINGS, the client's values in force; and 200 idle
connections hold no session.  What an idle connection costs is measured by
``nfmesh perf abuse --cases idle_connections`` (perf/), not asserted here."""

from __future__ import annotations

import asyncio
import socket
import struct

import hpack
import pytest

from dataplane.engine import H2Settings, load_backend
from tests.conftest import start_origin
from tests.h2_frames import (
    DATA,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    WINDOW_UPDATE,
    RawPeer,
    frame,
    request_block,
    settings,
)
from tests.waiting import wait_until


@pytest.fixture
async def origin():
    running = await start_origin(load_backend("h2"), settings=H2Settings())
    yield running
    await running.stop()


def is_ack(f) -> bool:
    return f[0] == SETTINGS and f[1] & 1


async def test_handshake_without_a_session_then_a_request(origin):
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    peer = RawPeer(reader, writer)
    try:
        writer.write(PREFACE + settings((4, 100), (5, 20000)))  # INITIAL_WINDOW_SIZE 100
        await peer.until(is_ack)
        writer.write(settings((1, 0)))  # a second SETTINGS while dormant
        await peer.until(is_ack)
        writer.write(settings(ack=True))
        await wait_until(lambda: origin.handler.connections)
        conn = origin.handler.connections[0]
        assert conn._h2 is None  # answered without a session so far
        writer.write(frame(PING, 0, 0, b"12345678"))
        pong = await peer.until(lambda f: f[0] == PING)
        assert pong[1] & 1 and pong[3] == b"12345678"
        assert conn._h2 is not None
        writer.write(frame(HEADERS, 0x5, 1, request_block(hpack.Encoder(),
                                                          b"/download?size=1000")))
        body = b""
        while True:
            _t, flags, _sid, payload = await peer.until(lambda f: f[0] == DATA and f[2] == 1)
            assert len(payload) <= 100  # the client's INITIAL_WINDOW_SIZE, kept while dormant
            body += payload
            if flags & 1:
                break
            writer.write(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", len(payload)))
                         + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload))))
        assert body == bytes(i % 251 for i in range(1000))
        # the first output was sent once, each client SETTINGS acknowledged once
        assert peer.count(SETTINGS, 0) == 1
        assert peer.count(SETTINGS, 1) == 2
        assert peer.count(WINDOW_UPDATE) == 1
    finally:
        writer.close()


async def test_idle_connections_hold_no_session(origin):
    loop = asyncio.get_running_loop()
    n = 200
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", origin.port))
            await loop.sock_sendall(s, PREFACE + settings() + settings(ack=True))
            socks.append(s)
        await wait_until(lambda: len(origin.handler.connections) == n and all(
            c._dormant_acked == 1 for c in origin.handler.connections))
    finally:
        for s in socks:
            s.close()
    assert all(c._h2 is None for c in origin.handler.connections)
