"""The registry's storage interface: what the memory and the etcd stores both provide.

The ``Registry`` keeps the working set (profiles, subscriptions, liveness) in memory and asks
the store to persist each change *before* it applies it, so a store failure leaves nothing
half-written (the API answers 503 with the ``StoreError`` cause).  Replicated stores report
changes made by other replicas through the listener set with ``set_listener``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class StoreError(Exception):
    """The store cannot serve the request now (etcd down, disk full); maps to 503."""

    def __init__(self, detail: str, cause: str = "NF_CONGESTION") -> None:
        super().__init__(detail)
        self.detail = detail
        self.cause = cause


@dataclass(slots=True)
class StoreContents:
    """Everything a store holds, as loaded at start."""

    profiles: dict[str, dict] = field(default_factory=dict)
    subscriptions: dict[str, dict] = field(default_factory=dict)
    alive: set[str] | None = None  # instances with a live lease; None: the store keeps no liveness
    revision: int = 0


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """A change seen on a replicated store.

    ``kind``: ``profile`` / ``profile_deleted`` / ``alive`` / ``dead`` / ``subscription`` /
    ``subscription_deleted``; ``value`` is the JSON object for ``profile``/``subscription``."""

    kind: str
    key: str
    value: dict | None = None
    revision: int = 0


class RegistryStore(Protocol):
    """Persistence (and, for etcd, replication and liveness) of the registry."""

    #: True when heartbeat expiry is tracked by the store (etcd leases) and reported as
    #: ``dead`` events; False when the registry's own timers decide.
    tracks_liveness: bool

    async def open(self) -> StoreContents: ...

    async def put_profile(self, nf_id: str, profile: dict, ttl_s: int) -> int: ...

    async def delete_profile(self, nf_id: str) -> int: ...

    async def heartbeat(self, nf_id: str, ttl_s: int) -> int: ...

    async def put_subscription(self, sub_id: str, data: dict) -> int: ...

    async def delete_subscription(self, sub_id: str) -> int: ...

    def set_listener(self, listener: Callable[[StoreEvent], None]) -> None: ...

    async def close(self) -> None: ...
