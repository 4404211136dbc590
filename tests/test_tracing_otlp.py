"""Hop spans over OTLP/HTTP (gateway/otlp_export.py, gateway/span_batcher.py): a real gateway
forwarding to real producers exports one span per sampled request to an OTLP/HTTP receiver
in this test, which decodes the protobuf with the ``opentelemetry-proto`` messages (not this
project's encoder): ids, kind, status and the 3GPP attributes, for model C, model D (with a
reselection) and a request no producer answered; and the batcher's bounded queue."""

from __future__ import annotations

import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from dataplane.client import H2Client
from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from gateway.span_batcher import SpanBatcher
from tests.conftest import header, start_origin
from tests.registry.conftest import make_profile
from tests.waiting import HANG_GUARD_S, wait_until

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="the otel extra (opentelemetry-proto): scripts/setup.sh test installs it")
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (``POST /v1/traces``, protobuf) on a thread."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, trace_pb2.Span]] = []  # (resource attributes, span)
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if (self.path != "/v1/traces"
                        or self.headers["Content-Type"] != "application/x-protobuf"):
                    self.send_response(404)
                    self.end_headers()
                    return
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    receiver.requests += 1
                    for rs in req.resource_spans:
                        res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            receiver.spans.extend((res, s) for s in ss.spans)
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v):
    return v.int_value if v.WhichOneof("value") == "int_value" else v.string_value


def attrs(span) -> dict:
    return {kv.key: _value(kv.value) for kv in span.attributes}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


def _config(receiver: OtlpReceiver, **extra) -> dict:
    return {
        "listeners": [{"name": "sbi", "port": 0}],
        "tracing": {"enabled": True, "otlp_endpoint": receiver.url, "service_name": "scp-test",
                    "otlp_flush_interval_ms": 20},
        "admin": {"enabled": False},
        **extra,
    }


async def wait_spans(gw: Gateway, receiver: OtlpReceiver, n: int) -> None:
    """Until the receiver holds ``n`` spans."""
    def arrived() -> bool:
        gw.report_completions()  # the engine tells the proxy of finished exchanges now
        return len(receiver.spans) >= n

    await wait_until(arrived, what=lambda: f"the receiver got {len(receiver.spans)} spans, not {n}")


def forwarded_ids(headers) -> tuple[str, str, str]:
    version, trace, parent, flags = header(headers, b"traceparent").decode().split("-")
    assert version == "00"
    return trace, parent, flags


async def test_model_c_spans_carry_the_forwarded_ids_and_attributes(backend, receiver) -> None:
    origin = await start_origin(backend, name="udm")
    cfg = parse_config(_config(receiver))
    gw = Gateway(cfg, backend=backend.NAME)
    await gw.start()
    client = H2Client(backend.NAME)
    base = f"http://127.0.0.1:{gw.ports['sbi']}"
    sent: list[tuple[str, str]] = []  # (incoming parent id, forwarded parent id)
    try:
        for i in range(3):
            parent = f"{i + 1:016x}"
            r = await client.request("GET", base + f"/nudm-sdm/v2/imsi-00101000000000{i}/am-data?x=1",
                                     timeout=HANG_GUARD_S, headers=[
                ("user-agent", "AMF-0001"), ("traceparent", f"00-{TRACE}-{parent}-01"),
                ("tracestate", "vendor=1"),
                ("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}")])
            assert r.status == 200
            trace, fwd_parent, flags = forwarded_ids(origin.handler.requests[-1])
            assert (trace, flags) == (TRACE, "01") and fwd_parent != parent
            sent.append((parent, fwd_parent))
        # not sampled (flag 00): forwarded with a traceparent, but no span
        r = await client.request("GET", base + "/nudm-sdm/v2/x/am-data", timeout=HANG_GUARD_S, headers=[
            ("user-agent", "AMF-0001"), ("traceparent", f"00-{TRACE}-00000000000000aa-00"),
            ("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}")])
        assert r.status == 200
        await wait_spans(gw, receiver, 3)
        # the export settings are read at start: a reload changing them says so
        assert "tracing" not in gw.reload(cfg)
        moved = msgspec.structs.replace(cfg.tracing, otlp_endpoint="http://127.0.0.1:1/v1/traces")
        assert "tracing" in gw.reload(msgspec.structs.replace(cfg, tracing=moved))
    finally:
        await client.close()
        await gw.stop(drain=False)  # flushes what is queued
        await origin.stop()
    assert len(receiver.spans) == 3  # exactly one per sampled request
    assert gw.span_export.exported == 3 and gw.span_export.dropped == 0
    by_id = {s.span_id.hex(): (res, s) for res, s in receiver.spans}
    for i, (parent, fwd_parent) in enumerate(sent):
        res, span = by_id[fwd_parent]  # span id = the parent id the producer got
        assert res["service.name"] == "scp-test"
        assert span.trace_id.hex() == TRACE
        assert span.parent_span_id.hex() == parent  # the caller's span
        assert span.kind == trace_pb2.Span.SPAN_KIND_CLIENT
        assert span.name == "GET nudm-sdm"
        assert span.trace_state == "vendor=1"
        assert span.status.code == trace_pb2.Status.STATUS_CODE_UNSET
        assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.flags & 0xFF == 1 and span.flags & 0x300 == 0x300  # sampled, remote parent
        assert attrs(span) == {
            "http.request.method": "GET", "url.path": f"/nudm-sdm/v2/imsi-00101000000000{i}/am-data",
            "http.response.status_code": 200, "server.address": "127.0.0.1",
            "server.port": origin.port, "3gpp.consumer.nf_type": "AMF",
            "3gpp.producer.nf_type": "UDM", "3gpp.service": "nudm-sdm", "3gpp.scp.model": "C",
            "3gpp.reselections": 0, "nfmesh.cluster": "scp-model-c"}


async def test_model_d_span_names_the_producer_that_answered(backend, receiver) -> None:
    origin = await start_origin(backend, name="udm-b")
    down = closed_port()
    cfg = parse_config(_config(receiver, registry={"enabled": True}))
    gw = Gateway(cfg, backend=backend.NAME)
    await gw.start()
    client = H2Client(backend.NAME)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        reg = gw.registry
        # A is preferred (priority 1) but nothing listens at its address: reselection to B
        await reg.registry.register(a, make_profile("UDM", a, ip="127.0.0.1", port=down, priority=1))
        await reg.registry.register(b, make_profile("UDM", b, ip="127.0.0.1", port=origin.port,
                                                    priority=2))
        await wait_until(lambda: len(reg.publisher.snapshot.by_type.get("UDM", ())) == 2,
                         what="the registry publishes both UDM profiles")
        parent = "00f067aa0ba902b7"
        r = await client.request("GET", f"http://127.0.0.1:{gw.ports['sbi']}/nudm-sdm/v2/imsi-1/am-data",
                                 timeout=HANG_GUARD_S, headers=[
            ("user-agent", "SMF-7"), ("traceparent", f"00-{TRACE}-{parent}-01"),
            ("3gpp-sbi-discovery-target-nf-type", "UDM"),
            ("3gpp-sbi-discovery-requester-nf-type", "AMF"),
            ("3gpp-sbi-discovery-service-names", "nudm-sdm")])
        assert r.status == 200 and r.header("3gpp-sbi-producer-id").startswith(f"nfinst={b}")
        trace, fwd_parent, _ = forwarded_ids(origin.handler.requests[-1])
        assert trace == TRACE and fwd_parent != parent
        await wait_spans(gw, receiver, 1)
    finally:
        await client.close()
        await gw.stop(drain=False)
        await origin.stop()
    assert len(receiver.spans) == 1
    _, span = receiver.spans[0]
    assert (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex()) == \
        (TRACE, fwd_parent, parent)
    got = attrs(span)
    assert got["3gpp.scp.model"] == "D"
    assert got["3gpp.consumer.nf_type"] == "AMF"  # the discovery header before the User-Agent
    assert got["3gpp.producer.nf_type"] == "UDM"
    assert got["3gpp.producer.nf_instance_id"] == b  # the one that answered, not A
    assert got["3gpp.reselections"] == 1
    assert got["3gpp.service"] == "nudm-sdm"
    assert (got["server.address"], got["server.port"]) == ("127.0.0.1", origin.port)
    assert got["http.response.status_code"] == 200
    assert span.status.code == trace_pb2.Status.STATUS_CODE_UNSET


async def test_a_request_no_producer_answers_is_an_error_span(backend, receiver) -> None:
    down = closed_port()
    gw = Gateway(parse_config(_config(receiver)), backend=backend.NAME)
    await gw.start()
    client = H2Client(backend.NAME)
    parent = "00f067aa0ba902b7"
    target = str(uuid.uuid4())
    try:
        r = await client.request("POST", f"http://127.0.0.1:{gw.ports['sbi']}/nausf-auth/v1/ue-authentications",
                                 body=b"{}", timeout=HANG_GUARD_S, headers=[
            ("user-agent", "AMF-1"), ("content-type", "application/json"),
            ("traceparent", f"00-{TRACE}-{parent}-01"),
            ("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{down}"),
            ("3gpp-sbi-target-nf-id", f"nfinst={target}")])
        assert r.status == 504
        await wait_spans(gw, receiver, 1)
    finally:
        await client.close()
        await gw.stop(drain=False)
    assert len(receiver.spans) == 1
    _, span = receiver.spans[0]
    assert span.trace_id.hex() == TRACE and span.parent_span_id.hex() == parent
    assert span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    got = attrs(span)
    assert got["http.response.status_code"] == 504  # the gateway's own answer
    assert got["error.type"] == "504" and span.status.message == "504"
    assert (got["server.port"], got["3gpp.scp.model"]) == (down, "C")
    assert got["3gpp.producer.nf_type"] == "AUSF" and got["http.request.method"] == "POST"
    assert got["3gpp.producer.nf_instance_id"] == target  # model C: the request names it


def test_batcher_drops_and_counts_when_full_and_never_blocks() -> None:
    release = threading.Event()
    entered = threading.Event()
    exported: list[int] = []

    def export(batch):  # a receiver that hangs until released
        entered.set()
        assert release.wait(30)
        exported.extend(batch)
        return len(batch)

    b = SpanBatcher(export, max_queue=4, batch_size=2, delay_s=60)
    try:
        assert b.submit(0) and b.submit(1)  # a full batch wakes the thread, which hangs in export
        assert entered.wait(30)
        results = [b.submit(i) for i in range(2, 10)]  # the thread is stuck: the queue fills
        assert results == [True] * 4 + [False] * 4
        assert (b.submitted, b.dropped, b.pending()) == (6, 4, 4)
    finally:
        release.set()
        assert b.close(30)
    assert sorted(exported) == [0, 1, 2, 3, 4, 5]  # the newest were refused, none lost
    assert (b.exported, b.failed) == (6, 0)
    assert not b.submit(99) and b.dropped == 5  # closed: refused and counted
    from prometheus_client import generate_latest

    from gateway.metrics import new_registry
    from gateway.otlp_export import SpanExportCollector

    text = generate_latest(new_registry(SpanExportCollector(b))).decode()
    assert 'nfmesh_trace_spans_total{outcome="exported"} 6.0' in text
    assert 'nfmesh_trace_spans_total{outcome="dropped"} 5.0' in text
    assert "nfmesh_trace_span_queue 0.0" in text


def test_a_receiver_that_is_down_counts_failed_spans() -> None:
    from dataplane.routing import Endpoint, Forward
    from gateway.otlp_export import OtlpSpanExport
    from gateway.tracing import HopSpan

    export = OtlpSpanExport(f"http://127.0.0.1:{closed_port()}/v1/traces", 2.0,
                            {"service.name": "x"})
    b = SpanBatcher(export, max_queue=8, batch_size=8, delay_s=60, start=False)
    fwd = Forward(Endpoint("127.0.0.1", 1), [])
    spans = [HopSpan(b.submit, TRACE.encode(), b"%016x" % (i + 1), None, b"01",
                     [(b":method", b"GET"), (b":path", b"/nudm-sdm/v2/x")], fwd) for i in range(3)]
    for s in spans:
        s(200, 0, fwd.endpoint, 0)
    assert b.pending() == 3
    b.flush_now()
    assert (b.exported, b.failed, b.pending()) == (0, 3, 0)


def test_config_refuses_a_bad_endpoint_and_a_missing_extra(monkeypatch) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"tracing": {"otlp_endpoint": "collector:4318"}})
    assert "tracing.otlp_endpoint" in str(err.value)
    # as where the otel extra is not installed: refused at load, with the reason
    monkeypatch.setitem(__import__("sys").modules, "opentelemetry.proto.collector.trace.v1", None)
    with pytest.raises(ConfigError) as err:
        parse_config({"tracing": {"otlp_endpoint": "http://127.0.0.1:4318"}})
    assert "otel" in str(err.value)
    # without an endpoint nothing needs the extra
    assert parse_config({"tracing": {"enabled": True}}).tracing.otlp_endpoint == ""
