"""SCP model D routing: delegated discovery from ``3gpp-Sbi-Discovery-*`` headers (TS 29.500 §6.10).

A consumer that does not know its producer sends the request to the SCP with
``3gpp-Sbi-Discovery-target-nf-type`` (and optionally service-names, snssais, dnn,
target-nf-instance-id, ... encoded as in the discovery query) and no ``3gpp-Sbi-Target-apiRoot``.
``ModelDRouter`` picks a producer service from an immutable ``ModelDSnapshot`` of REGISTERED
instances:

1. filter: NF type, service name (from the header or the first ``:path`` segment), service and
   instance status, S-NSSAI, DNN, TAI, access rules (``allowedNfTypes`` ...);
2. binding: ``3gpp-Sbi-Routing-Binding`` ``bl=nf-instance; nfinst=..`` pins the instance, falling
   back to its ``nfset`` (and to any eligible producer when no set is named); ``bl=nf-set``
   restricts to the set;
3. selection: lowest ``priority`` first, then weighted random by ``capacity x (100-load)``;
4. rewrite: ``:scheme``/``:authority``/``:path`` to the chosen service's apiRoot
   (ipEndPoints, fqdn, apiPrefix, scheme); discovery headers are removed;
5. ``alternates``: other producers (and other endpoints of the chosen one) for reselection;
   ``retryable`` for idempotent methods; ``3gpp-Sbi-Producer-Id`` on the response.

The router returns ``None`` for requests that are not model D (no discovery header, a
Target-apiRoot present, or target NF type NRF, which the NRF router serves).  Filter results
are cached per distinct set of discovery headers for the life of the snapshot (bounded).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from dataplane.engine import Headers
from dataplane.routing import Endpoint, Forward, LocalResponse
from nf_adapters.discovery import (
    DISCOVERY_HEADER_PREFIX,
    DiscoveryError,
    DiscoveryQuery,
    parse_discovery_headers,
    profile_matches,
    service_matches,
    services_of,
)
from nf_adapters.problem_details import problem

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"})
MAX_ALTERNATES = 2
CACHE_LIMIT = 4096
_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """One place a producer service can be reached."""

    endpoint: Endpoint
    authority: bytes
    path_prefix: bytes  # apiPrefix path, no trailing slash


@dataclass(frozen=True, slots=True)
class ProducerService:
    """One REGISTERED service instance of one REGISTERED NF instance, ready to select."""

    nf_instance_id: str
    nf_type: str
    service_name: str
    service_instance_id: str
    nf_set_ids: tuple[str, ...]
    priority: int
    capacity: int
    load: int
    weight: float
    scheme: bytes
    targets: tuple[Target, ...]
    producer_id: bytes  # 3gpp-Sbi-Producer-Id value
    profile: dict = field(compare=False, repr=False)
    service: dict = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ModelDSnapshot:
    """Producer services per NF type; built once per registry change, never mutated."""

    by_type: dict[str, tuple[ProducerService, ...]]
    version: int = 0

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_type.values())


def _host_authority(host: str, port: int, scheme: str) -> bytes:
    h = f"[{host}]" if ":" in host else host
    if port == _DEFAULT_PORT.get(scheme):
        return h.encode()
    return f"{h}:{port}".encode()


def _targets(profile: dict, service: dict, scheme: str) -> tuple[Target, ...]:
    prefix = service.get("apiPrefix") or ""
    if prefix.startswith(("http://", "https://")):
        rest = prefix.split("://", 1)[1]
        prefix = "/" + rest.split("/", 1)[1] if "/" in rest else ""
    prefix_b = prefix.rstrip("/").encode()
    fqdn = service.get("fqdn") or profile.get("fqdn")
    tls = scheme == "https"
    default_port = _DEFAULT_PORT.get(scheme, 80)
    out: list[Target] = []
    for ep in service.get("ipEndPoints") or ():
        host = ep.get("ipv4Address") or ep.get("ipv6Address") or fqdn
        if not host:
            continue
        port = ep.get("port") or default_port
        auth = _host_authority(fqdn, port, scheme) if fqdn else _host_authority(host, port, scheme)
        out.append(Target(Endpoint(host, port, tls, fqdn if tls else None), auth, prefix_b))
    if not out:
        hosts = [fqdn] if fqdn else []
        hosts += list(profile.get("ipv4Addresses") or ()) + list(profile.get("ipv6Addresses") or ())
        for host in hosts[:4]:
            out.append(Target(Endpoint(host, default_port, tls, fqdn if tls else None),
                              _host_authority(host, default_port, scheme), prefix_b))
    return tuple(out)


def build_snapshot(instances: Iterable[tuple[dict, str]], version: int = 0) -> ModelDSnapshot:
    """Compile (profile, effective status) pairs into a snapshot of selectable services."""
    by_type: dict[str, list[ProducerService]] = {}
    for profile, status in instances:
        if status != "REGISTERED":
            continue
        nf_id = profile.get("nfInstanceId", "")
        nf_type = profile.get("nfType", "")
        sets = tuple(profile.get("nfSetIdList") or ())
        for svc in services_of(profile):
            if svc.get("nfServiceStatus", "REGISTERED") != "REGISTERED":
                continue
            scheme = svc.get("scheme", "http")
            targets = _targets(profile, svc, scheme)
            if not targets:
                continue
            prio = svc.get("priority", profile.get("priority", 65535))
            cap = svc.get("capacity", profile.get("capacity", 100))
            load = svc.get("load", profile.get("load", 0))
            weight = max(cap, 1) * max(100 - load, 1) / 100.0
            pid = f"nfinst={nf_id}; nfservinst={svc.get('serviceInstanceId', '')}"
            if sets:
                pid += f"; nfset={sets[0]}"
            by_type.setdefault(nf_type, []).append(ProducerService(
                nf_id, nf_type, svc.get("serviceName", ""), svc.get("serviceInstanceId", ""),
                sets, prio, cap, load, weight, scheme.encode(), targets, pid.encode(),
                profile, svc,
            ))
    return ModelDSnapshot({k: tuple(v) for k, v in by_type.items()}, version)


def parse_routing_binding(value: bytes) -> dict[str, str]:
    """``bl=nf-instance; nfinst=..; nfset=..`` -> {"bl": ..., "nfinst": ..., ...}."""
    out: dict[str, str] = {}
    for part in value.decode("latin-1").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k:
            out[k.strip().lower()] = v.strip().strip('"')
    return out


class ModelDRouter:
    """``dataplane.routing.Router`` for SCP model D over one ``ModelDSnapshot``."""

    def __init__(self, snapshot: ModelDSnapshot, *, rng: random.Random | None = None,
                 timeout: float | None = None) -> None:
        self.snapshot = snapshot
        self.rng = rng or random.Random()
        self.timeout = timeout
        self._cache: dict[tuple, tuple[ProducerService, ...] | LocalResponse] = {}

    # -------------------------------------------------------------- filtering

    def _eligible(self, key: tuple, headers: Headers, path: bytes
                  ) -> tuple[ProducerService, ...] | LocalResponse:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            q = parse_discovery_headers(headers)
        except DiscoveryError as exc:
            res: tuple[ProducerService, ...] | LocalResponse = problem(
                400, "INVALID_DISCOVERY_PARAM", f"3gpp-Sbi-Discovery-{exc}",
                [{"param": f"3gpp-Sbi-Discovery-{exc.param}", "reason": exc.reason}])
        else:
            assert q is not None
            res = self._filter(q, path)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = res
        return res

    def _filter(self, q: DiscoveryQuery, path: bytes) -> tuple[ProducerService, ...]:
        names = q.service_names
        if not names:
            seg = path.split(b"?", 1)[0].split(b"/", 2)
            if len(seg) > 1 and seg[1]:
                names = (seg[1].decode("latin-1"),)
        q_profile = replace(q, service_names=())
        q_service = replace(q, service_names=names)
        seen: dict[str, bool] = {}
        out = []
        for ps in self.snapshot.by_type.get(q.target_nf_type, ()):
            ok = seen.get(ps.nf_instance_id)
            if ok is None:
                ok = profile_matches(ps.profile, q_profile, status="REGISTERED")
                seen[ps.nf_instance_id] = ok
            if ok and service_matches(ps.service, q_service):
                out.append(ps)
        return tuple(out)

    # -------------------------------------------------------------- selection

    def _order(self, cands: list[ProducerService]) -> list[ProducerService]:
        """The best ``MAX_ALTERNATES``: lowest priority first, inside a priority a weighted random
        order (Efraimidis-Spirakis keys ``u ** (1/w)``, largest first)."""
        rnd = self.rng.random
        return heapq.nsmallest(
            MAX_ALTERNATES, cands, key=lambda c: (c.priority, -(rnd() ** (1.0 / c.weight)))
        )

    def _pick_first(self, cands: tuple[ProducerService, ...]) -> list[ProducerService]:
        if len(cands) == 1:
            return [cands[0]]
        best = min(c.priority for c in cands)
        group = [c for c in cands if c.priority == best]
        if len(group) == 1:
            first = group[0]
        else:
            total = sum(c.weight for c in group)
            x = self.rng.random() * total
            first = group[-1]
            for c in group:
                x -= c.weight
                if x < 0:
                    first = c
                    break
        rest = self._order([c for c in cands if c.nf_instance_id != first.nf_instance_id])
        return [first] + rest[:MAX_ALTERNATES]

    # -------------------------------------------------------------- route

    def route(self, headers: Headers, peer: dict) -> Forward | LocalResponse | None:
        method = path = b""
        disc: list[tuple[bytes, bytes]] = []
        binding = None
        has_target = False
        for k, v in headers:
            if k.startswith(DISCOVERY_HEADER_PREFIX):
                disc.append((k, v))
                if k == b"3gpp-sbi-discovery-target-nf-type":
                    has_target = True
                    if v.strip().upper() == b"NRF":
                        return None
            elif k == b":path":
                path = v
            elif k == b":method":
                method = v
            elif k == b"3gpp-sbi-target-apiroot":
                return None
            elif k == b"3gpp-sbi-routing-binding":
                binding = v
        if not has_target:
            return None
        ua = b""
        if not any(k == b"3gpp-sbi-discovery-requester-nf-type" for k, _ in disc):
            for k, v in headers:
                if k == b"user-agent":
                    ua = v.split(b"-", 1)[0]
                    break
        first_seg = path.split(b"/", 2)[1] if path.count(b"/") >= 1 else b""
        key = (tuple(disc), first_seg, ua)
        eligible = self._eligible(key, headers, path)
        if isinstance(eligible, LocalResponse):
            return eligible
        cands = eligible
        if binding is not None and cands:
            cands = self._bind(cands, parse_routing_binding(binding))
        if not cands:
            return problem(504, "NF_DISCOVERY_FAILURE",
                           "no REGISTERED producer matches the 3gpp-Sbi-Discovery parameters")
        chosen = self._pick_first(cands)
        first = chosen[0]
        t0 = first.targets[0]
        alternates: list[tuple[Endpoint, Headers]] = []
        for ps in chosen[1:]:
            t = ps.targets[0]
            alternates.append((t.endpoint, self._rewrite(headers, method, path, ps.scheme, t)))
        if len(alternates) < MAX_ALTERNATES:
            for t in first.targets[1:MAX_ALTERNATES - len(alternates) + 1]:
                alternates.append((t.endpoint, self._rewrite(headers, method, path, first.scheme, t)))
        return Forward(
            endpoint=t0.endpoint,
            headers=self._rewrite(headers, method, path, first.scheme, t0),
            cluster=f"{first.nf_type}/{first.nf_instance_id}",
            alternates=alternates,
            extra_response_headers=[(b"3gpp-sbi-producer-id", first.producer_id)],
            timeout=self.timeout,
            retryable=method in IDEMPOTENT,
        )

    @staticmethod
    def _bind(cands: tuple[ProducerService, ...], b: dict[str, str]
              ) -> tuple[ProducerService, ...]:
        level = b.get("bl", "")
        inst = b.get("nfinst", "").lower()
        nfset = b.get("nfset", "")
        if level in ("nf-instance", "nfservice-instance") and inst:
            pinned = tuple(c for c in cands if c.nf_instance_id == inst)
            if pinned:
                return pinned
        if nfset:
            in_set = tuple(c for c in cands if nfset in c.nf_set_ids)
            if in_set or level in ("nf-set", "nfservice-set"):
                return in_set
        return cands

    @staticmethod
    def _rewrite(headers: Headers, method: bytes, path: bytes, scheme: bytes, t: Target) -> Headers:
        out: Headers = [
            (b":method", method),
            (b":scheme", scheme),
            (b":authority", t.authority),
            (b":path", t.path_prefix + path),
        ]
        for k, v in headers:
            if k[:1] == b":" or k.startswith(DISCOVERY_HEADER_PREFIX) or k == b"host":
                continue
            out.append((k, v))
        return out
