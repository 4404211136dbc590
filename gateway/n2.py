"""The N2 service: NGAP-aware SCTP proxy between gNBs and AMF pools, started from the config.

Wiring only: ``dataplane.sctp`` carries the messages (kernel SCTP), ``nf_adapters.ngap``'s
``NgapRouter`` decides (see its module doc for NG Setup, UE routing, the AMF-failure behaviour
and overload).  The service listens for gNBs on ``port`` (38412) at every ``listen`` address
(one multi-homed socket), keeps one association per AMF endpoint (multi-homed peers through
connectx), reconnects lost AMFs with a bounded backoff, and exports counters and per-path
state (``collect`` is a Prometheus collector).

Public API::

    N2Settings / AmfPoolSettings / AmfEndpointSettings      plain dataclasses
    from_config(section) -> N2Settings                       reads the config's ``ngap`` section
    async start_n2(section_or_settings) -> N2Service          what gateway/app.py calls

The demo's N2 traffic (emulated gNBs and AMFs through an N2Service) is ``perf.n2_demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dataplane.sctp import (
    SctpAssociation,
    SctpListener,
    SctpParams,
    connect,
    listen,
    sctp_available,
)
from nf_adapters.ngap import codec
from nf_adapters.ngap.ngap_router import AmfPeer, GatewayIdentity, GnbPeer, Limits, NgapRouter

log = logging.getLogger("nfmesh.n2")


@dataclass(frozen=True, slots=True)
class AmfEndpointSettings:
    addresses: tuple[str, ...]
    port: int = 38412


@dataclass(frozen=True, slots=True)
class AmfPoolSettings:
    name: str
    endpoints: tuple[AmfEndpointSettings, ...]
    plmn: str = "00101"  # MCC + MNC digits
    amf_set_id: int = 1
    relative_capacity: int = 255
    tacs: tuple[int, ...] = ()  # TACs the pool serves (NG Setup check); empty: any


@dataclass(frozen=True, slots=True)
class N2Settings:
    enabled: bool = True
    listen: tuple[str, ...] = ("127.0.0.1",)
    port: int = 38412
    streams: int = 16
    amf_pools: tuple[AmfPoolSettings, ...] = ()
    heartbeat_interval_ms: int = 30000
    path_max_retrans: int = 0  # 0: the kernel's default (5)
    rto_min_ms: int = 1000
    rto_max_ms: int = 60000
    max_ues: int = 100_000
    gnb_id: int = 1  # the gateway's Global gNB ID toward the AMFs
    reconnect_max_s: float = 10.0
    ue_release_timeout_s: float = 10.0  # stuck UE contexts (release never completed) dropped
    replica: int | None = None  # this replica's number (0..255: its UE id range); None: alone
    replication_etcd: tuple[str, ...] = ()  # etcd endpoints sharing established UEs' records
    replication_prefix: str = "/nfmesh/n2"
    replication_ttl_s: int = 30  # a dead replica's records outlive it this long


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def from_config(section: Any) -> N2Settings:
    """N2Settings from the config's ``ngap`` section (a msgspec struct, an object or a dict),
    reading fields by name; missing ones keep N2Settings' defaults."""
    d = N2Settings()
    rep = _get(section, "replication", None) or {}
    pools = []
    for p in _get(section, "amf_pools", []) or []:
        eps = tuple(AmfEndpointSettings(tuple(_get(e, "addresses", ())), int(_get(e, "port", 38412)))
                    for e in _get(p, "endpoints", []) or [])
        pools.append(AmfPoolSettings(str(_get(p, "name", "pool")), eps,
                                     str(_get(p, "plmn", "00101")),
                                     int(_get(p, "amf_set_id", 1)),
                                     int(_get(p, "relative_capacity", 255)),
                                     tuple(int(t) for t in _get(p, "tacs", ()) or ())))
    return N2Settings(
        enabled=bool(_get(section, "enabled", d.enabled)),
        listen=tuple(_get(section, "listen", d.listen) or d.listen),
        port=int(_get(section, "port", d.port)),
        streams=int(_get(section, "streams", d.streams)),
        amf_pools=tuple(pools),
        heartbeat_interval_ms=int(_get(section, "heartbeat_interval_ms", d.heartbeat_interval_ms)),
        path_max_retrans=int(_get(section, "path_max_retrans", d.path_max_retrans)),
        rto_min_ms=int(_get(section, "rto_min_ms", d.rto_min_ms)),
        rto_max_ms=int(_get(section, "rto_max_ms", d.rto_max_ms)),
        max_ues=int(_get(section, "max_ues", d.max_ues)),
        gnb_id=int(_get(section, "gnb_id", d.gnb_id)),
        ue_release_timeout_s=float(_get(section, "ue_release_timeout_s",
                                        d.ue_release_timeout_s)),
        replica=None if _get(section, "replica") is None else int(_get(section, "replica")),
        replication_etcd=tuple(_get(rep, "etcd", ()) or ()),
        replication_prefix=str(_get(rep, "prefix", d.replication_prefix)),
        replication_ttl_s=int(_get(rep, "ttl_s", d.replication_ttl_s)),
    )


def plmn_from_digits(digits: str) -> bytes:
    """"00101" / "001001" -> the 3-octet PLMN identity."""
    if not digits.isdigit() or len(digits) not in (5, 6):
        raise ValueError(f"PLMN must be MCC+MNC digits (5 or 6), got {digits!r}")
    return codec.plmn_bytes(digits[:3], digits[3:])


class _GnbSide:
    def __init__(self, service: N2Service, peer: GnbPeer) -> None:
        self.service, self.peer = service, peer

    def on_message(self, assoc: SctpAssociation, data: bytes, stream: int, ppid: int) -> None:
        self.service.router.gnb_message(self.peer, data, stream, ppid)

    def on_event(self, assoc: SctpAssociation, kind: str, detail: dict) -> None:
        log.info("gNB association %d: %s %s", self.peer.index, kind, detail)

    def on_closed(self, assoc: SctpAssociation, exc: BaseException | None) -> None:
        self.service.gnb_assocs.pop(self.peer.index, None)
        self.service.router.gnb_lost(self.peer)


class _AmfSide:
    def __init__(self, service: N2Service, name: str) -> None:
        self.service, self.name = service, name
        self.peer: AmfPeer | None = None
        self.lost: asyncio.Event = asyncio.Event()

    def on_message(self, assoc: SctpAssociation, data: bytes, stream: int, ppid: int) -> None:
        if self.peer is not None:
            self.service.router.amf_message(self.peer, data, stream, ppid)

    def on_event(self, assoc: SctpAssociation, kind: str, detail: dict) -> None:
        log.info("AMF %s: %s %s", self.name, kind, detail)

    def on_closed(self, assoc: SctpAssociation, exc: BaseException | None) -> None:
        if not self.service._closing:
            log.warning("AMF %s association lost (%s)", self.name, exc)
        if self.peer is not None:
            self.service.router.amf_lost(self.peer)
        self.lost.set()


class N2Service:
    """The running N2 proxy."""

    def __init__(self, settings: N2Settings) -> None:
        self.settings = settings
        pools = settings.amf_pools
        first = pools[0] if pools else None
        self.identity = GatewayIdentity(
            plmn=plmn_from_digits(first.plmn if first else "00101"),
            gnb_id=settings.gnb_id,
            pool_name=first.name if first else "nfmesh-amf-pool",
            relative_capacity=first.relative_capacity if first else None)
        self.router = NgapRouter(self.identity, Limits(
            max_ues=settings.max_ues, ue_release_timeout_s=settings.ue_release_timeout_s),
            replica=settings.replica)
        self.replication: Any = None  # gateway.n2_replica.EtcdUeReplica when configured
        self.params = SctpParams(
            out_streams=settings.streams, in_streams=settings.streams,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            path_max_retrans=settings.path_max_retrans,
            rto_min_ms=settings.rto_min_ms, rto_max_ms=settings.rto_max_ms,
            rto_initial_ms=min(max(settings.rto_min_ms, 1000), settings.rto_max_ms))
        self.listener: SctpListener | None = None
        self.gnb_assocs: dict[int, SctpAssociation] = {}
        self.amf_assocs: dict[str, SctpAssociation] = {}
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.port

    async def start(self) -> N2Service:
        ok, reason = sctp_available()
        if not ok:
            raise OSError(93, reason)
        if self.settings.replication_etcd:
            from gateway.n2_replica import EtcdUeReplica  # noqa: PLC0415 (grpc on demand)

            self.replication = await EtcdUeReplica(
                self.router, list(self.settings.replication_etcd),
                self.settings.replication_prefix, ttl_s=self.settings.replication_ttl_s).start()
        self.listener = await listen(list(self.settings.listen), self.settings.port,
                                     self._accept, self.params)
        for pool in self.settings.amf_pools:
            for i, ep in enumerate(pool.endpoints):
                name = f"{pool.name}/{i}"
                self._tasks.append(asyncio.create_task(self._keep_amf(name, ep, pool)))
        self._tasks.append(asyncio.create_task(self._timers()))
        return self

    async def _timers(self) -> None:
        """The router's timers (stuck UE contexts, unanswered NG Resets), once a second."""
        while not self._closing:
            await asyncio.sleep(1.0)
            expired = self.router.sweep()
            if expired:
                log.warning("%d UE context(s) dropped: release never completed", expired)

    def _accept(self, assoc: SctpAssociation) -> _GnbSide:
        peer = self.router.add_gnb(assoc)
        self.gnb_assocs[peer.index] = assoc
        return _GnbSide(self, peer)

    async def _keep_amf(self, name: str, ep: AmfEndpointSettings,
                        pool: AmfPoolSettings | None = None) -> None:
        """Connect to one AMF endpoint, and again after each loss (bounded backoff)."""
        delay = 0.1
        while not self._closing:
            side = _AmfSide(self, name)
            try:
                assoc = await connect(list(ep.addresses), ep.port, side, self.params, timeout=5.0)
            except (OSError, TimeoutError) as exc:
                log.info("AMF %s %s:%d not reachable (%s); retry in %.1f s", name,
                         ep.addresses, ep.port, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_s)
                continue
            delay = 0.1
            self.amf_assocs[name] = assoc
            side.peer = self.router.add_amf(assoc, name, pool=pool.name if pool else "",
                                            tacs=pool.tacs if pool else ())
            await side.lost.wait()
            self.amf_assocs.pop(name, None)

    async def close(self) -> None:
        self._closing = True
        if self.listener is not None:
            self.listener.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for assoc in list(self.gnb_assocs.values()) + list(self.amf_assocs.values()):
            assoc.close()
        self.gnb_assocs.clear()
        self.amf_assocs.clear()
        if self.replication is not None:
            await self.replication.close()

    def snapshot(self) -> dict:
        snap = self.router.snapshot()
        snap["paths"] = {
            **{f"gnb/{i}": a.peer_addresses for i, a in self.gnb_assocs.items()},
            **{f"amf/{n}": a.peer_addresses for n, a in self.amf_assocs.items()}}
        return snap

    def collect(self) -> Iterator[Any]:
        """Prometheus collector: NGAP counters, UE contexts, AMF state, SCTP path state."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        msgs = CounterMetricFamily("nfmesh_ngap_events", "N2 proxy events by kind", labels=["kind"])
        for k, v in self.router.stats.items():
            msgs.add_metric([k], v)
        yield msgs
        yield GaugeMetricFamily("nfmesh_ngap_ue_contexts", "UE contexts held",
                                value=self.router.ue_count)
        yield GaugeMetricFamily("nfmesh_ngap_ue_contexts_releasing", "UE contexts waiting for a "
                                "release to complete (dropped after ue_release_timeout_s)",
                                value=self.router.releasing_count())
        yield GaugeMetricFamily("nfmesh_ngap_overloaded", "1 while the gateway asks gNBs to "
                                "reduce load", value=int(self.router.overloaded))
        amf = GaugeMetricFamily("nfmesh_ngap_amf_up", "AMF association up and set up",
                                labels=["amf"])
        for a in self.router.amfs:
            amf.add_metric([a.name], 1 if a.state == "up" else 0)
        yield amf
        path = GaugeMetricFamily("nfmesh_sctp_path_up", "SCTP peer address reachable",
                                 labels=["peer", "address"])
        for name, addrs in self.snapshot()["paths"].items():
            for addr, state in addrs.items():
                path.add_metric([name, addr], 1 if state == "available" else 0)
        yield path


async def start_n2(section: Any) -> N2Service:
    """Start the N2 service from the config's ``ngap`` section (or an N2Settings)."""
    settings = section if isinstance(section, N2Settings) else from_config(section)
    return await N2Service(settings).start()
