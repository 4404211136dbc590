"""The private parts of ``h2`` and ``etcd3aio`` that nfmesh leans on (issue 15, item 7).

``dataplane/h2_session.py`` (the h2 backend) overrides and calls private methods of ``h2.connection.H2Connection``
and ``gateway/registry/etcd_store.py`` opens etcd's lease keep-alive stream through private
attributes of ``etcd3aio``.  ``pyproject.toml`` bounds both libraries to the releases these
were checked on; this test names every such attribute, so that a new release that moves one
fails here, loudly and by name, instead of somewhere deep in an engine or registry test.
Raising an upper bound in pyproject.toml: run this file on the new release first.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _missing(obj: object, names: list[str]) -> list[str]:
    return [n for n in names if not hasattr(obj, n)]


def test_h2_private_methods_nfmesh_overrides_or_calls() -> None:
    import h2.connection
    import h2.frame_buffer
    import h2.stream

    methods = ["_receive_goaway_frame", "_receive_headers_frame", "_local_settings_acked",
               "_open_streams", "open_inbound_streams", "open_outbound_streams"]
    assert not _missing(h2.connection.H2Connection, methods), \
        f"h2 {h2.__version__}: H2Connection lost {_missing(h2.connection.H2Connection, methods)}"
    for name in ("_receive_goaway_frame", "_receive_headers_frame"):
        params = list(inspect.signature(getattr(h2.connection.H2Connection, name)).parameters)
        assert params == ["self", "frame"], f"h2 {h2.__version__}: {name}{params}"
    assert list(inspect.signature(h2.connection.H2Connection._open_streams).parameters)[:2] == [
        "self", "remainder"], "h2: _open_streams(self, remainder) changed"
    funcs = ["_error_code_from_int", "_decode_headers"]
    assert not _missing(h2.connection, funcs), f"h2 {h2.__version__}: h2.connection lost {funcs}"
    assert hasattr(h2.frame_buffer.FrameBuffer, "__next__")
    assert hasattr(h2.stream.StreamClosedBy, "SEND_RST_STREAM")
    assert hasattr(h2.stream.StreamState, "HALF_CLOSED_REMOTE")


def test_h2_private_state_on_a_connection() -> None:
    import h2.config
    import h2.connection

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    attrs = ["_closed_streams", "_data_to_send", "decoder", "incoming_buffer", "local_settings",
             "remote_settings", "streams", "highest_inbound_stream_id", "max_inbound_frame_size",
             "_inbound_flow_control_window_manager"]
    assert not _missing(conn, attrs), f"h2 {h2.__version__}: H2Connection lost {_missing(conn, attrs)}"
    assert isinstance(conn._closed_streams, dict)
    assert isinstance(conn._data_to_send, (bytes, bytearray))
    assert not _missing(conn.decoder, ["max_header_list_size", "max_allowed_table_size"])
    # a stream object: state_machine.state and closed_by are read by the engine
    conn.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                            (":authority", "x")], end_stream=True)
    conn.receive_data(client.data_to_send())
    stream = conn.streams[1]
    assert hasattr(stream, "closed_by") and hasattr(stream.state_machine, "state")
    # H2Session.ack_connection / ack_stream split acknowledge_received_data in two
    assert hasattr(conn._inbound_flow_control_window_manager, "process_bytes")
    assert hasattr(stream, "acknowledge_received_data") and hasattr(stream, "open")


def test_hyperframe_settings_ack_with_payload_message() -> None:
    """The engine maps this message to FRAME_SIZE_ERROR (h2_session._FrameBuffer)."""
    from hyperframe.exceptions import InvalidDataError
    from hyperframe.frame import SettingsFrame

    with pytest.raises(InvalidDataError, match=re.compile("ack frame must not have payload", re.I)):
        SettingsFrame(0, flags=["ACK"]).parse_body(memoryview(b"\x00\x01\x00\x00\x10\x00"))


async def test_etcd3aio_private_lease_keepalive_parts() -> None:
    from etcd3aio import Etcd3Client
    from etcd3aio._protobuf import LeaseKeepAliveRequest

    assert LeaseKeepAliveRequest(ID=7).ID == 7
    client = Etcd3Client(["127.0.0.1:1"], rpc_max_attempts=1)  # nothing listens: never called
    await client.connect()
    try:
        lease = client.lease
        assert hasattr(lease, "_stub") and hasattr(lease._stub, "LeaseKeepAlive"), \
            "etcd3aio: LeaseService._stub.LeaseKeepAlive moved"
        assert hasattr(lease, "_metadata"), "etcd3aio: LeaseService._metadata moved"
    finally:
        await client.close()


def test_pyproject_bounds_the_libraries_whose_private_parts_are_used() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for lib in ("h2", "etcd3aio"):
        spec = next(d for d in deps if re.match(rf"{lib}\b", d))
        assert "<" in spec, f"{spec}: private APIs are used, give it an upper bound"
