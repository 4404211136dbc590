"""The response header tap (``H2Settings.tap_response_headers`` and
``SpliceObserver.on_response_headers``) and reset propagation on spliced streams, on both
backends.

The producer and the client are driven by hand with the python-hyper ``h2`` library (nobody
here wrote it), so that the test sees exactly which fields, 1xx blocks, trailers and
RST_STREAM frames cross the engine under test.  The engine splices every request to the one
producer connection; its observer records what it is told and answers as each test asks.
Every wait is on a future set by an event; the timeouts only stop a hung test.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import pytest

from dataplane.engine import ErrorCode, H2Settings, Headers

OCI = b"3gpp-sbi-oci"
LCI = b"3gpp-sbi-lci"
OCI_A = b'Timestamp: "Tue, 04 Feb 2025 08:49:37.845 GMT"; Period-of-Validity: 75s; ' \
        b"Overload-Reduction-Metric: 50%; NF-Instance: 54804518-4191-46b3-955c-ac631f953ed8"
OCI_B = b'Timestamp: "Tue, 04 Feb 2025 08:49:38.000 GMT"; Period-of-Validity: 0s; ' \
        b"Overload-Reduction-Metric: 0%; NF-Set: set1.udmset.5gc.mnc012.mcc345"
LCI_A = b'Timestamp: "Tue, 04 Feb 2025 08:49:37.845 GMT"; Load-Metric: 45%; ' \
        b"NF-Instance: 54804518-4191-46b3-955c-ac631f953ed8"
TAP = H2Settings(tap_response_headers=(OCI, LCI))
VIA = (b"x-via", b"nfmesh")  # the splice's extra_response_headers
WAIT = 10.0  # only guards against a hung test


def _response(status: bytes, fields: Headers) -> Headers:
    return [(b":status", status), *fields]


# what the producer answers, by request path: (1xx blocks, headers, body, trailers)
TAPPED_FIELDS = [
    (b"content-type", b"application/json"),
    (OCI, OCI_A),
    (b"x-a", b"1"),
    (LCI, LCI_A),
    (b"x-b", b"2"),
    (OCI, OCI_B),
]
ANSWERS: dict[bytes, tuple[list[Headers], Headers, bytes, Headers | None]] = {
    b"/tap": ([], _response(b"200", TAPPED_FIELDS), b'{"ok":true}', None),
    b"/tap503": ([], _response(b"503", [(b"content-type", b"application/problem+json"),
                                        (OCI, OCI_A)]), b'{"cause":"NF_CONGESTION"}', None),
    b"/tap204": ([], _response(b"204", [(LCI, LCI_A), (b"x-a", b"1")]), b"", None),
    b"/plain": ([], _response(b"200", [(b"content-type", b"text/plain"), (b"x-a", b"1")]),
                b"plain", None),
    # a 1xx and trailers carrying tapped names: relayed as they are; only the final HEADERS
    # are tapped
    b"/info": (
        [_response(b"103", [(OCI, b"early"), (b"link", b"</style.css>; rel=preload")])],
        _response(b"200", [(b"content-type", b"text/plain"), (LCI, LCI_A)]),
        b"with trailers",
        [(OCI, b"in-trailer"), (b"x-checksum", b"abc")],
    ),
}


# ---- the producer: an h2-library server ----------------------------------------------------


class ProducerState:
    """What the producer saw.  ``/work`` starts a job that only RST_STREAM ends (cancelled)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.requests: list[Headers] = []
        self.resets: list[tuple[int, int]] = []
        self.jobs: dict[int, asyncio.Future] = {}
        self.working = loop.create_future()  # a /work request arrived: its stream id
        self.reset_seen = loop.create_future()  # the first RST_STREAM: (stream id, code)
        self.protocols: list[Producer] = []


class Producer(asyncio.Protocol):
    def __init__(self, state: ProducerState) -> None:
        self.state = state
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.state.protocols.append(self)
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        st = self.state
        for ev in self.h2.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                headers = list(ev.headers)
                st.requests.append(headers)
                self._answer(ev.stream_id, dict(headers)[b":path"])
            elif isinstance(ev, h2.events.DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                st.resets.append((ev.stream_id, ev.error_code))
                job = st.jobs.pop(ev.stream_id, None)
                if job is not None:
                    job.cancel()  # a producer honouring RST_STREAM stops working on it
                if not st.reset_seen.done():
                    st.reset_seen.set_result((ev.stream_id, ev.error_code))
        self.transport.write(self.h2.data_to_send())

    def _answer(self, sid: int, path: bytes) -> None:
        if path == b"/work":
            self.state.jobs[sid] = asyncio.get_running_loop().create_future()
            if not self.state.working.done():
                self.state.working.set_result(sid)
            return
        infos, headers, body, trailers = ANSWERS[path]
        for info in infos:
            self.h2.send_headers(sid, info)
        self.h2.send_headers(sid, headers, end_stream=not body and not trailers)
        if body:
            self.h2.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.h2.send_headers(sid, trailers, end_stream=True)

    def connection_lost(self, exc) -> None:
        pass


# ---- the client: an h2-library client --------------------------------------------------------


@dataclass
class Answer:
    done: asyncio.Future
    infos: list[Headers] = field(default_factory=list)
    headers: Headers | None = None
    body: bytes = b""
    trailers: Headers | None = None
    reset: int | None = None


class RawClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.answers: dict[int, Answer] = {}
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for ev in self.h2.receive_data(data):
            a = self.answers.get(getattr(ev, "stream_id", 0))
            if a is None:
                continue
            if isinstance(ev, h2.events.InformationalResponseReceived):
                a.infos.append(list(ev.headers))
            elif isinstance(ev, h2.events.ResponseReceived):
                a.headers = list(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                a.body += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                a.trailers = list(ev.headers)
            elif isinstance(ev, h2.events.StreamReset):
                a.reset = ev.error_code
                a.done.done() or a.done.set_result(a)
            if isinstance(ev, h2.events.StreamEnded) or getattr(ev, "stream_ended", None):
                a.done.done() or a.done.set_result(a)
        self._flush()

    def connection_lost(self, exc) -> None:
        for a in self.answers.values():
            if not a.done.done():
                a.done.set_exception(ConnectionError("client connection lost"))
                a.done.exception()

    def send(self, path: bytes) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.answers[sid] = Answer(asyncio.get_running_loop().create_future())
        self.h2.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"),
                                   (b":authority", b"udm.example"), (b":path", path),
                                   (b"user-agent", b"AMF-test")], end_stream=True)
        self._flush()
        return sid

    def reset(self, sid: int, code: int = ErrorCode.CANCEL) -> None:
        self.h2.reset_stream(sid, code)
        self._flush()

    async def get(self, path: bytes) -> Answer:
        return await asyncio.wait_for(self.answers[self.send(path)].done, WAIT)


# ---- the engine under test: every request spliced to the producer ----------------------------


class TapObserver:
    """Records what the engine tells it; ``on_response_headers`` answers ``reply`` (raised
    when it is an exception)."""

    def __init__(self, conn, reply) -> None:
        self.conn = conn
        self.reply = reply
        self.calls: list[tuple[int, int, Headers]] = []
        self.events: list[str] = []
        self.complete = asyncio.get_running_loop().create_future()

    def on_response_headers(self, stream_id: int, status: int, fields: Headers):
        self.events.append("headers")
        self.calls.append((stream_id, status, list(fields)))
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply

    def on_upstream_failed(self, stream_id: int, error_code: int, reached: bool) -> None:
        self.events.append("failed")
        self.conn.respond(stream_id, 502, [], b"")

    def on_complete(self, stream_id: int, status: int, error_code: int) -> None:
        self.events.append("complete")
        if not self.complete.done():
            self.complete.set_result((stream_id, status, error_code))


class PlainObserver:
    """An observer that does not tap (no ``on_response_headers`` at all)."""

    def __init__(self, conn, reply=None) -> None:
        self.conn = conn
        self.complete = asyncio.get_running_loop().create_future()

    def on_upstream_failed(self, stream_id: int, error_code: int, reached: bool) -> None:
        self.conn.respond(stream_id, 502, [], b"")

    def on_complete(self, stream_id: int, status: int, error_code: int) -> None:
        if not self.complete.done():
            self.complete.set_result((stream_id, status, error_code))


class TapProxy:
    def __init__(self, upstream, observer_cls, reply) -> None:
        self.upstream = upstream
        self.observer_cls = observer_cls
        self.reply = reply
        self.observers: list = []
        self.connections: list = []

    def on_request(self, conn, stream_id, headers, end_stream) -> None:
        obs = self.observer_cls(conn, self.reply)
        self.observers.append(obs)
        conn.splice(stream_id, self.upstream, headers, obs, [VIA])

    def on_stream_reset(self, conn, stream_id, error_code) -> None:
        pass

    def on_connection_lost(self, conn) -> None:
        pass


@dataclass
class Rig:
    producer: ProducerState
    proxy: TapProxy
    client: RawClient
    close: object


@pytest.fixture
async def rig(backend):
    """``await rig(settings, observer_cls, reply)``: producer, engine and client, connected."""
    loop = asyncio.get_running_loop()
    made: list = []

    async def build(settings: H2Settings = TAP, observer_cls=TapObserver, reply=None) -> Rig:
        state = ProducerState()
        producer = await loop.create_server(lambda: Producer(state), "127.0.0.1", 0)
        _, upstream = await loop.create_connection(
            lambda: backend.ClientConnection(settings), "127.0.0.1",
            producer.sockets[0].getsockname()[1])
        await asyncio.wait_for(upstream.ready, WAIT)
        proxy = TapProxy(upstream, observer_cls, reply)

        def make():
            conn = backend.ServerConnection(proxy, settings)
            proxy.connections.append(conn)
            return conn

        server = await loop.create_server(make, "127.0.0.1", 0)
        _, client = await loop.create_connection(
            RawClient, "127.0.0.1", server.sockets[0].getsockname()[1])

        def close() -> None:
            if client.transport is not None:
                client.transport.close()
            server.close()
            for conn in proxy.connections:
                conn.close()
            upstream.close()
            producer.close()
            for p in state.protocols:
                p.transport.close()

        made.append(close)
        return Rig(state, proxy, client, close)

    yield build
    for close in made:
        close()
    await asyncio.sleep(0)  # let the transports' close callbacks run


def without(fields: Headers, *names: bytes) -> Headers:
    return [f for f in fields if f[0] not in names]


# ---- the tap -----------------------------------------------------------------------------------


async def test_observer_gets_tapped_fields_and_client_gets_its_answer(rig):
    reply = [(OCI, b"rewritten by the scp"), (b"x-tap", b"1")]
    r = await rig(reply=reply)
    a = await r.client.get(b"/tap")
    obs = r.proxy.observers[0]
    # exactly the tapped fields, in arrival order (OCI twice), with the final status
    assert obs.calls == [(1, 200, [(OCI, OCI_A), (LCI, LCI_A), (OCI, OCI_B)])]
    # the rest relayed in order, then extra_response_headers, then what the observer returned
    assert a.headers == [(b":status", b"200"), *without(TAPPED_FIELDS, OCI, LCI), VIA, *reply]
    assert (a.body, a.trailers, a.reset) == (b'{"ok":true}', None, None)
    assert await asyncio.wait_for(obs.complete, WAIT) == (1, 200, 0)
    assert obs.events == ["headers", "complete"]


async def test_observer_sees_the_final_status(rig):
    r = await rig(reply=[])
    a = await r.client.get(b"/tap503")
    assert r.proxy.observers[0].calls == [(1, 503, [(OCI, OCI_A)])]
    assert a.headers == [(b":status", b"503"),
                         (b"content-type", b"application/problem+json"), VIA]
    assert a.body == b'{"cause":"NF_CONGESTION"}'


async def test_headers_with_end_stream_are_tapped(rig):
    r = await rig(reply=[(b"x-load", b"45")])
    a = await r.client.get(b"/tap204")
    assert r.proxy.observers[0].calls == [(1, 204, [(LCI, LCI_A)])]
    assert a.headers == [(b":status", b"204"), (b"x-a", b"1"), VIA, (b"x-load", b"45")]
    assert (a.body, a.reset) == (b"", None)


async def test_observer_returning_none_drops_the_tapped_fields(rig):
    r = await rig(reply=None)
    a = await r.client.get(b"/tap")
    assert len(r.proxy.observers[0].calls) == 1
    assert a.headers == [(b":status", b"200"), *without(TAPPED_FIELDS, OCI, LCI), VIA]
    assert a.body == b'{"ok":true}'


async def test_observer_raising_still_delivers_the_response(rig, caplog):
    r = await rig(reply=RuntimeError("observer bug (on purpose)"))
    a = await r.client.get(b"/tap")
    obs = r.proxy.observers[0]
    assert len(obs.calls) == 1
    assert a.headers == [(b":status", b"200"), *without(TAPPED_FIELDS, OCI, LCI), VIA]
    assert (a.body, a.reset) == (b'{"ok":true}', None)
    assert await asyncio.wait_for(obs.complete, WAIT) == (1, 200, 0)
    assert "observer bug (on purpose)" in caplog.text


async def test_observer_without_hook_gets_fields_relayed_unchanged(rig):
    r = await rig(observer_cls=PlainObserver)
    a = await r.client.get(b"/tap")
    assert a.headers == [(b":status", b"200"), *TAPPED_FIELDS, VIA]
    assert await asyncio.wait_for(r.proxy.observers[0].complete, WAIT) == (1, 200, 0)


async def test_no_tap_configured_relays_unchanged(rig):
    r = await rig(settings=H2Settings(), reply=[(b"x-never", b"1")])
    a = await r.client.get(b"/tap")
    assert r.proxy.observers[0].calls == []
    assert a.headers == [(b":status", b"200"), *TAPPED_FIELDS, VIA]


async def test_response_without_tapped_field_makes_no_call(rig):
    r = await rig(reply=[(b"x-never", b"1")])
    a = await r.client.get(b"/plain")
    obs = r.proxy.observers[0]
    assert obs.calls == []
    assert a.headers == [(b":status", b"200"), (b"content-type", b"text/plain"),
                         (b"x-a", b"1"), VIA]
    assert await asyncio.wait_for(obs.complete, WAIT) == (1, 200, 0)
    assert obs.events == ["complete"]


async def test_informational_and_trailers_are_not_tapped(rig):
    r = await rig(reply=None)
    a = await r.client.get(b"/info")
    # only the final HEADERS' field is tapped
    assert r.proxy.observers[0].calls == [(1, 200, [(LCI, LCI_A)])]
    infos, headers, body, trailers = ANSWERS[b"/info"]
    assert a.infos == infos
    assert a.headers == [(b":status", b"200"), (b"content-type", b"text/plain"), VIA]
    assert (a.body, a.trailers) == (body, trailers)


async def test_each_stream_is_tapped_on_its_own(rig):
    tag = (b"x-tap", b"1")
    r = await rig(reply=[tag])
    paths = (b"/tap", b"/plain", b"/tap503", b"/info")
    sids = [r.client.send(p) for p in paths]
    answers = await asyncio.wait_for(
        asyncio.gather(*[r.client.answers[sid].done for sid in sids]), WAIT)
    calls = {obs.calls[0][0]: obs.calls[0][1:] for obs in r.proxy.observers if obs.calls}
    assert calls == {1: (200, [(OCI, OCI_A), (LCI, LCI_A), (OCI, OCI_B)]),
                     5: (503, [(OCI, OCI_A)]), 7: (200, [(LCI, LCI_A)])}
    for path, a in zip(paths, answers, strict=True):
        relayed = without(ANSWERS[path][1], OCI, LCI)
        assert a.headers == relayed + [VIA] + ([] if path == b"/plain" else [tag])


def test_tap_names_are_checked_and_kept_as_a_tuple_of_bytes():
    s = H2Settings(tap_response_headers=["3gpp-sbi-oci", b"3gpp-sbi-lci"])
    assert s.tap_response_headers == (OCI, LCI)
    hash(s)
    for bad in ([b"3GPP-Sbi-Oci"], [b""], [b":status"]):
        with pytest.raises(ValueError):
            H2Settings(tap_response_headers=bad)


# ---- resets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["rst_stream", "connection_closed"])
async def test_client_reset_reaches_the_producer(rig, how):
    r = await rig()
    sid = r.client.send(b"/work")
    up_sid = await asyncio.wait_for(r.producer.working, WAIT)  # the producer is working on it
    job = r.producer.jobs[up_sid]
    if how == "rst_stream":
        r.client.reset(sid, ErrorCode.CANCEL)
    else:
        r.client.transport.close()
    assert await asyncio.wait_for(r.producer.reset_seen, WAIT) == (up_sid, ErrorCode.CANCEL)
    assert job.cancelled()  # so the producer stopped working on it
    obs = r.proxy.observers[0]
    assert await asyncio.wait_for(obs.complete, WAIT) == (sid, 0, ErrorCode.CANCEL)
    assert obs.calls == []
    if how == "rst_stream":  # the upstream connection is unharmed
        a = await r.client.get(b"/plain")
        assert a.headers[0] == (b":status", b"200")


async def test_handler_reset_of_a_spliced_stream_reaches_the_producer(rig):
    r = await rig()
    sid = r.client.send(b"/work")
    up_sid = await asyncio.wait_for(r.producer.working, WAIT)
    job = r.producer.jobs[up_sid]
    r.proxy.connections[0].reset(sid, ErrorCode.CANCEL)
    assert await asyncio.wait_for(r.producer.reset_seen, WAIT) == (up_sid, ErrorCode.CANCEL)
    assert job.cancelled()
    a = await asyncio.wait_for(r.client.answers[sid].done, WAIT)
    assert (a.headers, a.reset) == (None, ErrorCode.CANCEL)
