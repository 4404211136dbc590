"""OTLP/HTTP export of the gateway's hop spans (``tracing.otlp_endpoint``).

One span per sampled forwarded request (``gateway.tracing.HopSpan``), sent in batches by a
``gateway.span_batcher.SpanBatcher`` thread as an OTLP ``ExportTraceServiceRequest``
(protobuf, ``POST <otlp_endpoint>``, ``content-type: application/x-protobuf``), the message
classes of ``opentelemetry-proto`` (the optional extra ``otel``; without it a config with an
``otlp_endpoint`` is refused with that reason).

Why not the OpenTelemetry SDK's tracer and ``BatchSpanProcessor`` (measured, docs/operations.md,
Tracing): starting and ending an SDK span costs about 24 us on the calling thread (here the
event loop: more than the whole proxied request), and the SDK's OTLP encoder about 40 us per
span; this module costs the event loop about 1 us per span (a ``HopSpan`` and a queue
append) and the export thread about 12 us (encode and POST).  The SDK's processor also drops
the oldest span and logs on the caller's thread when its queue is full; ``SpanBatcher``
refuses the newest and counts it.

The span (OpenTelemetry semantic conventions where they have a name, ``3gpp.*`` for the rest):

* kind CLIENT: nfmesh has one span per hop and puts its id in the forwarded
  ``traceparent``, so it is the parent of the producer's SERVER span, which the spec's
  SpanKind says a CLIENT span is ("usually the parent of a remote SERVER span"); its
  attributes are those of an HTTP client span (the producer as ``server.address``/``port``,
  the producer's answer).  The caller's own CLIENT span is its parent.
* name ``{method} {service}`` (``GET nudm-sdm``): low cardinality, no ids from the path;
* ``http.request.method``, ``url.path`` (as received, without the query: discovery and
  resource queries carry subscriber ids), ``http.response.status_code`` (absent when no
  response came), ``error.type`` (the status as text for 5xx, the HTTP/2 error code's name
  when no response came), ``server.address``/``server.port`` (the endpoint last tried);
* ``3gpp.consumer.nf_type`` (``3gpp-Sbi-Discovery-requester-nf-type``, else the
  ``User-Agent``'s NF type), ``3gpp.producer.nf_type`` (``3gpp-Sbi-Discovery-target-nf-type``,
  else the model D cluster's, else the service name's: ``nudm-sdm`` -> UDM),
  ``3gpp.service`` (the path's first segment), ``3gpp.producer.nf_instance_id`` (the
  ``3gpp-Sbi-Producer-Id`` the gateway adds for the producer that answered, else the request's
  ``3gpp-Sbi-Target-Nf-Id``), ``3gpp.scp.model`` (C with ``3gpp-Sbi-Target-apiRoot``, D with
  discovery headers, absent for a static route), ``3gpp.reselections``, ``nfmesh.cluster``;
* status ERROR for 5xx and for no response (status 0), else UNSET.  (HTTP client conventions
  also mark 4xx as errors; for an SCP a producer's 404 or 403 is an answer, not a failure of
  the hop, so they are left UNSET.)
"""

from __future__ import annotations

import http.client
import logging
import re
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from dataplane.engine import ErrorCode
from gateway.span_batcher import SpanBatcher
from nf_adapters.discovery import NF_TYPES

log = logging.getLogger("nfmesh.tracing")

CONTENT_TYPE = "application/x-protobuf"
DEFAULT_PATH = "/v1/traces"
SCOPE_NAME = "nfmesh.gateway"
_NFINST = re.compile(rb"nfinst=([0-9A-Fa-f-]{36})")
_RETRY_STATUS = frozenset((429, 502, 503, 504))  # OTLP/HTTP: retryable responses
_KIND_CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_CLIENT
_STATUS_ERROR = 2  # Status.STATUS_CODE_ERROR
_FLAG_HAS_IS_REMOTE, _FLAG_IS_REMOTE = 0x100, 0x200  # Span.flags: the parent's remoteness
_WANTED = {
    b":method": 0, b":path": 1, b"user-agent": 2, b"3gpp-sbi-discovery-requester-nf-type": 3,
    b"3gpp-sbi-discovery-target-nf-type": 4, b"3gpp-sbi-target-apiroot": 5,
    b"3gpp-sbi-target-nf-id": 6, b"tracestate": 7,
}


def otlp_missing() -> str | None:
    """Why OTLP export cannot run here (the ``otel`` extra is not installed), else None."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401
    except ImportError as exc:
        return (f"needs the optional extra 'otel' (pip install 'nfmesh[otel]': "
                f"opentelemetry-proto): {exc}")
    return None


def otlp_url(endpoint: str) -> str:
    """The URL spans are POSTed to: ``endpoint`` as given, with ``/v1/traces`` added when it
    names no path (``http://collector:4318``)."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + DEFAULT_PATH
    return endpoint


def config_problems(tracing: Any) -> list[tuple[str, str]]:
    """(field, reason) for each problem of the tracing section's export settings."""
    out: list[tuple[str, str]] = []
    endpoint = tracing.otlp_endpoint
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            out.append(("tracing.otlp_endpoint",
                        "must be an http:// or https:// URL (e.g. http://collector:4318/v1/traces)"))
        else:
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError as exc:
                out.append(("tracing.otlp_endpoint", str(exc)))
        missing = otlp_missing()
        if missing:
            out.append(("tracing.otlp_endpoint", missing))
    if tracing.otlp_batch_size > tracing.otlp_queue_size:
        out.append(("tracing.otlp_batch_size", "must not exceed tracing.otlp_queue_size"))
    return out


# ---------------------------------------------------------------------------------------------
# attributes

def _nf_type(text: bytes | None) -> str | None:
    if not text:
        return None
    t = text.strip().decode("latin-1").upper()
    return t if t in NF_TYPES else None


def _service_nf_type(service: str) -> str | None:
    """The NF type a TS 29.510 service name starts with: ``nudm-sdm`` -> UDM,
    ``n5g-eir-eic`` -> 5G_EIR; None when it names no known type."""
    if not service.startswith("n"):
        return None
    head = service[1:].split("-", 1)[0].upper()
    if head in NF_TYPES:
        return head
    if head == "5G" and service.startswith("n5g-eir"):
        return "5G_EIR"
    return None


def span_fields(s: Any) -> tuple[str, list[tuple[str, str | int]], str | None, bytes | None]:
    """(name, attributes, error type or None, tracestate) of one finished ``HopSpan``."""
    got: list[bytes | None] = [None] * 8
    wanted = _WANTED
    for name, value in s.headers:
        i = wanted.get(name)
        if i is not None and got[i] is None:
            got[i] = value
    method = (got[0] or b"").decode("latin-1")
    path = (got[1] or b"").split(b"?", 1)[0].decode("latin-1")
    service = path.split("/", 2)[1] if path.count("/") >= 1 else ""
    attrs: list[tuple[str, str | int]] = [("http.request.method", method), ("url.path", path)]
    status = s.status
    if status:
        attrs.append(("http.response.status_code", status))
    error = None
    if status >= 500:
        error = str(status)
    elif not status:
        try:
            error = ErrorCode(s.error_code).name
        except ValueError:
            error = f"0x{s.error_code:x}"
    if error is not None:
        attrs.append(("error.type", error))
    ep = s.endpoint
    if ep is not None:
        attrs.append(("server.address", ep.host))
        attrs.append(("server.port", ep.port))
    consumer = _nf_type(got[3])
    if consumer is None and got[2]:
        consumer = _nf_type(got[2].split(b"-", 1)[0])
    if consumer:
        attrs.append(("3gpp.consumer.nf_type", consumer))
    cluster = s.cluster or ""
    producer = _nf_type(got[4])
    if producer is None and "/" in cluster:  # model D: "<nfType>/<nfInstanceId>"
        producer = _nf_type(cluster.split("/", 1)[0].encode())
    if producer is None and service:
        producer = _service_nf_type(service)
    if producer:
        attrs.append(("3gpp.producer.nf_type", producer))
    if service:
        attrs.append(("3gpp.service", service))
    inst = _producer_instance(s, got[6])
    if inst:
        attrs.append(("3gpp.producer.nf_instance_id", inst))
    if got[5] is not None:
        attrs.append(("3gpp.scp.model", "C"))
    elif got[4] is not None:
        attrs.append(("3gpp.scp.model", "D"))
    attrs.append(("3gpp.reselections", s.reselections))
    if cluster:
        attrs.append(("nfmesh.cluster", cluster))
    return (f"{method} {service}" if service else method or "request"), attrs, error, got[7]


def _producer_instance(s: Any, target_nf_id: bytes | None) -> str | None:
    """The NF instance id of the producer that answered: from the ``3gpp-Sbi-Producer-Id``
    the gateway adds for the endpoint last tried, else the request's ``3gpp-Sbi-Target-Nf-Id``."""
    k = s.reselections
    extra = s.producer_ids
    if k and k - 1 < len(s.alt_producer_ids):
        extra = s.alt_producer_ids[k - 1]
    for name, value in extra or ():
        if name == b"3gpp-sbi-producer-id":
            m = _NFINST.search(value)
            if m:
                return m.group(1).decode().lower()
    if target_nf_id:
        m = _NFINST.search(target_nf_id)
        if m:
            return m.group(1).decode().lower()
    return None


# ---------------------------------------------------------------------------------------------
# encoding and sending

class OtlpEncoder:
    """``ExportTraceServiceRequest`` bytes of a batch of ``HopSpan``s."""

    def __init__(self, resource: dict[str, str]) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self._request = ExportTraceServiceRequest
        self.response = ExportTraceServiceResponse
        self.resource = dict(resource)

    def encode(self, batch: Iterable[Any]) -> bytes:
        req = self._request()
        rs = req.resource_spans.add()
        for k, v in self.resource.items():
            kv = rs.resource.attributes.add()
            kv.key = k
            kv.value.string_value = v
        ss = rs.scope_spans.add()
        ss.scope.name = SCOPE_NAME
        add = ss.spans.add
        fromhex = bytes.fromhex
        for s in batch:
            name, attrs, error, tracestate = span_fields(s)
            p = add()
            p.trace_id = fromhex(s.trace_id.decode())
            p.span_id = fromhex(s.span_id.decode())
            flags = int(s.flags, 16) & 0xFF
            if s.parent_id is not None:
                p.parent_span_id = fromhex(s.parent_id.decode())
                flags |= _FLAG_HAS_IS_REMOTE | _FLAG_IS_REMOTE
            else:
                flags |= _FLAG_HAS_IS_REMOTE
            p.flags = flags
            if tracestate:
                p.trace_state = tracestate.decode("latin-1")
            p.name = name
            p.kind = _KIND_CLIENT
            p.start_time_unix_nano = s.start_ns
            p.end_time_unix_nano = s.end_ns or s.start_ns
            a = p.attributes
            for k, v in attrs:
                kv = a.add()
                kv.key = k
                if type(v) is int:
                    kv.value.int_value = v
                else:
                    kv.value.string_value = v
            if error is not None:
                p.status.code = _STATUS_ERROR
                p.status.message = error
        return req.SerializeToString()

    def rejected(self, body: bytes) -> int:
        """Spans the receiver says it rejected (``partial_success``); 0 when it says none."""
        if not body:
            return 0
        try:
            rsp = self.response.FromString(body)
        except Exception:  # not protobuf (a proxy's error page, ...): nothing to read
            return 0
        return max(0, int(rsp.partial_success.rejected_spans))


class OtlpHttpSender:
    """POSTs encoded batches to one OTLP/HTTP URL over one kept-alive connection; retries
    once after a connection error or a retryable status (429, 502, 503, 504)."""

    def __init__(self, url: str, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.https else None)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                         timeout=self.timeout_s,
                                                         context=self.ssl_context)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, body: bytes) -> bytes:
        """The response body of a 2xx answer; raises ``OSError`` or ``RuntimeError``."""
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "nfmesh-otlp"}
        last: Exception | None = None
        for attempt in range(2):
            if attempt:
                time.sleep(min(1.0, self.timeout_s / 4))
            try:
                conn = self._connection()
                conn.request("POST", self.path, body, headers)
                rsp = conn.getresponse()
                data = rsp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()  # a kept-alive connection the receiver closed, a refused connect
                last = exc
                continue
            if 200 <= rsp.status < 300:
                return data
            last = RuntimeError(f"HTTP {rsp.status} from {self.url}: {data[:200]!r}")
            if rsp.status not in _RETRY_STATUS:
                break
        assert last is not None
        raise last


class OtlpSpanExport:
    """The ``export`` of a ``SpanBatcher``: encode a batch, POST it, return how many spans
    the receiver accepted."""

    def __init__(self, url: str, timeout_s: float, resource: dict[str, str],
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.encoder = OtlpEncoder(resource)
        self.sender = OtlpHttpSender(url, timeout_s, ssl_context)

    def __call__(self, batch: list[Any]) -> int:
        body = self.sender.post(self.encoder.encode(batch))
        return len(batch) - self.encoder.rejected(body)


def start_span_export(tracing: Any, *, instance: str = "") -> SpanBatcher:
    """A running ``SpanBatcher`` exporting to ``tracing.otlp_endpoint`` (the config was
    checked: ``config_problems``; a ``Config`` made in code was not, hence the check here)."""
    missing = otlp_missing()
    if missing:
        raise RuntimeError(f"tracing.otlp_endpoint: {missing}")
    resource = {"service.name": tracing.service_name}
    if instance:
        resource["service.instance.id"] = instance
    export = OtlpSpanExport(otlp_url(tracing.otlp_endpoint), tracing.otlp_timeout_s, resource)
    return SpanBatcher(export, max_queue=tracing.otlp_queue_size,
                       batch_size=tracing.otlp_batch_size,
                       delay_s=tracing.otlp_flush_interval_ms / 1000.0)


class SpanExportCollector:
    """Prometheus series of the span export (read at scrape time)."""

    def __init__(self, batcher: SpanBatcher) -> None:
        self.batcher = batcher

    def collect(self) -> Iterable:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        b = self.batcher
        spans = CounterMetricFamily("nfmesh_trace_spans",
                                    "Hop spans by what became of them: exported (accepted by "
                                    "the OTLP receiver), dropped (the export queue was full), "
                                    "failed (the receiver refused or could not be reached)",
                                    labels=["outcome"])
        spans.add_metric(["exported"], b.exported)
        spans.add_metric(["dropped"], b.dropped)
        spans.add_metric(["failed"], b.failed)
        yield spans
        yield GaugeMetricFamily("nfmesh_trace_span_queue", "Hop spans waiting for export",
                                value=b.pending())
