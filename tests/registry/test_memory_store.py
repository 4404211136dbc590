"""The memory store's journal file: restarts keep registrations and subscriptions; compaction;
a torn last line; a write failure leaves nothing half-applied (503 from the API)."""

from __future__ import annotations

import json
import os

import pytest

from gateway.nrf_api import NrfApi
from gateway.registry.memory_store import MemoryStore
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from tests.registry.conftest import make_profile, req


async def _registry(path: str) -> Registry:
    reg = Registry(RegistrySettings(), MemoryStore(path))
    await reg.start()
    return reg


async def test_restart_keeps_registrations_and_subscriptions(tmp_path) -> None:
    path = str(tmp_path / "registry.journal")
    reg = await _registry(path)
    a, b = make_profile("UDM"), make_profile("AMF", services=("namf-comm",))
    await reg.register(a["nfInstanceId"], a)
    await reg.register(b["nfInstanceId"], b)
    await reg.update(a["nfInstanceId"], [{"op": "add", "path": "/priority", "value": 3}])
    await reg.deregister(b["nfInstanceId"])
    sub = await reg.subscribe({"nfStatusNotificationUri": "http://127.0.0.1:9/n"})
    await reg.close()

    reg2 = await _registry(path)
    try:
        assert reg2.instance_ids() == [a["nfInstanceId"]]
        assert reg2.get(a["nfInstanceId"])["priority"] == 3
        assert reg2.get_subscription(sub["subscriptionId"])["nfStatusNotificationUri"] == "http://127.0.0.1:9/n"
    finally:
        await reg2.close()


async def test_journal_compacts_and_survives_a_torn_line(tmp_path) -> None:
    path = str(tmp_path / "j")
    reg = await _registry(path)
    p = make_profile()
    for i in range(1100):  # > 1000 journal lines: compaction rewrites the file
        await reg.update(p["nfInstanceId"], [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]) \
            if i else await reg.register(p["nfInstanceId"], p)
        if i:
            await reg.update(p["nfInstanceId"], [{"op": "add", "path": "/capacity", "value": i % 100}])
    await reg.close()
    with open(path) as fh:
        lines = fh.read().splitlines()
    assert len(lines) < 1100
    with open(path, "a") as fh:
        fh.write('{"op":"put","id":"tor')  # a crash mid-append
    reg2 = await _registry(path)
    try:
        assert reg2.get(p["nfInstanceId"])["capacity"] == 1099 % 100
    finally:
        await reg2.close()


async def test_corrupt_journal_refuses_to_start(tmp_path) -> None:
    path = tmp_path / "j"
    path.write_text('{"op":"header","format":"nfmesh-registry-journal/1"}\nGARBAGE\n{"op":"del","id":"x"}\n')
    with pytest.raises(ValueError, match="line 2"):
        await MemoryStore(str(path)).open()


async def test_write_failure_is_503_and_nothing_changes(tmp_path) -> None:
    path = tmp_path / "j"
    reg = await _registry(str(path))
    api = NrfApi(reg)
    try:
        # a real fault even for root: the journal path turns into a directory
        os.remove(path)
        os.mkdir(path)
        p = make_profile()
        r = await api.handle(req("PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode()))
        assert r.status == 503
        body = json.loads(r.body)
        assert body["cause"] == "INSUFFICIENT_RESOURCES" and "registry snapshot file" in body["detail"]
        assert len(reg) == 0
    finally:
        os.rmdir(path)
        await reg.close()
