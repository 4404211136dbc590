"""The etcd store with a real etcd: replicas see each other's changes, heartbeats are leases,
lease expiry suspends on every replica with one notification, etcd down -> 503, no half-writes."""

from __future__ import annotations

import asyncio
import json

import pytest

from dataplane.routing import Forward, RouterSlot
from gateway.nrf_api import NrfApi
from gateway.registry.etcd_store import EtcdStore
from gateway.registry.notifier import Notifier
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from gateway.route_snapshot import RouteSnapshotPublisher
from nf_adapters.discovery import parse_query
from nf_adapters.model_d import ModelDRouter, build_snapshot
from tests.registry.conftest import RecordingSender, make_profile, req
from tests.waiting import wait_until

pytestmark = pytest.mark.etcd

SETTINGS = RegistrySettings(heartbeat_timer_s=1, heartbeat_grace_s=0.0, sweep_interval_s=0.1,
                            api_root="http://nrf.test:8000")


async def _replica(etcd, sender: RecordingSender | None = None, prefix: str = "/t") -> Registry:
    reg = Registry(SETTINGS, EtcdStore([etcd.endpoint], prefix, timeout_s=1.0),
                   Notifier(sender or RecordingSender(), backoff_s=0.01))
    await reg.start()
    return reg


def _model_d_get(router) -> object:
    return router.route([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/nudm-sdm/v2/x"),
                         (b"3gpp-sbi-discovery-target-nf-type", b"UDM"), (b"user-agent", b"AMF")], {})


async def test_register_on_a_discover_and_route_on_b(etcd) -> None:
    a, b = await _replica(etcd), await _replica(etcd)
    slot = RouterSlot(ModelDRouter(build_snapshot([])))
    RouteSnapshotPublisher(b, slot).publish()
    try:
        api_a, api_b = NrfApi(a), NrfApi(b)
        p = make_profile("UDM", ip="10.7.7.7")
        r = await api_a.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
        assert r.status == 201
        q = parse_query("target-nf-type=UDM&requester-nf-type=AMF")
        await wait_until(lambda: b.discover(q) == [p["nfInstanceId"]])  # B's etcd watch
        r = await api_b.handle(req("GET", "/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF",
                                   ctype=None))
        assert [i["nfInstanceId"] for i in json.loads(r.body)["nfInstances"]] == [p["nfInstanceId"]]
        await wait_until(lambda: isinstance(_model_d_get(slot.current), Forward))
        assert _model_d_get(slot.current).endpoint.host == "10.7.7.7"
        # an update on B reaches A; a deregistration on B removes it on A
        await b.update(p["nfInstanceId"], [{"op": "add", "path": "/priority", "value": 9}])
        await wait_until(lambda: a.get(p["nfInstanceId"]).get("priority") == 9)
        await b.deregister(p["nfInstanceId"])
        await wait_until(lambda: len(a) == 0)
        # a subscription made on A is known to B
        sub = await a.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n"})
        await wait_until(lambda: sub["subscriptionId"] in b._subs)
    finally:
        await a.close()
        await b.close()


async def test_lease_expiry_suspends_everywhere_and_one_replica_notifies(etcd) -> None:
    sa, sb = RecordingSender(), RecordingSender()
    a, b = await _replica(etcd, sa), await _replica(etcd, sb)
    try:
        await a.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n"})
        await wait_until(lambda: len(b._subs) == 1)
        p = make_profile("AUSF", services=("nausf-auth",))
        await a.register(p["nfInstanceId"], p)
        await wait_until(lambda: p["nfInstanceId"] in b._profiles)
        # heartbeats through B keep the lease (registered through A) alive
        for _ in range(6):
            await b.update(p["nfInstanceId"], [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}])
            await asyncio.sleep(0.4)  # time passing under heartbeats is the test (1 s lease)
            assert a.status_of(p["nfInstanceId"]) == "REGISTERED"
        # silence: etcd expires the lease, both replicas suspend
        await wait_until(lambda: a.status_of(p["nfInstanceId"]) == "SUSPENDED"
                         and b.status_of(p["nfInstanceId"]) == "SUSPENDED")
        await wait_until(lambda: any(b"profileChanges" in body for _, body in sa.sent + sb.sent))
        # an absence cannot be awaited: a window in which a second replica's duplicate would show
        await asyncio.sleep(0.3)
        changes = [json.loads(body) for _, body in sa.sent + sb.sent if b"profileChanges" in body]
        assert len(changes) == 1 and changes[0]["profileChanges"][0]["newValue"] == "SUSPENDED"
        # a heartbeat through A revives it on both
        await a.update(p["nfInstanceId"], [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}])
        await wait_until(lambda: b.status_of(p["nfInstanceId"]) == "REGISTERED")
    finally:
        await a.close()
        await b.close()


async def test_restart_reloads_from_etcd(etcd) -> None:
    a = await _replica(etcd)
    p = make_profile()
    await a.register(p["nfInstanceId"], p)
    sub = await a.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n"})
    await a.close()
    c = await _replica(etcd)
    try:
        assert c.get(p["nfInstanceId"])["nfType"] == "UDM"
        assert c.get_subscription(sub["subscriptionId"])
    finally:
        await c.close()


async def test_etcd_down_is_503_nothing_half_written_and_routing_continues(etcd) -> None:
    a = await _replica(etcd)
    slot = RouterSlot(ModelDRouter(build_snapshot([])))
    RouteSnapshotPublisher(a, slot).publish()
    api = NrfApi(a)
    try:
        p = make_profile("UDM", ip="10.8.8.8")
        await a.register(p["nfInstanceId"], p)
        await wait_until(lambda: isinstance(_model_d_get(slot.current), Forward))  # published
        etcd.stop()
        q = make_profile("UDM")
        r = await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{q['nfInstanceId']}", json.dumps(q).encode()))
        assert r.status == 503
        body = json.loads(r.body)
        assert body["cause"] == "NF_CONGESTION" and "etcd" in body["detail"]
        assert q["nfInstanceId"] not in a._profiles
        r = await api.handle(req("DELETE", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", ctype=None))
        assert r.status == 503
        assert a.get(p["nfInstanceId"])  # still there
        d = _model_d_get(slot.current)
        assert isinstance(d, Forward) and d.endpoint.host == "10.8.8.8"
        # etcd back: the same replica works again
        etcd.start()

        async def registered() -> bool:
            put = req("PUT", f"/nnrf-nfm/v1/nf-instances/{q['nfInstanceId']}", json.dumps(q).encode())
            return (await api.handle(put)).status == 201

        await wait_until(registered, what="a PUT succeeds once etcd is back", interval=0.1)
    finally:
        await a.close()


async def test_removal_by_policy_happens_once_across_replicas(etcd) -> None:
    s = RegistrySettings(heartbeat_timer_s=1, heartbeat_grace_s=0.0, suspended_removal_s=0.3,
                         sweep_interval_s=0.05)
    senders = [RecordingSender(), RecordingSender()]
    regs = []
    for snd in senders:
        reg = Registry(s, EtcdStore([etcd.endpoint], "/rm", timeout_s=1.0), Notifier(snd, backoff_s=0.01))
        await reg.start()
        regs.append(reg)
    a, b = regs
    try:
        await a.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n", "reqNotifEvents": ["NF_DEREGISTERED"]})
        await wait_until(lambda: len(b._subs) == 1)
        p = make_profile("NSSF", services=("nnssf-nsselection",))
        await b.register(p["nfInstanceId"], p)
        await wait_until(lambda: len(a) == 0 and len(b) == 0)  # lease expiry, then removal
        await wait_until(lambda: any(snd.sent for snd in senders))
        # an absence cannot be awaited: a window in which a second replica's duplicate would show
        await asyncio.sleep(0.3)
        events = [json.loads(body)["event"] for snd in senders for _, body in snd.sent]
        assert events == ["NF_DEREGISTERED"]
    finally:
        await a.close()
        await b.close()
