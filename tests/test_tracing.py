"""W3C Trace Context on the SBI hop (gateway/tracing.py): the parser against the spec's rules,
and a running gateway (both backends, static routes and model C, reload) that forwards the
caller's trace id with a new parent id, or starts a trace."""

from __future__ import annotations

import random

import msgspec
import pytest

from dataplane.client import H2Client
from dataplane.routing import Endpoint, Forward, LocalResponse
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.tracing import TraceContextRouter, parse_traceparent
from tests.conftest import header, start_origin

SPEC_EXAMPLE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(("value", "want"), [
    (SPEC_EXAMPLE, (b"4bf92f3577b34da6a3ce929d0e0e4736", b"01")),
    (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", (b"4bf92f3577b34da6a3ce929d0e0e4736", b"00")),
    (b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",  # a later version
     (b"4bf92f3577b34da6a3ce929d0e0e4736", b"01")),
    (None, None), (b"", None), (b"garbage", None),
    (b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # version ff
    (b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # zero trace id
    (b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # zero parent id
    (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),  # upper case
    (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", None),  # 00 with more
    (b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),  # short trace id
])
def test_parse_traceparent(value, want) -> None:
    assert parse_traceparent(value) == want


class _Inner:
    def __init__(self, decision) -> None:
        self.decision = decision

    def route(self, headers, peer):
        return self.decision

    def hop_stamp(self, headers):
        return (b"via", b"x")


def test_router_keeps_trace_new_parent_and_alternates() -> None:
    ep = Endpoint("127.0.0.1", 1)
    fwd = Forward(ep, [(b":path", b"/a"), (b"traceparent", SPEC_EXAMPLE)],
                  alternates=[(ep, [(b":path", b"/a"), (b"traceparent", SPEC_EXAMPLE)])])
    r = TraceContextRouter(_Inner(fwd), rand=random.Random(1))
    out = r.route([(b"traceparent", SPEC_EXAMPLE), (b"tracestate", b"a=1")], {})
    tps = [v for k, v in out.headers if k == b"traceparent"]
    assert len(tps) == 1
    version, trace, parent, flags = tps[0].split(b"-")
    assert (version, trace, flags) == (b"00", b"4bf92f3577b34da6a3ce929d0e0e4736", b"01")
    assert parent != b"00f067aa0ba902b7" and len(parent) == 16
    assert [v for k, v in out.alternates[0][1] if k == b"traceparent"] == tps
    assert r.hop_stamp([]) == (b"via", b"x")  # what the inner router offers stays reachable
    # not a Forward: untouched
    local = LocalResponse(404)
    assert TraceContextRouter(_Inner(local)).route([], {}) is local


def test_new_traces_are_sampled_by_ratio() -> None:
    fwd = Forward(Endpoint("127.0.0.1", 1), [])
    never = TraceContextRouter(_Inner(fwd), sample_ratio=0.0)
    always = TraceContextRouter(_Inner(fwd), sample_ratio=1.0)
    assert never.next_traceparent(None).endswith(b"-00")
    assert always.next_traceparent(b"bad").endswith(b"-01")
    ids = {always.next_traceparent(None).split(b"-")[1] for _ in range(100)}
    assert len(ids) == 100  # a new trace id each time


async def test_gateway_forwards_a_new_parent_id(backend) -> None:
    origin = await start_origin(backend, name="ausf")
    cfg = parse_config({
        "listeners": [{"name": "sbi", "port": 0}],
        "clusters": [{"name": "ausf", "endpoints": [{"host": "127.0.0.1", "port": origin.port}]}],
        "routes": [{"name": "ausf", "match": {"path_prefix": "/nausf-auth/"}, "cluster": "ausf"}],
        "tracing": {"enabled": True},
        "admin": {"enabled": False},
    })
    gw = Gateway(cfg, backend=backend.NAME)
    await gw.start()
    client = H2Client(backend.NAME)
    base = f"http://127.0.0.1:{gw.ports['sbi']}"
    try:
        for path, extra in (("/nausf-auth/v1/x", []),  # static route
                            ("/nudm-sdm/v2/x", [("3gpp-sbi-target-apiroot",  # model C
                                                 f"http://127.0.0.1:{origin.port}")])):
            r = await client.request("GET", base + path, timeout=5, headers=[
                ("user-agent", "AMF-1"), ("traceparent", SPEC_EXAMPLE.decode()),
                ("tracestate", "congo=t61rcWkgMzE"), *extra])
            assert r.status == 200
            sent = origin.handler.requests[-1]
            tp = header(sent, b"traceparent")
            assert tp.startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-") and tp.endswith(b"-01")
            assert tp.split(b"-")[2] != b"00f067aa0ba902b7"
            assert header(sent, b"tracestate") == b"congo=t61rcWkgMzE"
        # without one: a new, valid trace
        r = await client.request("GET", base + "/nausf-auth/v1/y", timeout=5,
                                 headers=[("user-agent", "AMF-1")])
        assert r.status == 200
        assert parse_traceparent(header(origin.handler.requests[-1], b"traceparent")) is not None
        # reload with tracing off: forwarded as received (here: none)
        gw.reload(msgspec.structs.replace(cfg, tracing=msgspec.structs.replace(cfg.tracing, enabled=False)))
        r = await client.request("GET", base + "/nausf-auth/v1/z", timeout=5,
                                 headers=[("user-agent", "AMF-1")])
        assert r.status == 200 and header(origin.handler.requests[-1], b"traceparent") is None
    finally:
        await client.close()
        await gw.stop(drain=False)
        await origin.stop()
