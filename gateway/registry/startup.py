"""One entry point for the gateway: build the registry, its NRF API and the model D routing.

``start_registry(config, static_router, publish)`` (what ``gateway.app`` calls) opens the
configured store, loads it, starts heartbeat timers and the notifier, and after every registry
change publishes ``ChainRouter([nrf_router, model_d_router, static_router])``:

* the NRF router claims ``/nnrf-nfm/...``, ``/nnrf-disc/...`` and requests with
  ``3gpp-Sbi-Discovery-target-nf-type: NRF`` (indirect-mode NFs);
* the model D router claims requests with ``3gpp-Sbi-Discovery-*`` and no Target-apiRoot;
* everything else goes to ``static_router`` (SCP model C and static routes).

``RegistryService.close()`` stops all of it; ``collectors()`` gives Prometheus collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dataplane.engine import Headers
from dataplane.routing import Decision, Router, RouterSlot
from gateway.nrf_api import NrfApi, NrfRouter
from gateway.registry.memory_store import MemoryStore
from gateway.registry.notifier import Notifier, Sender
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from gateway.registry.store import RegistryStore
from gateway.route_snapshot import RouteSnapshotPublisher
from nf_adapters.model_d import ModelDRouter
from nf_adapters.problem_details import problem


class FirstMatchRouter:
    """Asks each router in turn; the first answer that is not ``None`` wins (used when
    ``nf_adapters.scp_router.ChainRouter`` is not available)."""

    def __init__(self, routers: list[Router]) -> None:
        self.routers = routers

    def route(self, headers: Headers, peer: dict) -> Decision:
        for r in self.routers:
            d = r.route(headers, peer)
            if d is not None:
                return d
        return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND",
                       "no route: not an NRF request and no 3gpp-Sbi-Discovery/Target-apiRoot")


def chain(routers: list[Router]) -> Router:
    """The project's ``ChainRouter`` when present, else ``FirstMatchRouter``."""
    try:
        from nf_adapters.scp_router import ChainRouter  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return FirstMatchRouter(routers)
    return ChainRouter(routers)


@dataclass(slots=True)
class RegistryService:
    """What ``start_registry`` returns: the parts the gateway may want to reach."""

    settings: RegistrySettings
    registry: Registry
    api: NrfApi
    nrf_router: NrfRouter
    publisher: RouteSnapshotPublisher | None
    token_issuer: Any = None  # gateway.registry.access_token.TokenIssuer, when oauth2 is on

    async def close(self) -> None:
        if self.token_issuer is not None:
            await self.token_issuer.close()
        await self.registry.close()

    def collectors(self) -> list[object]:
        """Prometheus collectors (objects with ``collect()``) for the metrics endpoint."""
        return [_RegistryCollector(self)]


class _RegistryCollector:
    def __init__(self, svc: RegistryService) -> None:
        self.svc = svc

    def collect(self) -> Iterable:
        reg = self.svc.registry
        g = GaugeMetricFamily("nfmesh_registry_nf_instances", "NF instances in the registry",
                              labels=["nf_type", "status"])
        counts: dict[tuple[str, str], int] = {}
        for p, status in reg.instances():
            key = (p.get("nfType", ""), status)
            counts[key] = counts.get(key, 0) + 1
        for (t, s), n in sorted(counts.items()):
            g.add_metric([t, s], n)
        yield g
        yield GaugeMetricFamily("nfmesh_registry_subscriptions", "NF status subscriptions",
                                value=len(reg._subs))
        n = reg.notifier
        if n is not None:
            c = CounterMetricFamily("nfmesh_registry_notifications",
                                    "NF status notifications by outcome", labels=["outcome"])
            c.add_metric(["sent"], n.sent)
            c.add_metric(["failed"], n.failed)
            c.add_metric(["dropped"], n.dropped)
            yield c
        pub = self.svc.publisher
        if pub is not None:
            yield GaugeMetricFamily("nfmesh_route_snapshot_version",
                                    "Registry version of the published model D snapshot",
                                    value=pub.snapshot.version)


def make_store(settings: RegistrySettings) -> RegistryStore:
    """The store the settings name (etcd imported only when used)."""
    if settings.store == "etcd":
        from gateway.registry.etcd_store import EtcdStore  # noqa: PLC0415 (grpc only when used)

        return EtcdStore(list(settings.etcd_endpoints), settings.etcd_prefix,
                         timeout_s=settings.etcd_timeout_s)
    return MemoryStore(settings.snapshot_file)


def settings_of(config: object) -> RegistrySettings:
    """``RegistrySettings`` from the whole gateway config, its ``registry`` section, or a
    ``RegistrySettings``.  With the whole config and no ``api_root``, the first listener's
    address is this NRF's apiRoot."""
    if isinstance(config, RegistrySettings):
        return config
    section = getattr(config, "registry", None)
    if section is None:
        return RegistrySettings.from_config(config)
    settings = RegistrySettings.from_config(section)
    if getattr(section, "api_root", None) is None:
        listeners = list(getattr(config, "listeners", None) or ())
        if listeners:
            lst = listeners[0]
            scheme = "https" if getattr(lst, "protocol", "h2c") == "tls" else "http"
            host = str(getattr(lst, "host", "127.0.0.1"))
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            from dataclasses import replace  # noqa: PLC0415

            settings = replace(settings, api_root=f"{scheme}://{host}:{getattr(lst, 'port', 80)}")
    return settings


async def start_registry(
    config: object,
    static_router: Router | RouterSlot | None = None,
    publish: Callable[[Router], None] | None = None,
    *,
    build_router: Callable[[NrfRouter | None, ModelDRouter], Router] | None = None,
    sender: Sender | None = None,
    store: RegistryStore | None = None,
    upstream_timeout: float | None = None,
) -> RegistryService:
    """Start the registry described by ``config`` (whole config, section or settings).

    Routers are published with ``publish(router)`` (or into ``static_router`` when it is a
    ``RouterSlot``).  The published router is ``build_router(nrf_or_None, model_d)`` when given,
    else ``chain([nrf, model_d, static_router])`` (``nrf`` left out when ``nrf_api`` is off).
    ``sender`` overrides how notifications are POSTed (default: ``dataplane.client.H2Client``).
    """
    settings = settings_of(config)
    if isinstance(static_router, RouterSlot):
        slot = static_router
        static: Router | None = None

        def publish_to_slot(r: Router) -> None:
            slot.current = r

        publish = publish or publish_to_slot
    else:
        static = static_router
    notifier = Notifier(sender, via=settings.notify_via, attempts=settings.notify_attempts,
                        max_queue=settings.notify_queue)
    registry = Registry(settings, store or make_store(settings), notifier)
    from gateway.registry.access_token import issuer_from_config  # noqa: PLC0415

    token_issuer = issuer_from_config(config, registry)
    api = NrfApi(registry, token_service=token_issuer.service if token_issuer else None)
    nrf_router = NrfRouter(api, own_api_roots=(settings.api_root,))
    nrf = nrf_router if settings.nrf_api else None

    hop_stamp = getattr(static, "hop_stamp", None)  # ScpRouter's Via/hops loop guard

    def default_build(nrf_r: NrfRouter | None, md: ModelDRouter) -> Router:
        if hop_stamp is not None:
            md.hop_stamp = hop_stamp
        return chain([r for r in (nrf_r, md, static) if r is not None])

    make = build_router or default_build
    publisher = None
    if publish is not None:
        publisher = RouteSnapshotPublisher(registry, publish, lambda md: make(nrf, md),
                                           timeout=upstream_timeout)
    try:
        await registry.start()
    except BaseException:
        await registry.close()
        raise
    if publisher is not None:
        publisher.publish()
    if token_issuer is not None:
        token_issuer.start()
    return RegistryService(settings, registry, api, nrf_router, publisher, token_issuer)
