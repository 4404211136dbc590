"""Heartbeats, suspension, removal, subscription expiry, and notification delivery over real
HTTP/2 (curl as the client, an ``h2`` server as the subscriber), with retries."""

from __future__ import annotations

import asyncio
import json
import time

from dataplane.routing import Forward, LocalResponse, RouterSlot
from gateway.nrf_api import NrfApi
from gateway.registry.memory_store import MemoryStore
from gateway.registry.notifier import Notifier
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from gateway.route_snapshot import RouteSnapshotPublisher
from nf_adapters.discovery import parse_query
from nf_adapters.model_d import ModelDRouter, build_snapshot
from tests.registry.conftest import NFM, H2Sink, curl_sender, make_profile, req
from tests.waiting import wait_until


async def test_missed_heartbeats_suspend_then_heartbeat_resumes(api: NrfApi, registry: Registry, sender) -> None:
    await api.handle(req("POST", "/nnrf-nfm/v1/subscriptions", json.dumps(
        {"nfStatusNotificationUri": "http://127.0.0.1:9/n"}).encode()))
    p = make_profile("AUSF", services=("nausf-auth",))
    await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
    q = parse_query("target-nf-type=AUSF&requester-nf-type=AMF")
    assert registry.discover(q) == [p["nfInstanceId"]]
    slot = RouterSlot(ModelDRouter(build_snapshot([])))
    RouteSnapshotPublisher(registry, slot, min_interval_s=0).publish()
    model_d = [(b":method", b"POST"), (b":path", b"/nausf-auth/v1/ue-authentications"),
               (b"3gpp-sbi-discovery-target-nf-type", b"AUSF"), (b"user-agent", b"AMF")]
    assert isinstance(slot.current.route(model_d, {}), Forward)
    # heartBeatTimer 2 s + grace 0.3 s; heartbeats every 0.5 s keep it REGISTERED (time
    # passing under heartbeats is the behaviour under test, hence the clock and the sleeps)
    hb = json.dumps([{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]).encode()
    path = f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}"
    t_end = time.monotonic() + 2.6
    while time.monotonic() < t_end:
        r = await api.handle(req("PATCH", path, hb, "application/json-patch+json"))
        assert r.status == 204
        assert registry.status_of(p["nfInstanceId"]) == "REGISTERED"
        await asyncio.sleep(0.5)
    # silence: SUSPENDED, not discovered, subscribers told
    await wait_until(lambda: registry.status_of(p["nfInstanceId"]) == "SUSPENDED")
    assert registry.discover(q) == []
    assert registry.get(p["nfInstanceId"])["nfStatus"] == "SUSPENDED"
    await wait_until(lambda: isinstance(slot.current.route(model_d, {}), LocalResponse))  # not selected
    await wait_until(lambda: any(json.loads(b).get("profileChanges") for _, b in sender.sent))
    change = next(json.loads(b) for _, b in sender.sent if json.loads(b).get("profileChanges"))
    assert change["event"] == "NF_PROFILE_CHANGED"
    assert change["profileChanges"] == [{"op": "REPLACE", "path": "/nfStatus", "origValue": "REGISTERED",
                                         "newValue": "SUSPENDED"}]
    # the next heartbeat brings it back
    n_before = len(sender.sent)
    r = await api.handle(req("PATCH", path, hb, "application/json-patch+json"))
    assert r.status == 204
    assert registry.status_of(p["nfInstanceId"]) == "REGISTERED"
    assert registry.discover(q) == [p["nfInstanceId"]]
    await wait_until(lambda: len(sender.sent) > n_before)
    assert json.loads(sender.sent[-1][1])["nfProfile"]["nfStatus"] == "REGISTERED"


async def test_suspended_instances_are_removed_by_policy(sender) -> None:
    s = RegistrySettings(heartbeat_timer_s=1, heartbeat_grace_s=0.1, suspended_removal_s=0.3,
                         sweep_interval_s=0.05)
    reg = Registry(s, MemoryStore(None), Notifier(sender))
    await reg.start()
    try:
        await reg.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n"})
        p = make_profile("SMF", services=("nsmf-pdusession",))
        await reg.register(p["nfInstanceId"], p)
        await wait_until(lambda: len(reg) == 0)
        await wait_until(lambda: any(json.loads(b)["event"] == "NF_DEREGISTERED" for _, b in sender.sent))
    finally:
        await reg.close()


async def test_expired_subscriptions_are_dropped(registry: Registry) -> None:
    data = await registry.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n",
                                     "validityTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime(time.time() + 1.2))})
    assert registry.get_subscription(data["subscriptionId"])
    await wait_until(lambda: data["subscriptionId"] not in registry._subs)


async def test_notifications_over_http2_with_retry(h2sink: H2Sink, schemas) -> None:
    h2sink.fail_first = 1  # the first attempt gets 503: the notifier must retry
    s = RegistrySettings(api_root="http://nrf.test:8000")
    notifier = Notifier(curl_sender(), backoff_s=0.05)
    reg = Registry(s, MemoryStore(None), notifier)
    await reg.start()
    try:
        await reg.subscribe({"nfStatusNotificationUri": f"http://127.0.0.1:{h2sink.port}/cb/nf-status",
                             "subscrCond": {"serviceName": "nudm-sdm"}})
        await reg.register((p := make_profile("UDM"))["nfInstanceId"], p)
        await reg.register((o := make_profile("AUSF", services=("nausf-auth",)))["nfInstanceId"], o)
        # registering must not wait for delivery
        assert notifier.sent == 0
        await asyncio.wait_for(h2sink.arrived.wait(), 10)
        hdrs, body = h2sink.received[0]
        assert hdrs[":method"] == "POST" and hdrs[":path"] == "/cb/nf-status"
        assert hdrs["content-type"] == "application/json"
        data = json.loads(body)
        schemas.check(data, NFM, "NotificationData")
        assert data["event"] == "NF_REGISTERED" and data["nfProfile"]["nfInstanceId"] == p["nfInstanceId"]
        await wait_until(lambda: notifier.sent == 1)
        assert len(h2sink.received) == 1  # the AUSF does not match the subscription's serviceName
    finally:
        await reg.close()


async def test_notifications_through_the_mesh_carry_target_apiroot(h2sink: H2Sink) -> None:
    """With ``notify_via`` the POST goes to the gateway listener as SCP model C."""
    seen = []

    async def via_sender(method, url, headers, body, timeout):
        seen.append((url, dict(headers)))
        return 204

    n = Notifier(via_sender, via="127.0.0.1:7777")
    n.start()
    try:
        n.post("http://udm.example.com:8080/cb/x?y=1", b"{}")
        await wait_until(lambda: seen)
        url, headers = seen[0]
        assert url == "http://127.0.0.1:7777/cb/x?y=1"
        assert headers["3gpp-sbi-target-apiroot"] == "http://udm.example.com:8080"
    finally:
        await n.close()


async def test_notifier_queue_is_bounded_and_gives_up() -> None:
    calls = 0

    async def failing(method, url, headers, body, timeout):
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError

    n = Notifier(failing, attempts=3, backoff_s=0.01, max_queue=5, workers=1)
    for i in range(8):
        n.post(f"http://127.0.0.1:9/{i}", b"{}")
    assert n.pending == 5 and n.dropped == 3
    n.start()
    try:
        await wait_until(lambda: n.failed == 5)
        assert calls == 15  # 5 notifications x 3 attempts
    finally:
        await n.close()
