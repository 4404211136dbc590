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
   ``retryable`` for idempotent methods; ``3gpp-Sbi-Producer-Id`` on the response;
6. loop protection, with ``hop_stamp`` (``ScpRouter.hop_stamp``): Via and
   ``3gpp-Sbi-Max-Forward-Hops`` as model C does (508 on a loop);
7. deadline: ``timeout`` from ``3gpp-Sbi-Max-Rsp-Time`` (less the time since
   ``3gpp-Sbi-Sender-Timestamp``), so reselection stays within the request's budget.

The router returns ``None`` for requests that are not model D (no discovery header, a
Target-apiRoot present, or target NF type NRF, which the NRF router serves).  Filter results
are cached per distinct set of discovery headers for the life of the snapshot (bounded).
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import accumulate

from dataplane.engine import Headers
from dataplane.routing import Endpoint, Forward, LocalResponse
from nf_adapters import sbi_headers as sh
from nf_adapters.discovery import (
    DISCOVERY_HEADER_PREFIX,
    DiscoveryError,
    DiscoveryQuery,
    parse_discovery_headers,
    profile_matches,
    service_matches,
    services_of,
)
from nf_adapters.overload_control import consumer_key, message_priority, scope_keys
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
    cluster: str  # upstream cluster name for the pools/metrics: "<nfType>/<nfInstanceId>"
    profile: dict = field(compare=False, repr=False)
    service: dict = field(compare=False, repr=False)
    # the OCI scopes this service belongs to (nf_adapters.overload_control.scope_keys)
    scopes: tuple[str, ...] = field(default=(), compare=False, repr=False)


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
    # over TLS the producer must prove it is this instance (nf_adapters.producer_identity)
    ident = str(profile.get("nfInstanceId", "")).lower() or None if tls else None
    default_port = _DEFAULT_PORT.get(scheme, 80)
    out: list[Target] = []
    for ep in service.get("ipEndPoints") or ():
        host = ep.get("ipv4Address") or ep.get("ipv6Address") or fqdn
        if not host:
            continue
        port = ep.get("port") or default_port
        auth = _host_authority(fqdn, port, scheme) if fqdn else _host_authority(host, port, scheme)
        out.append(Target(Endpoint(host, port, tls, fqdn if tls else None, ident), auth, prefix_b))
    if not out:
        hosts = [fqdn] if fqdn else []
        hosts += list(profile.get("ipv4Addresses") or ()) + list(profile.get("ipv6Addresses") or ())
        for host in hosts[:4]:
            out.append(Target(Endpoint(host, default_port, tls, fqdn if tls else None, ident),
                              _host_authority(host, default_port, scheme), prefix_b))
    return tuple(out)


def _compile(profile: dict) -> tuple[ProducerService, ...]:
    nf_id = profile.get("nfInstanceId", "")
    nf_type = profile.get("nfType", "")
    sets = tuple(profile.get("nfSetIdList") or ())
    out = []
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
        out.append(ProducerService(
            nf_id, nf_type, svc.get("serviceName", ""), svc.get("serviceInstanceId", ""),
            sets, prio, cap, load, weight, scheme.encode(), targets, pid.encode(),
            f"{nf_type}/{nf_id}", profile, svc,
            scope_keys(nf_id, sets, svc.get("serviceInstanceId", ""),
                       svc.get("nfServiceSetIdList") or ()),
        ))
    return tuple(out)


CompileCache = dict[str, tuple[dict, tuple[ProducerService, ...]]]


def build_snapshot(instances: Iterable[tuple[dict, str]], version: int = 0,
                   cache: CompileCache | None = None) -> ModelDSnapshot:
    """Compile (profile, effective status) pairs into a snapshot of selectable services.

    With ``cache`` (kept by the caller between builds), a profile whose dict object is the one
    compiled last time is not compiled again: the registry replaces, never mutates, profiles,
    so a rebuild after one change costs a dictionary walk."""
    by_type: dict[str, list[ProducerService]] = {}
    seen: set[str] = set()
    for profile, status in instances:
        if status != "REGISTERED":
            continue
        nf_id = profile.get("nfInstanceId", "")
        hit = cache.get(nf_id) if cache is not None else None
        if hit is not None and hit[0] is profile:
            compiled = hit[1]
        else:
            compiled = _compile(profile)
            if cache is not None:
                cache[nf_id] = (profile, compiled)
        seen.add(nf_id)
        if compiled:
            by_type.setdefault(compiled[0].nf_type, []).extend(compiled)
    if cache is not None and len(cache) > len(seen):
        for gone in [k for k in cache if k not in seen]:
            del cache[gone]
    return ModelDSnapshot({k: tuple(v) for k, v in by_type.items()}, version)


def parse_routing_binding(value: bytes) -> dict[str, str]:
    """``bl=nf-instance; nfinst=..; nfset=..`` -> {"bl": ..., "nfinst": ..., ...}."""
    out: dict[str, str] = {}
    for part in value.decode("latin-1").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k:
            out[k.strip().lower()] = v.strip().strip('"')
    return out


def _weight(m: ProducerService, loads: dict[str, tuple[int, float]] | None) -> float:
    """capacity x (100 - load); the load a producer reported in ``3gpp-Sbi-Lci`` (fresher)
    in place of its profile's when there is one."""
    if loads:
        live = loads.get(m.nf_instance_id.lower())
        if live is not None:
            return max(m.capacity, 1) * max(100 - live[0], 1) / 100.0
    return m.weight


class _Selection:
    """The eligible producers of one cached discovery key, grouped by priority, with cumulative
    weights so that one pick costs a bisection."""

    __slots__ = ("groups",)

    def __init__(self, cands: Iterable[ProducerService],
                 loads: dict[str, tuple[int, float]] | None = None) -> None:
        by_prio: dict[int, list[ProducerService]] = {}
        for c in cands:
            by_prio.setdefault(c.priority, []).append(c)
        self.groups: list[tuple[tuple[ProducerService, ...], list[float], float]] = []
        for prio in sorted(by_prio):
            members = tuple(by_prio[prio])
            cum = list(accumulate(_weight(m, loads) for m in members))
            self.groups.append((members, cum, cum[-1]))

    def __bool__(self) -> bool:
        return bool(self.groups)

    def pick(self, rnd, n: int) -> list[ProducerService]:
        """Up to ``n`` producers of distinct NF instances: lowest priority first, weighted
        random inside a priority."""
        out: list[ProducerService] = []
        used: set[str] = set()
        for members, cum, total in self.groups:
            if len(members) == 1:
                if members[0].nf_instance_id not in used:
                    out.append(members[0])
                    used.add(members[0].nf_instance_id)
            else:
                misses = 0
                while len(out) < n and misses < 4:
                    c = members[min(bisect_right(cum, rnd() * total), len(members) - 1)]
                    if c.nf_instance_id in used:
                        misses += 1
                        continue
                    out.append(c)
                    used.add(c.nf_instance_id)
                if len(out) < n and misses >= 4:  # few distinct ones left: take them in order
                    for c in members:
                        if len(out) >= n:
                            break
                        if c.nf_instance_id not in used:
                            out.append(c)
                            used.add(c.nf_instance_id)
            if len(out) >= n:
                break
        return out


class ModelDRouter:
    """``dataplane.routing.Router`` for SCP model D over one ``ModelDSnapshot``."""

    def __init__(self, snapshot: ModelDSnapshot, *, rng: random.Random | None = None,
                 timeout: float | None = None, clock: Callable[[], float] = time.time,
                 hop_stamp: Callable[[Headers], tuple[bytes, bytes] | LocalResponse] | None = None,
                 live_loads: object = None) -> None:
        self.snapshot = snapshot
        self.rng = rng or random.Random()
        self.timeout = timeout
        self.clock = clock
        self.hop_stamp = hop_stamp  # e.g. ScpRouter.hop_stamp: Via / Max-Forward-Hops loop guard
        self._cache: dict[tuple, _Selection | LocalResponse] = {}
        # producers' 3gpp-Sbi-Lci (nf_adapters.overload_control.OverloadResponses: .loads,
        # .loads_version); a new version re-weights the cached selections
        self.live_loads = live_loads
        self._loads_seen = -1

    # -------------------------------------------------------------- filtering

    def _selection(self, key: tuple, headers: Headers, path: bytes, binding: bytes | None
                   ) -> _Selection | LocalResponse:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            q = parse_discovery_headers(headers)
        except DiscoveryError as exc:
            res: _Selection | LocalResponse = problem(
                400, "INVALID_DISCOVERY_PARAM", f"3gpp-Sbi-Discovery-{exc}",
                [{"param": f"3gpp-Sbi-Discovery-{exc.param}", "reason": exc.reason}])
        else:
            assert q is not None
            cands = self._filter(q, path)
            if binding is not None and cands:
                cands = self._bind(cands, parse_routing_binding(binding))
            res = _Selection(cands, getattr(self.live_loads, "loads", None))
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

    # -------------------------------------------------------------- route

    def route(self, headers: Headers, peer: dict) -> Forward | LocalResponse | None:
        live = self.live_loads
        if live is not None and live.loads_version != self._loads_seen:
            self._loads_seen = live.loads_version
            self._cache.clear()
        method = path = b""
        disc: list[tuple[bytes, bytes]] = []
        binding = rsp_time = sender_ts = prio_raw = ua_raw = None
        has_target = checked = False
        ua = b""
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
                checked = True
            elif k in sh.CHECKED_REQUEST_HEADERS:
                checked = True
            elif k == b"user-agent":
                ua = v.split(b"-", 1)[0]
                ua_raw = v
            elif k == b"3gpp-sbi-message-priority":
                prio_raw = v if prio_raw is None else b"\x00"
            elif k == b"3gpp-sbi-max-rsp-time":
                rsp_time = v
            elif k == b"3gpp-sbi-sender-timestamp":
                sender_ts = v
        if not has_target:
            return None
        if checked:
            err = sh.first_invalid_header(headers)
            if err is not None:  # never forwarded (TS 29.500 ABNF)
                return problem(400, "OPTIONAL_IE_INCORRECT",
                               f"invalid {err.header}: {err.reason}", [(err.header, err.reason)])
        timeout = self.timeout
        if rsp_time is not None:
            budget = self._deadline(rsp_time, sender_ts)
            if isinstance(budget, LocalResponse):
                return budget
            timeout = budget if timeout is None else min(timeout, budget)
        priority = -1 if prio_raw is None else message_priority(prio_raw)
        if type(priority) is not int:
            return priority
        first_seg = path.split(b"/", 2)[1] if path.count(b"/") >= 1 else b""
        key = (tuple(disc), first_seg.split(b"?", 1)[0], ua, binding)
        sel = self._cache.get(key)
        if sel is None:
            sel = self._selection(key, headers, path, binding)
        if isinstance(sel, LocalResponse):
            return sel
        if not sel:
            return problem(504, "NF_DISCOVERY_FAILURE",
                           "no REGISTERED producer matches the 3gpp-Sbi-Discovery parameters")
        chosen = sel.pick(self.rng.random, MAX_ALTERNATES + 1)
        first = chosen[0]
        if self.hop_stamp is not None:
            stamp = self.hop_stamp(headers)
            if isinstance(stamp, LocalResponse):
                return stamp
            rest = [(k, v) for k, v in headers
                    if k[:1] != b":" and not k.startswith(DISCOVERY_HEADER_PREFIX) and k != b"host"
                    and k != b"3gpp-sbi-max-forward-hops"]
            rest.append((b"3gpp-sbi-max-forward-hops", stamp[0]))
            rest.append((b"via", stamp[1]))
        else:
            rest = [(k, v) for k, v in headers
                    if k[:1] != b":" and not k.startswith(DISCOVERY_HEADER_PREFIX) and k != b"host"]
        t0 = first.targets[0]
        alternates: list[tuple[Endpoint, Headers]] = []
        alt_ids: list[Headers] = []
        for ps in chosen[1:]:
            t = ps.targets[0]
            alternates.append((t.endpoint, _pseudo(method, ps.scheme, t, path) + rest))
            alt_ids.append([(b"3gpp-sbi-producer-id", ps.producer_id)])
        if len(alternates) < MAX_ALTERNATES:
            for t in first.targets[1:MAX_ALTERNATES - len(alternates) + 1]:
                alternates.append((t.endpoint, _pseudo(method, first.scheme, t, path) + rest))
                alt_ids.append([(b"3gpp-sbi-producer-id", first.producer_id)])
        return Forward(
            endpoint=t0.endpoint,
            headers=_pseudo(method, first.scheme, t0, path) + rest,
            cluster=first.cluster,
            alternates=alternates,
            extra_response_headers=[(b"3gpp-sbi-producer-id", first.producer_id)],
            alternate_response_headers=alt_ids,
            timeout=timeout,
            retryable=method in IDEMPOTENT,
            priority=priority,
            consumer=consumer_key(peer, ua_raw),
            restamp=rsp_time is not None,
            scopes=first.scopes,
        )

    def _deadline(self, rsp_raw: bytes, ts_raw: bytes | None) -> float | LocalResponse:
        """Seconds left of the request's ``3gpp-Sbi-Max-Rsp-Time`` (counted from
        ``3gpp-Sbi-Sender-Timestamp`` when present), or the 400/504 answer."""
        try:
            budget = sh.parse_max_rsp_time(rsp_raw) / 1000.0
            if ts_raw is not None:
                sent = sh.parse_sender_timestamp(ts_raw).timestamp()
                budget = min(budget, sent + budget - self.clock())
        except sh.SbiHeaderError as exc:
            return problem(400, "OPTIONAL_IE_INCORRECT", f"invalid {exc.header}: {exc.reason}",
                           [(exc.header, exc.reason)])
        if budget <= 0:
            return problem(504, "TIMED_OUT_REQUEST",
                           "the request's 3gpp-Sbi-Max-Rsp-Time has already elapsed")
        return budget

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


def _pseudo(method: bytes, scheme: bytes, t: Target, path: bytes) -> Headers:
    return [(b":method", method), (b":scheme", scheme), (b":authority", t.authority),
            (b":path", t.path_prefix + path)]
