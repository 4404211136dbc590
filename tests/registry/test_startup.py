"""The gateway's entry point: settings from the real config model, the published router chain,
metrics collectors, and the bench's main() (small sizes, memory store)."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from dataplane.routing import Forward, LocalResponse, LocalService, RouterSlot
from gateway.config import Config, EtcdSection, Listener, RegistrySection
from gateway.metrics import new_registry
from gateway.registry import start_registry
from gateway.registry.settings import RegistrySettings
from gateway.registry.startup import settings_of
from tests.registry.conftest import make_profile
from tests.waiting import wait_until


class _Static:
    """Stands for the model C router: answers everything it is asked."""

    def route(self, headers, peer):
        return LocalResponse(299, [], b"static")


def test_settings_from_the_gateway_config() -> None:
    cfg = Config(listeners=[Listener(name="sbi", host="0.0.0.0", port=7777)],
                 registry=RegistrySection(enabled=True, store="etcd", heartbeat_timer_s=30,
                                          etcd=EtcdSection(endpoints=["10.0.0.1:2379"], prefix="/x/")))
    s = settings_of(cfg)
    assert s.store == "etcd" and s.heartbeat_timer_s == 30 and s.heartbeat_grace_s == 5
    assert s.etcd_endpoints == ("10.0.0.1:2379",) and s.etcd_prefix == "/x"
    assert s.api_root == "http://127.0.0.1:7777"  # api_root null -> first listener
    assert settings_of(RegistrySettings(store="memory")).store == "memory"
    assert RegistrySettings.from_config({"store": "memory", "heartbeat_timer_s": 3}).heartbeat_timer_s == 3


async def test_start_registry_as_gateway_app_calls_it() -> None:
    published = []
    svc = await start_registry(Config(registry=RegistrySection(enabled=True)), _Static(), published.append)
    try:
        router = published[-1]
        nrf = router.route([(b":method", b"GET"), (b":path", b"/nnrf-disc/v1/nf-instances")], {})
        assert isinstance(nrf, LocalService)
        other = router.route([(b":method", b"GET"), (b":path", b"/nudm-sdm/v2/x")], {})
        assert isinstance(other, LocalResponse) and other.status == 299  # the static router's
        p = make_profile("UDM", ip="10.1.1.1")
        await svc.registry.register(p["nfInstanceId"], p)
        def routed() -> Forward | None:  # the newest published router forwards it
            d = published[-1].route([(b":method", b"GET"), (b":path", b"/nudm-sdm/v2/x"),
                                     (b"3gpp-sbi-discovery-target-nf-type", b"UDM")], {})
            return d if isinstance(d, Forward) else None

        d = await wait_until(routed)
        assert d.endpoint.host == "10.1.1.1"
        text = generate_latest(new_registry(*svc.collectors())).decode()
        assert 'nfmesh_registry_nf_instances{nf_type="UDM",status="REGISTERED"} 1.0' in text
    finally:
        await svc.close()


async def test_start_registry_into_a_slot() -> None:
    slot = RouterSlot(_Static())
    svc = await start_registry({"store": "memory"}, slot)
    try:
        assert isinstance(slot.current.route([(b":path", b"/nnrf-nfm/v1/nf-instances")], {}), LocalService)
    finally:
        await svc.close()


def test_bench_main_small(capsys) -> None:
    from perf.registry_bench import main

    assert main(["--profiles", "30", "--ops", "40", "--stores", "memory", "--cpu", "-1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["results"][0]
    assert r["profiles"] == 30 and r["registrations_per_s"] > 0 and r["heartbeats_per_s"] > 0
    assert r["discovery_queries_per_s"] > 0 and r["discovery_matches_per_query"] == [3, 1, 3, 1]
