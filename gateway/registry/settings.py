"""Settings of the NF registry, read from the gateway config's ``registry`` section by name."""

from __future__ import annotations

from dataclasses import dataclass


def _get(section: object, name: str, default: object) -> object:
    if section is None:
        return default
    if isinstance(section, dict):
        v = section.get(name, default)
    else:
        v = getattr(section, name, default)
    return default if v is None else v


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """What the registry needs; ``from_config`` adapts the gateway's config section."""

    enabled: bool = True
    store: str = "memory"  # memory | etcd
    snapshot_file: str | None = None
    etcd_endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    etcd_prefix: str = "/nfmesh/registry"
    etcd_timeout_s: float = 2.0
    heartbeat_timer_s: int = 10  # the heartBeatTimer the NRF assigns (TS 29.510 §6.1.6.2.2)
    heartbeat_grace_s: float = 5.0  # extra margin before an instance is SUSPENDED
    suspended_removal_s: float = 3600.0  # a SUSPENDED instance is removed after this long
    nrf_api: bool = True
    api_root: str = "http://127.0.0.1:8000"  # this NRF's apiRoot, for nfInstanceUri in notifications
    subscription_validity_s: int = 86400  # default and maximum validityTime of a subscription
    discovery_validity_s: int = 60  # SearchResult.validityPeriod
    notify_via: str | None = None  # "host:port" of the mesh listener notifications go through
    notify_attempts: int = 4
    notify_queue: int = 10000
    sweep_interval_s: float = 0.5

    @classmethod
    def from_config(cls, section: object) -> RegistrySettings:
        """Build from ``registry`` (an object with attributes, or a dict); absent -> default."""
        d = cls()
        etcd = _get(section, "etcd", None)
        eps = _get(etcd, "endpoints", d.etcd_endpoints)
        if isinstance(eps, str):
            eps = (eps,)
        store = str(_get(section, "store", d.store))
        if store not in ("memory", "etcd"):
            raise ValueError(f"registry.store: must be memory or etcd, got {store!r}")
        timer = int(_get(section, "heartbeat_timer_s", d.heartbeat_timer_s))
        if timer < 1:
            raise ValueError("registry.heartbeat_timer_s: must be >= 1")
        return cls(
            enabled=bool(_get(section, "enabled", d.enabled)),
            store=store,
            snapshot_file=_get(section, "snapshot_file", None) or None,  # type: ignore[arg-type]
            etcd_endpoints=tuple(str(e) for e in eps),  # type: ignore[union-attr]
            etcd_prefix=str(_get(etcd, "prefix", d.etcd_prefix)).rstrip("/"),
            etcd_timeout_s=float(_get(etcd, "timeout_s", d.etcd_timeout_s)),  # type: ignore[arg-type]
            heartbeat_timer_s=timer,
            heartbeat_grace_s=float(_get(section, "heartbeat_grace_s", d.heartbeat_grace_s)),  # type: ignore[arg-type]
            suspended_removal_s=float(_get(section, "suspended_removal_s", d.suspended_removal_s)),  # type: ignore[arg-type]
            nrf_api=bool(_get(section, "nrf_api", d.nrf_api)),
            api_root=str(_get(section, "api_root", d.api_root)).rstrip("/"),
            subscription_validity_s=int(_get(section, "subscription_validity_s", d.subscription_validity_s)),  # type: ignore[arg-type]
            discovery_validity_s=int(_get(section, "discovery_validity_s", d.discovery_validity_s)),  # type: ignore[arg-type]
            notify_via=_get(section, "notify_via", None) or None,  # type: ignore[arg-type]
            sweep_interval_s=float(_get(section, "sweep_interval_s", d.sweep_interval_s)),  # type: ignore[arg-type]
        )
