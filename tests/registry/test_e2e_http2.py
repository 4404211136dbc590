"""End to end over HTTP/2: the gateway's listener and Proxy with the registry's router chain
(NRF API, model D, model C from nf_adapters.scp_router), driven by curl (a real HTTP/2 client);
notifications delivered by dataplane.client.H2Client to a real h2 server."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import pytest

from gateway.registry.startup import start_registry
from nf_adapters.scp_router import ChainRouter
from tests.conftest import StaticRouter, free_port, start_origin, start_proxy
from tests.registry.conftest import DISC, NFM, H2Sink, make_profile
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


async def curl(port: int, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    exe = shutil.which("curl")
    if exe is None:
        pytest.skip("curl not installed")
    args = [exe, "-s", "-i", "--http2-prior-knowledge", "--max-time", "5", "-X", method]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        args += ["--data-binary", "@-"]
    args.append(f"http://127.0.0.1:{port}{path}")
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(body or b"")
    head, _, rest = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


@pytest.fixture
async def mesh(backend):
    origin = await start_origin(backend, "udm-origin")
    proxy = await start_proxy(backend, StaticRouter(origin.endpoint))
    slot = proxy.handler.router_slot
    # wired as gateway.app does it: the static (model C) router last, a publish callback
    svc = await start_registry(
        {"heartbeat_timer_s": 5, "api_root": f"http://127.0.0.1:{proxy.port}"}, slot.current,
        lambda router: setattr(slot, "current", router),
    )
    assert isinstance(slot.current, ChainRouter)
    try:
        yield origin, proxy, svc
    finally:
        await svc.close()
        await proxy.stop()
        await origin.stop()


async def _published(svc, nf_type: str, n: int) -> None:
    """Wait until the data plane's snapshot holds ``n`` producers of ``nf_type`` (rebuilds are
    spaced by ``min_interval_s``)."""
    await wait_until(lambda: len(svc.publisher.snapshot.by_type.get(nf_type, ())) == n,
                     what=f"the snapshot holds {n} {nf_type}")


async def _register(port: int, p: dict, extra: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    return await curl(port, "PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", json.dumps(p).encode(),
                      {"content-type": "application/json", **(extra or {})})


async def test_register_discover_and_route_model_d(mesh, schemas) -> None:
    origin, proxy, svc = mesh
    p = make_profile("UDM", ip="127.0.0.1", port=origin.port)
    status, hdrs, body = await _register(proxy.port, p)
    assert status == 201, body
    assert hdrs["location"].endswith(f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}")
    schemas.check(json.loads(body), NFM, "NFProfile")

    status, hdrs, body = await curl(proxy.port, "GET",
                                    "/nnrf-disc/v1/nf-instances?target-nf-type=UDM&requester-nf-type=AMF")
    assert status == 200 and hdrs["content-type"] == "application/json"
    result = json.loads(body)
    schemas.check(result, DISC, "SearchResult")
    assert [i["nfInstanceId"] for i in result["nfInstances"]] == [p["nfInstanceId"]]
    await _published(svc, "UDM", 1)

    # model D: the consumer names only the NF type and service; the gateway finds the producer
    status, hdrs, body = await curl(proxy.port, "GET", "/headers", headers={
        "3gpp-sbi-discovery-target-nf-type": "UDM", "3gpp-sbi-discovery-service-names": "nudm-sdm",
        "user-agent": "AMF-test"})
    assert status == 200, body
    assert hdrs["3gpp-sbi-producer-id"].startswith(f"nfinst={p['nfInstanceId']}")
    seen = dict(json.loads(body))
    assert seen[":authority"] == f"127.0.0.1:{origin.port}"
    assert not any(k.startswith("3gpp-sbi-discovery-") for k in seen)

    # nothing eligible: ProblemDetails from the gateway
    status, hdrs, body = await curl(proxy.port, "GET", "/nausf-auth/v1/x", headers={
        "3gpp-sbi-discovery-target-nf-type": "AUSF"})
    assert status == 504 and json.loads(body)["cause"] == "NF_DISCOVERY_FAILURE"
    schemas.check(json.loads(body), "TS29571_CommonData.yaml", "ProblemDetails")


async def test_indirect_mode_nrf_requests_and_bad_input(mesh, schemas) -> None:
    origin, proxy, svc = mesh
    p = make_profile("AMF", services=("namf-comm",), ip="127.0.0.1", port=origin.port)
    status, _, body = await _register(proxy.port, p, {"3gpp-sbi-discovery-target-nf-type": "NRF",
                                                      "user-agent": "AMF-open5gs"})
    assert status == 201, body
    hb = json.dumps([{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]).encode()
    status, _, body = await curl(proxy.port, "PATCH", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}", hb,
                                 {"content-type": "application/json-patch+json",
                                  "3gpp-sbi-discovery-target-nf-type": "NRF"})
    assert status == 204 and body == b""
    status, hdrs, body = await curl(proxy.port, "PUT", f"/nnrf-nfm/v1/nf-instances/{uuid.uuid4()}",
                                    json.dumps(p).encode(), {"content-type": "application/json"})
    assert status == 400 and hdrs["content-type"] == "application/problem+json"
    pd = json.loads(body)
    schemas.check(pd, "TS29571_CommonData.yaml", "ProblemDetails")
    assert pd["cause"] == "MANDATORY_IE_INCORRECT" and pd["invalidParams"][0]["param"] == "/nfInstanceId"
    status, _, body = await curl(proxy.port, "PUT", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}",
                                 json.dumps(p).encode(), {"content-type": "text/plain"})
    assert status == 415
    status, _, _ = await curl(proxy.port, "DELETE", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}")
    assert status == 204


async def test_uri_list_and_patch_errors_over_http2(mesh, schemas) -> None:
    """Issue 13 on the wire: the UriList keeps its application/3gppHal+json type through the
    HTTP/2 engine, and a patch with a non-ASCII array index is a 400 ProblemDetails."""
    origin, proxy, svc = mesh
    p = make_profile("AMF", services=("namf-comm",), ip="127.0.0.1", port=origin.port)
    assert (await _register(proxy.port, p))[0] == 201
    status, hdrs, body = await curl(proxy.port, "GET", "/nnrf-nfm/v1/nf-instances?nf-type=AMF&limit=10")
    assert status == 200 and hdrs["content-type"] == "application/3gppHal+json", body
    uri_list = json.loads(body)
    schemas.check(uri_list, NFM, "UriList")
    assert [i["href"] for i in uri_list["_links"]["item"]] == [
        f"http://127.0.0.1:{proxy.port}/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}"]
    status, hdrs, body = await curl(proxy.port, "GET", "/nnrf-nfm/v1/nf-instances?limit=0")
    assert status == 400 and json.loads(body)["cause"] == "INVALID_QUERY_PARAM"
    ops = [{"op": "replace", "path": "/ipv4Addresses/\u00b2", "value": "127.0.0.2"}]
    status, hdrs, body = await curl(proxy.port, "PATCH", f"/nnrf-nfm/v1/nf-instances/{p['nfInstanceId']}",
                                    json.dumps(ops, ensure_ascii=False).encode(),
                                    {"content-type": "application/json-patch+json"})
    assert status == 400 and hdrs["content-type"] == "application/problem+json", body
    pd = json.loads(body)
    schemas.check(pd, "TS29571_CommonData.yaml", "ProblemDetails")
    assert pd["cause"] == "INVALID_MSG_FORMAT" and pd["invalidParams"][0]["param"] == "/0"


async def test_reselection_to_an_alternate_producer(mesh) -> None:
    origin, proxy, svc = mesh
    dead = make_profile("UDM", ip="127.0.0.1", port=free_port(), priority=1)  # nobody listens there
    alive = make_profile("UDM", ip="127.0.0.1", port=origin.port, priority=2)
    for p in (dead, alive):
        assert (await _register(proxy.port, p))[0] == 201
    await _published(svc, "UDM", 2)
    status, hdrs, body = await curl(proxy.port, "GET", "/nudm-sdm/v2/imsi-1/am-data", headers={
        "3gpp-sbi-discovery-target-nf-type": "UDM", "user-agent": "AMF-x"})
    assert status == 200 and body == b"ok udm-origin"
    # the producer that answered is named, not the first pick that could not be reached
    assert hdrs.get("3gpp-sbi-producer-id", "").startswith(f"nfinst={alive['nfInstanceId']};")


async def test_notifications_through_h2client(mesh) -> None:
    origin, proxy, svc = mesh
    sink = H2Sink()
    await sink.start()
    try:
        status, _, body = await curl(proxy.port, "POST", "/nnrf-nfm/v1/subscriptions", json.dumps({
            "nfStatusNotificationUri": f"http://127.0.0.1:{sink.port}/nf-status",
            "reqNotifEvents": ["NF_REGISTERED"]}).encode(), {"content-type": "application/json"})
        assert status == 201, body
        p = make_profile("SMF", services=("nsmf-pdusession",), ip="127.0.0.1", port=origin.port)
        assert (await _register(proxy.port, p))[0] == 201
        await asyncio.wait_for(sink.arrived.wait(), 5)
        hdrs, data = sink.received[0]
        note = json.loads(data)
        assert note["event"] == "NF_REGISTERED" and note["nfProfile"]["nfInstanceId"] == p["nfInstanceId"]
        assert hdrs[":path"] == "/nf-status"
    finally:
        await sink.close()
