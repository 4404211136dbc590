"""The NF registry: profiles, heartbeats, subscriptions, stores (memory, etcd).

``start_registry`` (see ``gateway.registry.startup``) is the gateway's one entry point."""

from __future__ import annotations


async def start_registry(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """``gateway.registry.startup.start_registry`` (imported lazily: the startup module
    imports the NRF API, which imports this package)."""
    from gateway.registry.startup import start_registry as _start  # noqa: PLC0415

    return await _start(*args, **kwargs)
