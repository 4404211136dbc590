"""The nghttp2 backend's lazy session (issue 13, idle-connection memory): a connection that has
only sent the preface, SETTINGS and SETTINGS ACKs is answered without a libnghttp2 session,
which is made at the first other frame.  None of it may show: real clients (nghttp, curl,
h2load) work, and a raw client sees exactly one server SETTINGS, one connection
WINDOW_UPDATE and one ACK per SETTINGS it sent, its own SETTINGS values obeyed, and a PING
before any request answered.  Every wait is for a frame, a close or a process exit."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import struct

import hpack
import pytest

from dataplane.engine import ErrorCode, H2Settings
from tests.conftest import start_origin
from tests.h2_frames import RawPeer
from tests.test_rfc9113_errors import (
    ACK,
    CASES,
    DATA,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    WINDOW,
    frame,
    request,
    settings,
)

pytestmark = pytest.mark.parametrize("backend", ["nghttp2"])


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend, settings=H2Settings())
    yield running
    await running.stop()


def is_ack(f) -> bool:
    return f[0] == SETTINGS and f[1] & ACK


async def test_handshake_then_request_shows_no_seam(origin):
    """Preface + SETTINGS with non-default values, then later a second SETTINGS, a SETTINGS
    ACK, a PING and a request, each in its own write: the server's first output is sent once,
    each client SETTINGS is acknowledged once, and the values the dormant connection kept
    (INITIAL_WINDOW_SIZE 100, MAX_FRAME_SIZE 20000, HEADER_TABLE_SIZE 0) are in force."""
    peer = await RawPeer.open(origin.port)
    try:
        peer.send(PREFACE + settings((4, 100), (5, 20000)))
        await peer.until(is_ack)
        peer.send(settings((1, 0)))
        await peer.until(is_ack)
        peer.send(settings(flags=ACK))
        peer.send(frame(PING, 0, 0, b"12345678"))
        pong = await peer.until(lambda f: f[0] == PING)
        assert pong[1] & ACK and pong[3] == b"12345678"
        peer.send(frame(HEADERS, 0x4 | END_STREAM, 1, hpack.Encoder().encode(
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"),
             (b":path", b"/download?size=1000")])))
        body = b""
        while True:
            t, fl, sid, payload = await peer.until(lambda f: f[0] in (DATA, GOAWAY) and f[2] <= 1)
            assert t == DATA, "GOAWAY instead of the response"
            assert len(payload) <= 100  # the client's INITIAL_WINDOW_SIZE is obeyed
            body += payload
            if len(body) >= 100 and not fl & END_STREAM:
                peer.send(frame(WINDOW, 0, 1, struct.pack(">I", len(payload))))
                peer.send(frame(WINDOW, 0, 0, struct.pack(">I", len(payload))))
            if fl & END_STREAM:
                break
        assert body == bytes(i % 251 for i in range(1000))
        assert peer.count(SETTINGS, 0) == 1
        assert peer.count(SETTINGS, ACK) == 2
        assert peer.count(WINDOW, sid=0) == 1  # the 16 MiB connection window, once
        # HEADER_TABLE_SIZE 0 kept while dormant: the response block decodes with no table
        headers = [f for f in peer.frames if f[0] == HEADERS]
        dec = hpack.Decoder()
        dec.max_allowed_table_size = 0
        dec.header_table_size = 0
        assert (b":status", b"200") in dec.decode(headers[0][3], raw=True)
    finally:
        peer.close()


async def test_ping_before_any_request(origin):
    """A PING right after the handshake (the session is made for it) is answered, and our
    SETTINGS and the ACK are not repeated."""
    peer = await RawPeer.open(origin.port)
    try:
        peer.send(PREFACE + settings() + settings(flags=ACK))
        await peer.until(is_ack)
        peer.send(frame(PING, 0, 0, b"abcdefgh"))
        pong = await peer.until(lambda f: f[0] == PING)
        assert pong[1] & ACK and pong[3] == b"abcdefgh"
        peer.send(request(1))
        await peer.until(lambda f: f[0] == DATA and f[1] & END_STREAM)
        assert peer.count(SETTINGS, 0) == 1 and peer.count(SETTINGS, ACK) == 1
        assert peer.count(WINDOW, sid=0) == 1
    finally:
        peer.close()


async def test_drain_of_a_dormant_connection_sends_goaway(origin):
    """The gateway drains a connection that never went past the handshake: GOAWAY comes, then
    the close."""
    peer = await RawPeer.open(origin.port)
    try:
        peer.send(PREFACE + settings())
        await peer.until(is_ack)
        origin.handler.connections[-1].drain(ErrorCode.NO_ERROR)
        goaway = await peer.until(lambda f: f[0] == GOAWAY)
        assert int.from_bytes(goaway[3][4:8], "big") == ErrorCode.NO_ERROR
        assert peer.count(SETTINGS, 0) == 1 and peer.count(SETTINGS, ACK) == 1
    finally:
        peer.close()


@pytest.mark.parametrize("name,after,codes", CASES, ids=[c[0] for c in CASES])
async def test_connection_error_after_a_dormant_handshake(origin, name, after, codes):
    """The RFC 9113 cases sent once the handshake was answered while dormant: the session
    made for them answers with the same GOAWAY codes."""
    peer = await RawPeer.open(origin.port)
    try:
        peer.send(PREFACE + settings() + settings(flags=ACK))
        await peer.until(is_ack)
        peer.send(after)
        try:
            goaway = await peer.until(lambda f: f[0] == GOAWAY)
        except AssertionError:
            goaway = None
        assert goaway is not None, f"{name}: connection closed without GOAWAY"
        code = int.from_bytes(goaway[3][4:8], "big")
        assert code in codes, f"{name}: GOAWAY {code}, expected {codes}"
    finally:
        peer.close()


async def _run(*argv: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out


@pytest.mark.skipif(not shutil.which("nghttp"), reason="nghttp not installed")
async def test_nghttp_client(origin):
    rc, out = await _run("nghttp", "-v", f"http://127.0.0.1:{origin.port}/download?size=70000")
    assert rc == 0, out.decode(errors="replace")
    assert b"recv (stream_id=13) :status: 200" in out and b"recv GOAWAY" not in out
    assert out.count(b"recv SETTINGS frame <length=36, flags=0x00") == 1
    assert out.count(b"recv SETTINGS frame <length=0, flags=0x01") == 1
    assert out.count(b"recv WINDOW_UPDATE frame <length=4, flags=0x00, stream_id=0>") == 1


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
async def test_curl_prior_knowledge(origin):
    rc, out = await _run("curl", "-sS", "--http2-prior-knowledge",
                         f"http://127.0.0.1:{origin.port}/download?size=300000")
    assert rc == 0, out[-500:]
    assert hashlib.sha256(out).digest() == hashlib.sha256(
        bytes(i % 251 for i in range(300000))).digest()


@pytest.mark.skipif(not shutil.which("h2load"), reason="h2load not installed")
async def test_h2load(origin):
    rc, out = await _run("h2load", "-n", "400", "-c", "8", "-m", "10",
                         f"http://127.0.0.1:{origin.port}/x")
    text = out.decode(errors="replace")
    assert rc == 0, text
    assert "400 succeeded, 0 failed, 0 errored" in text, text
