"""One entry point for the gateway: build the registry, its NRF API and the model D routing.

``start_registry(section, slot)`` opens the configured store, loads it, starts heartbeat
timers and the notifier, and publishes ``build_router(nrf_router, model_d_router)`` into
``slot`` after every registry change.  ``RegistryService.close()`` stops all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    """Asks each router in turn; the first answer that is not ``None`` wins."""

    def __init__(self, routers: list[Router]) -> None:
        self.routers = routers

    def route(self, headers: Headers, peer: dict) -> Decision:
        for r in self.routers:
            d = r.route(headers, peer)
            if d is not None:
                return d
        return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND",
                       "no route: not an NRF request and no 3gpp-Sbi-Discovery/Target-apiRoot")


def default_build_router(nrf: NrfRouter | None, model_d: ModelDRouter) -> Router:
    """NRF API first, then model D."""
    return FirstMatchRouter([r for r in (nrf, model_d) if r is not None])


@dataclass(slots=True)
class RegistryService:
    """What ``start_registry`` returns: the parts the gateway may want to reach."""

    settings: RegistrySettings
    registry: Registry
    api: NrfApi
    nrf_router: NrfRouter
    publisher: RouteSnapshotPublisher | None

    async def close(self) -> None:
        await self.registry.close()


def make_store(settings: RegistrySettings) -> RegistryStore:
    """The store the settings name (etcd imported only when used)."""
    if settings.store == "etcd":
        from gateway.registry.etcd_store import EtcdStore  # noqa: PLC0415 (grpc only when used)

        return EtcdStore(list(settings.etcd_endpoints), settings.etcd_prefix,
                         timeout_s=settings.etcd_timeout_s)
    return MemoryStore(settings.snapshot_file)


async def start_registry(
    section: object,
    slot: RouterSlot | None = None,
    build_router: Callable[[NrfRouter | None, ModelDRouter], Router] = default_build_router,
    *,
    sender: Sender | None = None,
    store: RegistryStore | None = None,
    upstream_timeout: float | None = None,
) -> RegistryService:
    """Start the registry described by the config ``section`` (see ``RegistrySettings``).

    With ``slot``, the router ``build_router(nrf_router_or_None, model_d_router)`` is swapped
    into it now and after every change (``nrf_router`` is None when ``nrf_api`` is off).
    ``sender`` overrides how notifications are POSTed (default: ``dataplane.client.H2Client``).
    """
    settings = section if isinstance(section, RegistrySettings) else RegistrySettings.from_config(section)
    notifier = Notifier(sender, via=settings.notify_via, attempts=settings.notify_attempts,
                        max_queue=settings.notify_queue)
    registry = Registry(settings, store or make_store(settings), notifier)
    api = NrfApi(registry)
    own = (settings.api_root,)
    nrf_router = NrfRouter(api, own_api_roots=own)
    publisher = None
    if slot is not None:
        nrf = nrf_router if settings.nrf_api else None
        publisher = RouteSnapshotPublisher(registry, slot, lambda md: build_router(nrf, md),
                                           timeout=upstream_timeout)
    await registry.start()
    if publisher is not None:
        publisher.publish()
    return RegistryService(settings, registry, api, nrf_router, publisher)
