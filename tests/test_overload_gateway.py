"""Overload protection as the gateway wires it (gateway/overload.py): on in the default config,
the engine taps the producers' OCI/LCI, a reload changes the knobs and keeps what was learned,
switching it off needs a restart, and the Prometheus view shows limits, queues and shedding."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest

from dataplane.client import H2Client
from gateway.app import Gateway
from gateway.config import Config, parse_config
from gateway.overload import OverloadProtection
from tests.conftest import start_origin


def test_default_config_protects_and_off_means_none() -> None:
    assert Config().overload.enabled
    assert OverloadProtection.from_config(Config()) is not None
    off = parse_config({"overload": {"enabled": False}})
    assert OverloadProtection.from_config(off) is None


@pytest.mark.parametrize("doc, path", [
    ({"overload": {"limit": {"min": 50, "max": 10}}}, "overload.limit.min"),
    ({"overload": {"limit": {"initial": 5000}}}, "overload.limit.initial"),
    ({"overload": {"queue": {"target_delay_ms": 500, "interval_ms": 100}}},
     "overload.queue.target_delay_ms"),
    ({"overload": {"default_priority": 3}}, "overload.default_priority"),
    ({"overload": {"top_band": 40}}, "overload.top_band"),
    ({"overload": {"reserved_share": 0.95}}, "overload.reserved_share"),
])
def test_bad_overload_config_names_the_field(doc: dict, path: str) -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert any(e.path == path for e in err.value.errors), err.value


async def test_gateway_protects_reloads_and_reports(backend) -> None:
    origin = await start_origin(backend)
    cfg = parse_config({"gateway": {"backend": backend.NAME, "workers": 1},
                        "listeners": [{"name": "sbi", "host": "127.0.0.1", "port": 0}]})
    gw = Gateway(cfg)
    await gw.start()
    client = H2Client(backend.NAME)
    try:
        assert gw.overload is not None and gw.proxy.admission is gw.overload.controller
        resp = await client.request(
            "GET", f"http://127.0.0.1:{gw.ports['sbi']}/hello",
            [("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}"),
             ("3gpp-sbi-message-priority", "4"), ("user-agent", "AMF-1")])
        assert resp.status == 200
        bad = await client.request(
            "GET", f"http://127.0.0.1:{gw.ports['sbi']}/hello",
            [("3gpp-sbi-target-apiroot", f"http://127.0.0.1:{origin.port}"),
             ("3gpp-sbi-message-priority", "x")])
        assert bad.status == 400 and bad.json()["cause"] == "OPTIONAL_IE_INCORRECT"
        ctl = gw.overload.controller
        gate = next(iter(ctl.gates.values()))
        assert gate.forwarded == 1 and gate.in_flight == 0
        # the Prometheus view
        reg = CollectorRegistry()
        reg.register(gw.overload)
        text = generate_latest(reg).decode()
        assert "nfmesh_producer_concurrency_limit{" in text
        assert f'endpoint="127.0.0.1:{origin.port}"' in text
        assert "nfmesh_gateway_overloaded 0.0" in text
        # a reload: new knobs, the gate (and what it learned) kept
        new = msgspec.structs.replace(cfg, overload=parse_config(
            {"overload": {"limit": {"max": 8, "initial": 8}}}).overload)
        pending = gw.reload(new)
        assert "overload" not in pending
        assert ctl.settings.max_limit == 8 and ctl.gates[gate.key] is gate and gate.limit <= 8
        # switching it off needs a restart
        off = msgspec.structs.replace(cfg, overload=parse_config(
            {"overload": {"enabled": False}}).overload)
        assert "overload" in gw.reload(off)
    finally:
        client.close()
        await gw.stop(drain=False)
        await origin.stop()


async def test_gateway_overloaded_itself_sheds_the_normal_band_and_sends_its_own_oci() -> None:
    import asyncio

    from dataplane.admission import GO
    from nf_adapters import sbi_headers as sh
    from nf_adapters.problem_details import problem_responder

    protection = OverloadProtection.from_config(parse_config({"gateway": {"name": "scp-7"}}))
    ctl = protection.controller
    loop = asyncio.get_running_loop()
    for _ in range(3):  # three event-loop ticks in a row 200 ms late
        ctl._lag_expected = loop.time() - 0.2
        ctl._lag_tick(0.02)
    ctl.stop()
    assert ctl.self_overloaded

    class Ex:
        def __init__(self, priority: int) -> None:
            self.priority, self.due, self.consumer, self.endpoint = priority, 0.0, None, "p"
            self.cluster, self.scopes, self.done, self.gate, self.sent_at = "c", (), False, None, -1.0

    refused = ctl.admit(Ex(16))
    assert refused[:2] == (503, "NF_CONGESTION")
    assert ctl.admit(Ex(1)) == GO  # MPS/emergency still go
    resp = protection.error_responder(problem_responder)(*refused)
    oci = dict(resp.headers)[b"3gpp-sbi-oci"]
    (element,) = sh.parse_oci(oci)
    assert (element.scope.kind, element.scope.value) == ("SCP-FQDN", "scp-7")
    assert 10 <= element.reduction_pct <= 90 and element.validity_s == 5
    for _ in range(3):  # and back once the loop keeps time again
        ctl._lag_expected = loop.time()
        ctl._lag_tick(0.02)
    ctl.stop()
    assert not ctl.self_overloaded
    assert b"3gpp-sbi-oci" not in dict(protection.error_responder(problem_responder)(*refused).headers)
