"""The route snapshot: the registry's REGISTERED producers compiled for the data plane.

``RouteSnapshotPublisher`` listens to the ``Registry``; after a change it rebuilds an immutable
``nf_adapters.model_d.ModelDSnapshot`` (coalescing a burst of changes into one rebuild per
event-loop turn and at most one per ``min_interval_s``; profiles unchanged since the last
build are not compiled again), wraps it in a ``ModelDRouter`` and, through ``router_factory`` (which chains
it with the NRF and model C routers), swaps the result into the ``RouterSlot`` in one
assignment (or hands it to a ``publish(router)`` callable that does).  The data plane keeps
selecting from the previous snapshot until then and never waits on the control plane; if a rebuild fails the last good router stays in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dataplane.routing import Router, RouterSlot
from gateway.registry.registry import Registry
from nf_adapters.model_d import CompileCache, ModelDRouter, ModelDSnapshot, build_snapshot

log = logging.getLogger(__name__)


class RouteSnapshotPublisher:
    """Rebuilds and publishes the model D router whenever the registry changes."""

    def __init__(
        self,
        registry: Registry,
        slot: RouterSlot | Callable[[Router], None],
        router_factory: Callable[[ModelDRouter], Router] = lambda r: r,
        *,
        timeout: float | None = None,
        min_interval_s: float = 0.05,
    ) -> None:
        self.registry = registry
        self.slot = slot
        if isinstance(slot, RouterSlot):
            def assign(router: Router) -> None:
                slot.current = router

            self._swap: Callable[[Router], None] = assign
        else:
            self._swap = slot
        self.router_factory = router_factory
        self.timeout = timeout
        self.live_loads: object = None  # producers' Lci (gateway.overload), set by the gateway
        self.snapshot: ModelDSnapshot = ModelDSnapshot({}, -1)
        self.published = 0
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._scheduled = False
        self._compile_cache: CompileCache = {}
        registry.add_listener(self._on_change)

    def _on_change(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.publish()
            return
        self._scheduled = True
        delay = self._last + self.min_interval_s - loop.time()
        if delay > 0:
            loop.call_later(delay, self._publish_scheduled)
        else:
            loop.call_soon(self._publish_scheduled)

    def _publish_scheduled(self) -> None:
        self._scheduled = False
        self._last = asyncio.get_running_loop().time()
        self.publish()

    def publish(self) -> ModelDSnapshot:
        """Build from the registry now and swap the router in; returns the new snapshot."""
        try:
            snap = build_snapshot(self.registry.instances(), self.registry.version,
                                  self._compile_cache)
            router = self.router_factory(ModelDRouter(snap, timeout=self.timeout,
                                                      live_loads=self.live_loads))
        except Exception:  # noqa: BLE001 (keep routing on the last good snapshot)
            log.exception("route snapshot rebuild failed; keeping version %d", self.snapshot.version)
            return self.snapshot
        self.snapshot = snap
        self._swap(router)
        self.published += 1
        return snap
