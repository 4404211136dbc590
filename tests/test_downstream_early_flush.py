"""A client connection's finished responses are written before the rest of an upstream read.

In the nghttp2 backend, one read from an upstream connection often finishes responses for
several client connections, usually one client's after another's.  When a finished response
belongs to another client connection than the one before it, the one before is flushed there
and then (at most once per read) instead of when the whole read has been handled.  Driven by
hand over in-memory transports (``tests.test_completion_reports``), the origin played by
python-hyper's ``h2``; each client transport notes, at each write, how many upstream streams
were still open, which tells whether the write came before the rest of the read was handled.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from tests.test_completion_reports import SETTINGS, MemTransport, Splicer

nghttp2 = pytest.importorskip("dataplane._nghttp2")


class NotingTransport(MemTransport):
    """Notes, at each write, how many streams the upstream connection still has open."""

    def __init__(self, upstream) -> None:
        super().__init__()
        self.upstream = upstream
        self.seen: list[int] = []

    def write(self, data: bytes) -> None:
        self.seen.append(self.upstream.open_streams)
        super().write(data)


def client_bytes(paths: list[str]) -> tuple[h2.connection.H2Connection, bytes]:
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    for i, path in enumerate(paths):
        c.send_headers(1 + 2 * i, [(":method", "GET"), (":scheme", "http"),
                                   (":authority", "nf"), (":path", path)], end_stream=True)
    return c, c.data_to_send()


class Mesh:
    """Client connections spliced to one upstream connection; the origin answers by hand."""

    def __init__(self, requests: list[list[str]]) -> None:
        handler = Splicer()
        self.upstream = nghttp2.ClientConnection(SETTINGS)
        self.up_t = MemTransport()
        self.upstream.connection_made(self.up_t)
        handler.upstream = self.upstream
        self.origin = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.origin.initiate_connection()
        self.clients = []
        for paths in requests:
            t = NotingTransport(self.upstream)
            server = nghttp2.ServerConnection(handler, SETTINGS)
            server.connection_made(t)
            client, data = client_bytes(paths)
            server.data_received(data)
            self.clients.append((client, t))
        nghttp2.flush_writes()
        self.cid = {}  # request path -> upstream stream id
        for ev in self.origin.receive_data(self.up_t.take()):
            if isinstance(ev, h2.events.RequestReceived):
                self.cid[dict(ev.headers)[b":path"].decode()] = ev.stream_id
        self.upstream.data_received(self.origin.data_to_send())  # SETTINGS and ACK
        for _, t in self.clients:
            t.seen.clear()

    def answer(self, order: list[str]) -> None:
        """One upstream read finishing the responses to ``order``'s paths, in that order;
        an odd position answers with headers only, the others with a body."""
        for i, path in enumerate(order):
            sid = self.cid[path]
            if i % 2:
                self.origin.send_headers(sid, [(":status", "204")], end_stream=True)
            else:
                self.origin.send_headers(sid, [(":status", "200")])
                self.origin.send_data(sid, path.encode(), end_stream=True)
        self.upstream.data_received(self.origin.data_to_send())

    def received(self, k: int) -> dict[int, tuple[bytes, bytes]]:
        """Client ``k``'s finished responses: stream id -> (status, body)."""
        client, t = self.clients[k]
        status, body, done = {}, {}, {}
        for ev in client.receive_data(t.take()):
            if isinstance(ev, h2.events.ResponseReceived):
                status[ev.stream_id] = dict(ev.headers)[b":status"]
            elif isinstance(ev, h2.events.DataReceived):
                body[ev.stream_id] = body.get(ev.stream_id, b"") + ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                done[ev.stream_id] = (status[ev.stream_id], body.get(ev.stream_id, b""))
        return done


async def test_the_first_clients_responses_go_before_the_next_clients_are_handled():
    mesh = Mesh([["/a1", "/a2"], ["/b1"]])
    mesh.answer(["/a1", "/a2", "/b1"])
    a, b = mesh.clients[0][1], mesh.clients[1][1]
    assert a.seen == [1]  # written while /b1's upstream stream was still open
    assert b.seen == [0]  # the last client: with the read's own flush
    assert mesh.received(0) == {1: (b"200", b"/a1"), 3: (b"204", b"")}
    assert mesh.received(1) == {1: (b"200", b"/b1")}


async def test_interleaved_responses_cost_at_most_one_early_write_per_client_and_read():
    mesh = Mesh([["/a1", "/a2", "/a3"], ["/b1", "/b2", "/b3"]])
    mesh.answer(["/a1", "/b1", "/a2", "/b2", "/a3", "/b3"])
    a, b = mesh.clients[0][1], mesh.clients[1][1]
    assert len(a.seen) == 2 and a.seen[0] > 0  # one early write, one with the read's flush
    assert len(b.seen) == 2 and b.seen[0] > 0
    assert sorted(mesh.received(0)) == [1, 3, 5]
    assert sorted(mesh.received(1)) == [1, 3, 5]


async def test_one_clients_responses_in_a_read_go_in_one_write():
    mesh = Mesh([["/a1", "/a2"], ["/b1"]])
    mesh.answer(["/a1", "/a2"])
    a, b = mesh.clients[0][1], mesh.clients[1][1]
    assert a.seen == [1]  # after the read (/b1 still open upstream), once
    assert b.seen == []
    mesh.answer(["/b1"])
    assert a.seen == [1] and b.seen == [0]
    assert mesh.received(1) == {1: (b"200", b"/b1")}


async def test_a_later_read_flushes_early_again():
    mesh = Mesh([["/a1", "/a2"], ["/b1", "/b2"]])
    mesh.answer(["/a1", "/b1"])
    mesh.answer(["/a2", "/b2"])
    a, b = mesh.clients[0][1], mesh.clients[1][1]
    assert a.seen == [3, 1]  # early in each read: the once-per-read mark is per read
    assert b.seen == [2, 0]
