"""Each event loop has its own engine queues: loops in two threads share none of them.

What a backend queues between a read and the end of the loop iteration (the nghttp2 backend's
dirty connections, held upstream writes and waiting completion reports; the h2 backend's
write batch) belongs to the running event loop, looked up once per connection.  Two loops in
two threads, each splicing requests from a client connection to an upstream connection
through the engine, on both backends:

* while one loop is stopped inside a read (its handler blocks in ``on_request``), the other
  runs whole exchanges: its writes are neither held back in nor made by the stopped one, its
  observers are told on its own thread, and ``waiting_completions()`` counts only its own;
* both loops at once over real sockets (origin, splicing server, client): every answer right,
  every observer told once, on the thread that runs its loop.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import uvloop

from dataplane.engine import H2Settings, available_backends, load_backend
from tests.conftest import start_origin
from tests.test_completion_reports import Rig, Splicer, turns
from tests.waiting import HANG_GUARD_S, wait_until

WAIT_S = HANG_GUARD_S  # for the threads' hand-offs: a bound on waiting, never on speed


class ThreadObserver:
    """Notes each ``on_complete`` with the thread that made the call."""

    def __init__(self, told: list) -> None:
        self.told = told

    def on_upstream_failed(self, stream_id, error_code, reached) -> None:
        self.told.append(("failed", stream_id, error_code, threading.get_ident()))

    def on_complete(self, stream_id, status, error_code) -> None:
        self.told.append((stream_id, status, error_code, threading.get_ident()))


class ThreadSplicer(Splicer):
    """Splices every request upstream; ``block`` makes the next ``on_request`` wait, inside
    the engine's read, until ``release`` is set (announcing it with ``inside``)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = False
        self.inside = threading.Event()
        self.release = threading.Event()

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        if self.block:
            self.block = False
            self.inside.set()
            assert self.release.wait(WAIT_S), "the other loop never finished"
        conn.splice(stream_id, self.upstream, headers, ThreadObserver(self.told), [])


def run_in_threads(*mains) -> list:
    """Run each coroutine function on its own uvloop in its own thread; their results (or
    the exception each raised), in order."""
    results: list = [None] * len(mains)

    def body(i: int) -> None:
        loop = uvloop.new_event_loop()
        try:
            results[i] = loop.run_until_complete(mains[i]())
        except BaseException as exc:  # handed to the test thread
            results[i] = exc
        finally:
            loop.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(mains))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT_S)
        assert not t.is_alive(), "a loop's thread hung"
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


@pytest.fixture(params=available_backends())
def backend(request):
    backend = load_backend(request.param)
    backend.report_completions()
    yield backend
    backend.report_completions()


def test_a_loop_stopped_inside_a_read_holds_nothing_of_another_loops(backend):
    """Loop A finishes one exchange (its report waits for A's quiet moment on nghttp2), then
    stops inside the read of a second request.  Meanwhile loop B runs two exchanges to the
    end and tells their observers; then A goes on and tells its own, on its own thread."""
    a_handler = ThreadSplicer()
    waiting_report = 1 if backend.NAME == "nghttp2" else 0

    async def loop_a():
        rig = Rig(backend, a_handler)
        first = rig.send(200)
        rig.pump()
        waiting = backend.waiting_completions()
        a_handler.block = True
        second = rig.send(201)
        rig.pump()  # stops in on_request until B is done
        await turns(2)
        return rig, first + second, waiting, threading.get_ident()

    async def loop_b():
        assert a_handler.inside.wait(WAIT_S), "loop A never stopped inside its read"
        try:
            rig = Rig(backend, ThreadSplicer())
            sids = rig.send(202, 203)
            rig.pump()
            answered = dict(rig.responses)
            waiting = backend.waiting_completions()
            await turns()
            return rig, sids, answered, waiting, threading.get_ident()
        finally:
            a_handler.release.set()

    (rig_a, sids_a, waiting_a, thread_a), (rig_b, sids_b, answered_b, waiting_b, thread_b) = \
        run_in_threads(loop_a, loop_b)
    # B's exchanges went through both its connections while A was inside a read
    assert answered_b == {sids_b[0]: 202, sids_b[1]: 203}
    # ... and B's reports waited in B's queue only (A's first report is A's)
    assert waiting_b == 2 * waiting_report
    assert rig_b.handler.told == [(sids_b[0], 202, 0, thread_b), (sids_b[1], 203, 0, thread_b)]
    assert waiting_a == waiting_report
    assert rig_a.responses == {sids_a[0]: 200, sids_a[1]: 201}
    assert rig_a.handler.told == [(sids_a[0], 200, 0, thread_a), (sids_a[1], 201, 0, thread_a)]


class SocketSplicer:
    """A splicing ServerHandler for real connections: every request to ``upstream``."""

    def __init__(self, upstream, told: list) -> None:
        self.upstream = upstream
        self.told = told

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        conn.splice(stream_id, self.upstream, headers, ThreadObserver(self.told), [])

    def on_stream_reset(self, conn, stream_id, error_code) -> None:
        pass

    def on_connection_lost(self, conn) -> None:
        pass


async def _exchanges(backend, name: str, start: threading.Barrier, n: int) -> dict:
    """origin <- (ClientConnection) splicing ServerConnection <- ClientConnection: ``n``
    requests at once, after both threads are ready."""
    loop = asyncio.get_running_loop()
    settings = H2Settings()
    origin = await start_origin(backend, name=name)
    _, upstream = await loop.create_connection(
        lambda: backend.ClientConnection(settings), "127.0.0.1", origin.port)
    await asyncio.wait_for(upstream.ready, WAIT_S)
    told: list = []
    conns: list = []

    def make():
        conns.append(backend.ServerConnection(SocketSplicer(upstream, told), settings))
        return conns[-1]

    server = await loop.create_server(make, "127.0.0.1", 0)
    _, client = await loop.create_connection(
        lambda: backend.ClientConnection(settings), "127.0.0.1",
        server.sockets[0].getsockname()[1])
    await asyncio.wait_for(client.ready, WAIT_S)
    await loop.run_in_executor(None, start.wait, WAIT_S)
    futures = []
    for i in range(n):
        fut = loop.create_future()
        futures.append(fut)
        client.request([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"nf"),
                        (b":path", b"/r%d" % i)], None,
                       lambda *a, f=fut: f.done() or f.set_result(a))
    answers = await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)
    # the loop tells every observer on its own (nghttp2: at a quiet moment of this loop)
    await wait_until(lambda: len(told) >= n, what=f"{n} observers told on loop {name}")
    waiting = backend.waiting_completions()
    client.close()
    upstream.close()
    server.close()
    for conn in conns:
        conn.close()
    await origin.stop()
    return {"answers": answers, "told": told, "waiting": waiting,
            "thread": threading.get_ident()}


def test_two_loops_at_once_over_real_sockets(backend):
    n = 300
    start = threading.Barrier(2)
    a, b = run_in_threads(lambda: _exchanges(backend, "a", start, n),
                          lambda: _exchanges(backend, "b", start, n))
    for name, got in (("a", a), ("b", b)):
        assert [(s, body, err) for s, _h, body, _t, err in got["answers"]] == \
            [(200, b"ok " + name.encode(), None)] * n
        assert len(got["told"]) == n and got["waiting"] == 0
        assert {t[3] for t in got["told"]} == {got["thread"]}
        assert sorted(t[1] for t in got["told"]) == [200] * n
    assert a["thread"] != b["thread"]
