"""RFC 9113 connection errors, table-driven, on every backend: each case sends raw frame bytes
after a valid client preface and expects GOAWAY with the error code the RFC prescribes, then
the connection closed.  (Frames are written by hand where hyperframe refuses to build them.)"""

from __future__ import annotations

import asyncio
import struct

import hpack
import pytest

from dataplane.engine import ErrorCode, H2Settings
from tests.conftest import start_origin

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def settings(*pairs: tuple[int, int], flags: int = 0) -> bytes:
    return frame(SETTINGS, flags, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def block(path: bytes = b"/x", extra=()) -> bytes:
    return hpack.Encoder().encode([(b":method", b"GET"), (b":scheme", b"http"),
                                   (b":authority", b"t"), (b":path", path), *extra])


def request(sid: int, path: bytes = b"/x") -> bytes:
    return frame(HEADERS, END_HEADERS | END_STREAM, sid, block(path))


# (name, bytes after the preface's SETTINGS, the GOAWAY codes the RFC allows)
PROTO = {ErrorCode.PROTOCOL_ERROR}
CASES = [
    ("priority_on_stream_0", frame(PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"), PROTO),  # §6.3
    ("headers_on_stream_0", frame(HEADERS, END_HEADERS | END_STREAM, 0, block()), PROTO),  # §6.2
    ("data_on_stream_0", frame(DATA, 0, 0, b"x"), PROTO),  # §6.1
    ("settings_on_a_stream", frame(SETTINGS, 0, 1, b""), PROTO),  # §6.5
    ("settings_length_not_6n", frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"),
     {ErrorCode.FRAME_SIZE_ERROR}),  # §6.5
    ("settings_ack_with_payload", settings((3, 100), flags=ACK),
     {ErrorCode.FRAME_SIZE_ERROR}),  # §6.5
    ("settings_enable_push_2", settings((2, 2)), PROTO),  # §6.5.2
    ("settings_window_over_2_31", settings((4, 2**31)), {ErrorCode.FLOW_CONTROL_ERROR}),
    ("settings_max_frame_too_small", settings((5, 100)), PROTO),  # §6.5.2
    ("ping_on_a_stream", frame(PING, 0, 1, b"\x00" * 8), PROTO),  # §6.7
    ("ping_length_not_8", frame(PING, 0, 0, b"\x00" * 7), {ErrorCode.FRAME_SIZE_ERROR}),
    ("goaway_on_a_stream", frame(GOAWAY, 0, 1, b"\x00" * 8), PROTO),  # §6.8
    ("window_update_length_not_4", frame(WINDOW, 0, 0, b"\x00" * 3),
     {ErrorCode.FRAME_SIZE_ERROR}),  # §6.9
    ("window_update_zero_on_connection", frame(WINDOW, 0, 0, b"\x00" * 4), PROTO),  # §6.9
    ("window_update_overflow", frame(WINDOW, 0, 0, struct.pack(">I", 2**31 - 1)),
     {ErrorCode.FLOW_CONTROL_ERROR}),  # §6.9.1
    ("rst_stream_on_stream_0", frame(RST, 0, 0, b"\x00\x00\x00\x08"), PROTO),  # §6.4
    ("rst_stream_on_idle_stream", frame(RST, 0, 11, b"\x00\x00\x00\x08"), PROTO),  # §6.4
    ("rst_stream_length_not_4", request(1) + frame(RST, 0, 1, b"\x00" * 3),
     {ErrorCode.FRAME_SIZE_ERROR}),  # §6.4
    ("continuation_without_headers", frame(CONT, END_HEADERS, 1, block()), PROTO),  # §6.10
    ("headers_interrupted_by_other_frame",
     frame(HEADERS, END_STREAM, 1, block()) + frame(PING, 0, 0, b"\x00" * 8), PROTO),  # §6.10
    ("push_promise_from_client", frame(PUSH, END_HEADERS, 1, b"\x00\x00\x00\x02" + block()),
     PROTO),  # §8.4
    ("even_stream_id_from_client", request(2), PROTO),  # §5.1.1
    ("reused_lower_stream_id", request(5) + request(3), PROTO | {ErrorCode.STREAM_CLOSED}),
    ("reused_closed_stream_id", request(1) + request(1),
     PROTO | {ErrorCode.STREAM_CLOSED}),  # §5.1
    ("data_on_idle_stream", frame(DATA, 0, 7, b"x"), PROTO),  # §5.1
    ("frame_over_max_frame_size", frame(DATA, 0, 1, b"\x00" * 16385),
     {ErrorCode.FRAME_SIZE_ERROR}),  # §4.2
    ("hpack_bad_index", frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\x7f"),
     {ErrorCode.COMPRESSION_ERROR}),  # §4.3
    ("padding_longer_than_payload", frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1,
                                          b"\xff" + block()), PROTO),  # §6.2
]


async def _goaway_code(port: int, after: bytes, first: bytes | None = None) -> int | None:
    """Send the preface (``first`` replaces its SETTINGS), wait for the server's SETTINGS,
    send ``after``; return the GOAWAY error code that came before the close (None: none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(PREFACE + (settings() if first is None else first))
        buf = b""
        sent_after = first is not None
        if sent_after:
            writer.write(after)
        code = None
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), 5)
            except ConnectionError:
                data = b""
            if not data:
                return code
            buf += data
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                ftype, flags = buf[3], buf[4]
                payload = buf[9:9 + length]
                buf = buf[9 + length:]
                if ftype == SETTINGS and not flags & ACK and not sent_after:
                    writer.write(settings(flags=ACK) + after)
                    sent_after = True
                elif ftype == GOAWAY:
                    code = int.from_bytes(payload[4:8], "big")
    finally:
        writer.close()


@pytest.fixture
async def origin(backend):
    running = await start_origin(backend, settings=H2Settings())
    yield running
    await running.stop()


@pytest.mark.parametrize("name,after,codes", CASES, ids=[c[0] for c in CASES])
async def test_connection_error_gets_goaway_with_the_rfc_code(origin, name, after, codes):
    code = await _goaway_code(origin.port, after)
    assert code is not None, f"{name}: connection closed without GOAWAY"
    assert code in codes, f"{name}: GOAWAY {ErrorCode(code).name}, expected {codes}"


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x04\xfa\x00\x00\x00\x00\x00abcd",  # an unknown frame type instead of SETTINGS
    request(1),  # a request before any SETTINGS
    b"\x00\x00\x00\x04\x01\x00\x00\x00\x00",  # a SETTINGS ACK as the first frame
])
async def test_preface_not_followed_by_settings_is_a_protocol_error(origin, garbage):
    """RFC 9113 §3.4: the client preface ends with a SETTINGS frame; anything else is an
    invalid preface, a connection error of type PROTOCOL_ERROR."""
    code = await _goaway_code(origin.port, b"", first=garbage)
    assert code == ErrorCode.PROTOCOL_ERROR
