"""The control plane of a multi-worker gateway: one registry, snapshots pushed to the workers.

With ``nfmesh run --workers N`` and the registry on, the supervising process runs this:

* the registry (store, heartbeat timers, subscriptions, notifications) exactly once;
* its NRF API on an internal h2c listener on 127.0.0.1 (workers forward NRF requests there, so
  every registration, heartbeat and discovery sees the one registry);
* the snapshot channel (``gateway.snapshot_channel``) that pushes the registered instances to
  every worker after each change.

Each worker routes model D from its last snapshot and never waits on the control plane.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dataplane.engine import Headers, load_backend
from dataplane.routing import Decision, Endpoint, Forward, Router, RouterSlot
from gateway.identity import peer_identity
from gateway.metrics import RequestStats
from gateway.snapshot_channel import SnapshotPublisher

log = logging.getLogger("nfmesh.control_plane")
# worker -> control plane (loopback only): the verified mTLS NF instance id of the caller
IDENTITY_HEADER = b"x-nfmesh-client-instance-id"


@dataclass(frozen=True, slots=True)
class ControlPlaneAddress:
    """Where a worker finds the control plane."""

    snapshot_socket: str
    nrf_host: str
    nrf_port: int

    def to_json(self) -> dict:
        return {"snapshot_socket": self.snapshot_socket, "nrf_host": self.nrf_host,
                "nrf_port": self.nrf_port}

    @classmethod
    def from_json(cls, d: dict) -> ControlPlaneAddress:
        return cls(str(d["snapshot_socket"]), str(d["nrf_host"]), int(d["nrf_port"]))


class ControlPlane:
    """Registry + internal NRF listener + snapshot publisher, in the supervising process."""

    def __init__(self, config: Any, snapshot_socket: str) -> None:
        self.config = config
        self.snapshot_socket = snapshot_socket
        self.service: Any = None
        self.publisher: SnapshotPublisher | None = None
        self.stats = RequestStats()
        self._server: Any = None
        self._proxy: Any = None
        self._pools: Any = None
        self.address: ControlPlaneAddress | None = None

    async def start(self) -> ControlPlaneAddress:
        from dataplane.listener import serve
        from dataplane.proxy import Proxy
        from dataplane.upstream_pool import UpstreamPools
        from gateway.registry.startup import start_registry
        from nf_adapters.problem_details import problem_responder
        from nf_adapters.scp_router import ChainRouter

        self.service = await start_registry(self.config)
        if self.service.token_issuer is not None:  # callers' identities come from the workers
            self.service.token_issuer.service.trusted_identity_header = IDENTITY_HEADER
        registry = self.service.registry
        self.publisher = SnapshotPublisher(
            self.snapshot_socket, lambda: (registry.version, list(registry.instances())))
        registry.add_listener(self.publisher.changed)
        await self.publisher.start()
        backend = load_backend(self.config.gateway.backend)
        settings = self.config.http2.to_h2_settings()
        slot = RouterSlot(ChainRouter([self.service.nrf_router]))
        self._pools = UpstreamPools(backend, settings)
        self._proxy = Proxy(slot, self._pools, error_responder=problem_responder, stats=self.stats)
        self._server = await serve("127.0.0.1", 0, lambda: self._proxy, backend, settings)
        port = self._server.sockets[0].getsockname()[1]
        self.address = ControlPlaneAddress(self.snapshot_socket, "127.0.0.1", port)
        log.info("control plane: registry on, NRF API for workers on 127.0.0.1:%d", port)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._proxy is not None:
            self._proxy.drain()
            await self._proxy.wait_drained(2.0)
        if self._pools is not None:
            self._pools.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.service is not None:
            await self.service.close()


class _Claim:
    """Stands in for the NRF API object so ``NrfRouter`` only decides *whether* it is NRF's."""

    service = object()


class NrfForwardRouter:
    """Worker side: requests the NRF API would claim are forwarded to the control plane."""

    __slots__ = ("claims", "endpoint")

    def __init__(self, address: ControlPlaneAddress, own_api_roots: tuple[str, ...]) -> None:
        from gateway.nrf_api import NrfRouter

        self.claims = NrfRouter(_Claim(), own_api_roots=own_api_roots)  # type: ignore[arg-type]
        self.endpoint = Endpoint(address.nrf_host, address.nrf_port)

    def route(self, headers: Headers, peer: dict) -> Decision | None:
        if self.claims.route(headers, peer) is None:
            return None
        # the control plane cannot see this connection's certificate: the worker says whose
        # it is (the NRF's /oauth2/token needs it), and never passes on a caller's own claim
        headers = [h for h in headers if h[0] != IDENTITY_HEADER]
        ident = peer_identity(peer)
        if ident is not None:
            headers.append((IDENTITY_HEADER, ident.instance_id.encode()))
        return Forward(self.endpoint, headers, cluster="nrf", timeout=10.0)


class WorkerRouting:
    """Worker side: turns snapshot frames into routers and publishes them."""

    def __init__(self, static: Router, nrf_forward: NrfForwardRouter,
                 publish: Any, timeout: float | None = None) -> None:
        from nf_adapters.model_d import CompileCache

        self.static = static
        self.nrf_forward = nrf_forward
        self.publish = publish
        self.timeout = timeout
        self.live_loads: object = None  # producers' Lci (gateway.overload), set by the gateway
        self.cache: CompileCache = {}
        self.version = -1
        self.last: tuple[int, list[tuple[dict, str]]] | None = None  # re-applied on reload

    def apply(self, version: int, instances: list[tuple[dict, str]]) -> None:
        from nf_adapters.model_d import ModelDRouter, build_snapshot
        from nf_adapters.scp_router import ChainRouter

        # frames carry whole snapshots: hand build_snapshot the dict it compiled last time
        # when a profile did not change, so only changed profiles are compiled again
        cache = self.cache
        same = []
        for profile, status in instances:
            hit = cache.get(profile.get("nfInstanceId", ""))
            same.append((hit[0] if hit is not None and hit[0] == profile else profile, status))
        snap = build_snapshot(same, version, cache)
        # model D stamps Via / Max-Forward-Hops like model C (loop protection)
        model_d = ModelDRouter(snap, timeout=self.timeout,
                               hop_stamp=getattr(self.static, "hop_stamp", None),
                               live_loads=self.live_loads)
        self.publish(ChainRouter([self.nrf_forward, model_d], fallback=self.static))
        self.version = version
        self.last = (version, instances)
