"""The NF registry: profiles, heartbeats, subscriptions, stores (memory, etcd).

``start_registry`` (see ``gateway.registry.startup``) is the gateway's one entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.registry.startup import RegistryService


async def start_registry(*args: Any, **kwargs: Any) -> RegistryService:
    """``gateway.registry.startup.start_registry`` (imported lazily: the startup module
    imports the NRF API, which imports this package)."""
    from gateway.registry.startup import start_registry as _start  # noqa: PLC0415

    return await _start(*args, **kwargs)
