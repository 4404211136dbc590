"""The SCP router: SCP model C (``3gpp-Sbi-Target-apiRoot``) and static routes, as a
``dataplane.routing.Router``.

``ScpRouter(table)`` answers once per request, from an immutable ``RouteTable``:

1. **Loop protection** (TS 29.500 §6.10): a request whose ``via`` already names this SCP, or
   whose ``3gpp-Sbi-Max-Forward-Hops`` is 0, gets 508 ProblemDetails (cause ``LOOP_DETECTED``);
   every forwarded request carries the decremented hop count and our own ``via`` entry
   (``2.0 SCP-<name>``, RFC 9110 §7.6.3), so a loop through any number of nfmesh nodes ends.
2. **Model C**: with ``3gpp-Sbi-Target-apiRoot`` the request goes to that apiRoot: ``:scheme``,
   ``:authority`` and ``:path`` (apiPrefix + path, query kept) rewritten, the header removed,
   all others kept.  A malformed value gets 400 ``MANDATORY_IE_INCORRECT`` naming the header.
3. **Static routes**: ``:authority`` (optional) and the longest matching path prefix pick a
   cluster; round-robin or smooth weighted round-robin picks the endpoint; the cluster's other
   endpoints are the ``alternates`` for failover.
4. Otherwise the request is "not mine": ``try_route`` returns None, ``route`` asks the
   ``fallback`` router (model D, NRF API) or answers 404.

Checked headers: ``3gpp-Sbi-Routing-Binding``, ``-Target-Nf-Id`` and ``-Originating-Network-Id``
are checked against their TS 29.500 ABNF before a request is forwarded (model C and static
routes; model D does the same): an invalid or repeated one gets 400 ``OPTIONAL_IE_INCORRECT``
naming it in ``invalidParams`` (``header_problem``).

Deadlines: ``3gpp-Sbi-Max-Rsp-Time`` (with ``3gpp-Sbi-Sender-Timestamp`` when present, TS 29.500
§6.11) sets ``Forward.timeout``; a request already past its deadline gets 504
``TIMED_OUT_REQUEST``.  ``Forward.retryable`` is True for idempotent methods.

The 404 for "no route" uses cause ``RESOURCE_URI_STRUCTURE_NOT_FOUND``: TS 29.500 pairs 404 with
it, while ``TARGET_NF_NOT_REACHABLE`` is a 504 for a chosen producer that did not answer (the
proxy's case, not the router's).

``ChainRouter([r1, r2, ...])`` composes routers where each may decline (None).

``ScpRouter`` is this class on the compiled base (``nf_adapters._scp_fast``: scp_model_c.py
compiled, model C's common case in C in front of everything else, which is this class's code)
when it is built, unless ``NFMESH_SCP_ROUTER=pure``; ``PureScpRouter`` is always the class on
the pure base, and ``load_scp_router`` gives either.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dataplane.engine import Headers
from dataplane.routing import Decision, Endpoint, Forward, LocalResponse, Router
from nf_adapters import sbi_headers as sh
from nf_adapters.overload_control import consumer_key, message_priority
from nf_adapters.problem_details import problem
from nf_adapters.scp_model_c import IDEMPOTENT_METHODS, MODEL_C_CLUSTER, ModelCFastCase

try:  # the Cython twin when built (setup.py build_ext), else the pure one
    from nf_adapters._sbi_fast import rewrite_headers, scan_request

    FAST_REWRITE = True
except ImportError:  # pragma: no cover - depends on the build
    from nf_adapters.sbi_rewrite import rewrite_headers, scan_request

    FAST_REWRITE = False

LB_POLICIES = ("round_robin", "weighted")
MAX_ALTERNATES = 8
TARGET_CACHE_SIZE = 4096  # parsed apiRoots kept (cleared whole when full)
TARGET_CACHE_VALUE_MAX = 256  # longer values are parsed every time, never kept


# ---------------------------------------------------------------------------------------------
# the compiled, immutable route table

@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A named set of upstream endpoints."""

    name: str
    endpoints: tuple[Endpoint, ...]
    weights: tuple[int, ...] = ()  # same length as endpoints; () = all 1
    lb: str = "round_robin"  # "round_robin" | "weighted"
    request_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Requests whose path starts with ``path_prefix`` (and, when set, whose ``:authority``
    equals ``authority``; without a port in ``authority`` any port matches) go to ``cluster``."""

    name: str
    path_prefix: str
    cluster: str
    authority: str | None = None
    timeout_s: float | None = None  # overrides the cluster's request timeout


def cluster_endpoints(cluster: object) -> tuple[Endpoint, ...]:
    """The ``Endpoint`` of each of a config cluster's ``endpoints`` (read by attribute name),
    as routes and the upstream pools key them: TLS endpoints check the configured
    ``server_name``, else the host when it is a name."""
    return tuple(
        Endpoint(e.host, e.port, e.tls,
                 (e.server_name or (e.host if not _is_ip_literal(e.host) else None))
                 if e.tls else None)
        for e in cluster.endpoints)  # type: ignore[attr-defined]


class RouteTable:
    """Clusters and routes, validated and sorted once (longest prefix first; at equal length a
    route with an authority before one without).  Immutable: build a new one to change it."""

    __slots__ = ("clusters", "routes", "_match")

    def __init__(self, clusters: Iterable[ClusterSpec] = (),
                 routes: Iterable[RouteSpec] = ()) -> None:
        cl: dict[str, ClusterSpec] = {}
        for c in clusters:
            if c.name in cl:
                raise ValueError(f"cluster {c.name!r} defined twice")
            if not c.endpoints:
                raise ValueError(f"cluster {c.name!r} has no endpoints")
            if c.weights and len(c.weights) != len(c.endpoints):
                raise ValueError(f"cluster {c.name!r}: {len(c.weights)} weights for "
                                 f"{len(c.endpoints)} endpoints")
            if any(w <= 0 for w in c.weights):
                raise ValueError(f"cluster {c.name!r}: weights must be > 0")
            if c.lb not in LB_POLICIES:
                raise ValueError(f"cluster {c.name!r}: lb must be one of {', '.join(LB_POLICIES)}")
            cl[c.name] = c
        rs = list(routes)
        names = set()
        for r in rs:
            if r.name in names:
                raise ValueError(f"route {r.name!r} defined twice")
            names.add(r.name)
            if r.cluster not in cl:
                raise ValueError(f"route {r.name!r}: unknown cluster {r.cluster!r}")
            if not r.path_prefix.startswith("/"):
                raise ValueError(f"route {r.name!r}: path_prefix must start with '/'")
        rs.sort(key=lambda r: (-len(r.path_prefix), r.authority is None))
        self.clusters: Mapping[str, ClusterSpec] = MappingProxyType(cl)
        self.routes: tuple[RouteSpec, ...] = tuple(rs)
        self._match = tuple(
            (r.path_prefix.encode(), _authority_key(r.authority), r) for r in rs)

    @classmethod
    def from_config(cls, config: object) -> RouteTable:
        """Compile the ``clusters`` and ``routes`` sections of the gateway config (read by
        attribute name: nf_adapters does not import gateway)."""
        default_timeout = getattr(getattr(config, "scp", None), "request_timeout_s", None)
        clusters = []
        for c in getattr(config, "clusters", ()):
            endpoints = cluster_endpoints(c)
            clusters.append(ClusterSpec(
                c.name, endpoints, tuple(e.weight for e in c.endpoints), c.lb,
                c.request_timeout_s if c.request_timeout_s is not None else default_timeout))
        routes = [RouteSpec(r.name, r.match.path_prefix, r.cluster, r.match.authority,
                            r.timeout_s) for r in getattr(config, "routes", ())]
        return cls(clusters, routes)

    def match(self, authority: bytes | None, path: bytes) -> RouteSpec | None:
        """The route for this request, or None."""
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        host = None
        for prefix, want, route in self._match:
            if not path.startswith(prefix):
                continue
            if want is None:
                return route
            if authority is None:
                continue
            a = authority.lower()
            if want[1]:  # route authority has a port: exact
                if a == want[0]:
                    return route
            else:
                if host is None:
                    host = _host_of(a)
                if host == want[0]:
                    return route
        return None


def _is_ip_literal(host: str) -> bool:
    return ":" in host or bool(sh._IPV4_RE.fullmatch(host))


def _authority_key(authority: str | None) -> tuple[bytes, bool] | None:
    if authority is None:
        return None
    a = authority.lower().encode()
    return a, _host_of(a) != a


def _host_of(authority: bytes) -> bytes:
    if authority.startswith(b"["):
        end = authority.find(b"]")
        return authority[: end + 1] if end > 0 else authority
    return authority.partition(b":")[0]


# ---------------------------------------------------------------------------------------------
# which model C targets may be reached

class TargetPolicy:
    """Where model C may send requests: without it an SCP is an open proxy (any consumer can
    make it connect anywhere).  Entries: a CIDR or IP (``10.0.0.0/8``, ``2001:db8::/32``), a
    domain suffix starting with a dot (``.3gppnetwork.org``), or an exact host name.  No
    entries: every target is allowed."""

    __slots__ = ("networks", "suffixes", "hosts", "open")

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list = []
        self.suffixes: tuple[str, ...] = ()
        self.hosts: frozenset[str] = frozenset()
        suffixes, hosts = [], set()
        for entry in entries:
            e = entry.strip().lower()
            if not e:
                raise ValueError("empty allowed target")
            if e.startswith("."):
                suffixes.append(e)
                continue
            try:
                self.networks.append(ipaddress.ip_network(e, strict=False))
                continue
            except ValueError:
                pass
            if not sh._REGNAME_RE.fullmatch(e) or sh._DIGITS_DOTS_RE.fullmatch(e):
                raise ValueError(f"allowed target must be a CIDR, .domain or host name: {entry!r}")
            hosts.add(e)
        self.suffixes = tuple(suffixes)
        self.hosts = frozenset(hosts)
        self.open = not (self.networks or self.suffixes or self.hosts)

    def allows(self, host: str) -> bool:
        """``host`` as parsed from an apiRoot (lowercase, IPv6 without brackets)."""
        if self.open:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return host in self.hosts or host.endswith(self.suffixes)
        return any(addr in net for net in self.networks)


# ---------------------------------------------------------------------------------------------
# endpoint selection

class _Picker:
    """Per-cluster selection state (lives in the router, not the immutable table)."""

    __slots__ = ("name", "endpoints", "n", "weights", "current", "total", "next", "timeout",
                 "same_tls", "weighted")

    def __init__(self, spec: ClusterSpec) -> None:
        self.name = spec.name
        self.endpoints = spec.endpoints
        self.n = len(spec.endpoints)
        self.weights = spec.weights or (1,) * self.n
        self.weighted = spec.lb == "weighted" and len(set(self.weights)) > 1
        self.current = [0] * self.n
        self.total = sum(self.weights)
        self.next = 0
        self.timeout = spec.request_timeout_s
        self.same_tls = len({e.tls for e in spec.endpoints}) == 1

    def pick(self) -> int:
        if not self.weighted:
            i = self.next
            self.next = (i + 1) % self.n
            return i
        # smooth weighted round robin (nginx): spreads picks, exact proportions per cycle
        cur = self.current
        weights = self.weights
        best = 0
        best_val = None
        for i in range(self.n):
            v = cur[i] + weights[i]
            cur[i] = v
            if best_val is None or v > best_val:
                best, best_val = i, v
        cur[best] -= self.total
        return best


# ---------------------------------------------------------------------------------------------
# the router

@dataclass(slots=True)
class _Options:
    via_name: str
    max_forward_hops: int
    model_c: bool
    default_timeout: float | None
    clock: Callable[[], float]
    pseudonym: bytes = b""
    via_value: bytes = b""
    pseudonym_lower: bytes = b""
    hops_values: list[bytes] = field(default_factory=list)


class ScpRouter(ModelCFastCase):
    """SCP model C + static routes over one ``RouteTable`` (see the module doc); ``route`` and
    ``try_route`` come from its base (``nf_adapters.scp_model_c``)."""

    def __init__(
        self,
        snapshot: RouteTable | None = None,
        *,
        via_name: str = "nfmesh",
        max_forward_hops: int = 8,
        model_c: bool = True,
        fallback: Router | None = None,
        default_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        allowed_targets: Iterable[str] = (),
    ) -> None:
        if not 1 <= max_forward_hops <= 99:
            raise ValueError("max_forward_hops must be 1..99")
        self.target_policy = TargetPolicy(allowed_targets)
        self.table = snapshot if snapshot is not None else RouteTable()
        self.fallback = fallback
        o = _Options(via_name, max_forward_hops, model_c, default_timeout, clock)
        pseudonym = sh.scp_via_pseudonym(via_name)
        if not sh._TOKEN_RE.fullmatch(pseudonym):
            raise ValueError(f"via_name must be a token (letters, digits, -._~...), got {via_name!r}")
        o.pseudonym = pseudonym.encode()
        o.pseudonym_lower = o.pseudonym.lower()
        o.via_value = b"2.0 " + o.pseudonym
        o.hops_values = [sh.format_max_forward_hops(n) for n in range(100)]
        self._o = o
        self._fallback_call = _decline_call(fallback)
        self._pickers = {name: _Picker(spec) for name, spec in self.table.clusters.items()}
        # parsed Target-apiRoot values: NFs talk to few producers, so most requests hit
        self._targets: dict[bytes, tuple] = {}
        self._prime()

    @classmethod
    def from_config(cls, config: object, fallback: Router | None = None) -> ScpRouter:
        """The router for a gateway ``Config`` (its routes, clusters and ``scp`` section)."""
        scp = getattr(config, "scp", None)
        gw = getattr(config, "gateway", None)
        via = getattr(scp, "via_name", None) or getattr(gw, "name", None) or "nfmesh"
        return cls(RouteTable.from_config(config), via_name=via,
                   max_forward_hops=getattr(scp, "max_forward_hops", 8),
                   model_c=getattr(scp, "model_c", True), fallback=fallback,
                   default_timeout=getattr(scp, "request_timeout_s", None),
                   allowed_targets=getattr(scp, "allowed_targets", None) or ())

    # -- the Router protocol -----------------------------------------------------------------

    def _route_scanned(self, headers: Headers, peer: dict, scan: tuple) -> Decision:
        if scan[4] is not None and self._o.model_c:
            return self._model_c(headers, scan, peer)
        decision = self._own(headers, peer, scan)
        if decision is None and self._fallback_call is not None:
            decision = self._fallback_call(headers, peer)
        return decision if decision is not None else not_found(headers)

    def _try_route_scanned(self, headers: Headers, peer: dict, scan: tuple) -> Decision | None:
        decision = self._own(headers, peer, scan)
        if decision is None and self._fallback_call is not None:
            decision = self._fallback_call(headers, peer)
        return decision

    def _own(self, headers: Headers, peer: dict, scan: tuple | None = None) -> Decision | None:
        if scan is None:
            scan = scan_request(headers)
        method, _scheme, authority, path, target, hops_raw, via, rsp_raw, ts_raw, prio_raw, ua \
            = scan
        o = self._o
        if target is not None and o.model_c:
            return self._model_c(headers, scan, peer)
        if path is None:
            return None
        route = self.table.match(authority, path)
        if route is None:
            return None
        bad = header_problem(headers)
        if bad is not None:
            return bad
        if hops_raw is None and via is None:
            hops = o.max_forward_hops - 1
        else:
            err = self._loop_check(hops_raw, via)
            if isinstance(err, LocalResponse):
                return err
            hops = err
        timeout = None if rsp_raw is None else self._deadline(rsp_raw, ts_raw)
        if isinstance(timeout, LocalResponse):
            return timeout
        priority = -1 if prio_raw is None else message_priority(prio_raw)
        if type(priority) is not int:
            return priority
        picker = self._pickers[route.cluster]
        if timeout is None:
            timeout = route.timeout_s if route.timeout_s is not None else picker.timeout
            if timeout is None:
                timeout = o.default_timeout
        i = picker.pick()
        endpoints = picker.endpoints
        ep = endpoints[i]
        hops_value = o.hops_values[hops]
        fwd_headers = rewrite_headers(headers, b"https" if ep.tls else b"http", None, None,
                                      hops_value, o.via_value)
        alternates = []
        n = picker.n
        if n > 1:
            for k in range(1, min(n, MAX_ALTERNATES + 1)):
                alt = endpoints[(i + k) % n]
                if picker.same_tls:
                    alternates.append((alt, fwd_headers))
                else:
                    alternates.append((alt, rewrite_headers(
                        headers, b"https" if alt.tls else b"http", None, None, hops_value,
                        o.via_value)))
        return Forward(ep, fwd_headers, picker.name, alternates, [], timeout,
                       method in IDEMPOTENT_METHODS, [], priority, consumer_key(peer, ua),
                       rsp_raw is not None)

    # -- pieces --------------------------------------------------------------------------------

    def _model_c(self, headers: Headers, scan: tuple, peer: dict | None = None) -> Decision:
        method, _scheme, _authority, path, target, hops_raw, via, rsp_raw, ts_raw, prio_raw, ua \
            = scan
        o = self._o
        target_info = self._targets.get(target)
        if target_info is None:
            try:
                if target == b"\x00":  # sbi_rewrite.REPEATED
                    raise sh.SbiHeaderError("3gpp-Sbi-Target-apiRoot", "header repeated")
                root = sh.parse_target_apiroot(target)
            except sh.SbiHeaderError as exc:
                return problem(400, "MANDATORY_IE_INCORRECT",
                               f"invalid 3gpp-Sbi-Target-apiRoot: {exc.reason}",
                               [(exc.header, exc.reason)])
            tls = root.tls
            ep = Endpoint(root.host, root.effective_port, tls,
                          root.host if tls and not root.is_ip else None)
            if not self.target_policy.allows(root.host):
                return problem(403, "TARGET_NOT_ALLOWED",
                               f"3gpp-Sbi-Target-apiRoot host {root.host} is not in "
                               "scp.allowed_targets",
                               [("3gpp-Sbi-Target-apiRoot", "target not allowed")])
            target_info = (root, ep, root.scheme.encode(), root.authority.encode())
            if len(target) <= TARGET_CACHE_VALUE_MAX:
                if len(self._targets) >= TARGET_CACHE_SIZE:
                    self._targets.clear()
                self._targets[target] = target_info
        root, ep, scheme_b, authority_b = target_info
        bad = header_problem(headers)
        if bad is not None:
            return bad
        if hops_raw is None and via is None:
            hops = o.max_forward_hops - 1
        else:
            err = self._loop_check(hops_raw, via)
            if isinstance(err, LocalResponse):
                return err
            hops = err
        timeout = None if rsp_raw is None else self._deadline(rsp_raw, ts_raw)
        if isinstance(timeout, LocalResponse):
            return timeout
        if timeout is None:
            timeout = o.default_timeout
        priority = -1 if prio_raw is None else message_priority(prio_raw)
        if type(priority) is not int:
            return priority
        if path is None:
            return problem(400, "MANDATORY_IE_MISSING", "request has no :path",
                           [(":path", "missing")])
        new_path = root.join(path.decode("latin-1")).encode("latin-1") if root.prefix else path
        fwd = rewrite_headers(headers, scheme_b, authority_b, new_path,
                              o.hops_values[hops], o.via_value)
        return Forward(ep, fwd, MODEL_C_CLUSTER, [], [], timeout, method in IDEMPOTENT_METHODS,
                       [], priority, consumer_key(peer, ua), rsp_raw is not None)

    def hop_stamp(self, headers: Headers) -> tuple[bytes, bytes] | LocalResponse:
        """Loop protection for another forwarding router (model D) chained with this one:
        the 400/508 answer, or the (``3gpp-sbi-max-forward-hops``, ``via``) values to put on
        the forwarded request, e.g. ``rewrite_headers(headers, scheme, authority, path,
        *stamp)``, which also drops the received hop count."""
        scan = scan_request(headers)
        hops = self._loop_check(scan[5], scan[6])
        if isinstance(hops, LocalResponse):
            return hops
        return self._o.hops_values[hops], self._o.via_value

    def _loop_check(self, hops_raw: bytes | None, via: list[bytes] | None) -> int | LocalResponse:
        """The hop count to forward with, or the 400/508 answer."""
        o = self._o
        if via is not None:
            for value in via:
                if o.pseudonym_lower in value.lower() and self._via_names_us(value):
                    return problem(508, "LOOP_DETECTED",
                                   f"request already passed {o.pseudonym.decode()} (Via)")
        if hops_raw is None:
            return o.max_forward_hops - 1
        try:
            hops = sh.parse_max_forward_hops(hops_raw)
        except sh.SbiHeaderError as exc:
            return problem(400, "OPTIONAL_IE_INCORRECT",
                           f"invalid 3gpp-Sbi-Max-Forward-Hops: {exc.reason}",
                           [(exc.header, exc.reason)])
        if hops == 0:
            return problem(508, "LOOP_DETECTED", "3gpp-Sbi-Max-Forward-Hops exhausted")
        return min(hops, o.max_forward_hops) - 1

    def _via_names_us(self, value: bytes) -> bool:
        want = self._o.pseudonym_lower.decode()
        try:
            entries = sh.parse_via(value)
        except sh.SbiHeaderError:
            # not RFC 9110 Via: fall back to a token match
            return any(tok.lower() == want for tok in value.decode("latin-1").replace(",", " ").split())
        return any(e.received_by.lower() == want for e in entries)

    def _deadline(self, rsp_raw: bytes | None, ts_raw: bytes | None) -> float | None | LocalResponse:
        if rsp_raw is None:
            return None
        try:
            budget = sh.parse_max_rsp_time(rsp_raw) / 1000.0
        except sh.SbiHeaderError as exc:
            return problem(400, "OPTIONAL_IE_INCORRECT",
                           f"invalid 3gpp-Sbi-Max-Rsp-Time: {exc.reason}",
                           [(exc.header, exc.reason)])
        if ts_raw is not None:
            try:
                sent = _SENT_AT.get(ts_raw)
                if sent is None:  # consumers send many requests per millisecond: parse once
                    sent = sh.parse_sender_timestamp(ts_raw).timestamp()
                    if len(_SENT_AT) >= 512:
                        _SENT_AT.clear()
                    _SENT_AT[ts_raw] = sent
            except sh.SbiHeaderError as exc:
                return problem(400, "OPTIONAL_IE_INCORRECT",
                               f"invalid 3gpp-Sbi-Sender-Timestamp: {exc.reason}",
                               [(exc.header, exc.reason)])
            budget = min(budget, sent + budget - self._o.clock())
        if budget <= 0:
            return problem(504, "TIMED_OUT_REQUEST",
                           "the request's 3gpp-Sbi-Max-Rsp-Time has already elapsed")
        return budget


_SENT_AT: dict[bytes, float] = {}  # 3gpp-Sbi-Sender-Timestamp values parsed lately


def header_problem(headers: Headers) -> LocalResponse | None:
    """400 ``OPTIONAL_IE_INCORRECT`` naming the first ``sh.CHECKED_REQUEST_HEADERS`` field
    (Routing-Binding, Target-Nf-Id, Originating-Network-Id) that breaks its TS 29.500 ABNF;
    None when they are absent or valid.  Such a request is never forwarded."""
    err = sh.first_invalid_header(headers)
    if err is None:
        return None
    return problem(400, "OPTIONAL_IE_INCORRECT", f"invalid {err.header}: {err.reason}",
                   [(err.header, err.reason)])


def not_found(headers: Headers) -> LocalResponse:
    """404 ProblemDetails for a request no router owns."""
    scan = scan_request(headers)
    authority = (scan[2] or b"").decode("latin-1")[:200]
    path = (scan[3] or b"").decode("latin-1")[:200]
    return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND",
                   f"no route for {authority}{path} (no 3gpp-Sbi-Target-apiRoot, "
                   "no discovery headers, no static route)")


class ChainRouter:
    """Asks routers in order; the first that does not decline (None) decides.

    A member may offer ``try_route`` (preferred: declines with None) or a plain ``route`` that
    may return None.  All decline -> ``fallback.route`` when given, else 404 ProblemDetails."""

    __slots__ = ("routers", "_calls", "fallback")

    def __init__(self, routers: Iterable[object], fallback: Router | None = None) -> None:
        self.routers = tuple(routers)
        self.fallback = fallback
        calls = [_decline_call(r) for r in self.routers]
        if fallback is not None:
            calls.append(_decline_call(fallback))
        self._calls = tuple(calls)

    def try_route(self, headers: Headers, peer: dict) -> Decision | None:
        for call in self._calls:
            decision = call(headers, peer)
            if decision is not None:
                return decision
        return None

    def route(self, headers: Headers, peer: dict) -> Decision:
        decision = self.try_route(headers, peer)
        return decision if decision is not None else not_found(headers)


def _decline_call(router: object | None) -> Callable[[Headers, dict], Decision | None] | None:
    """The method to ask ``router`` with, preferring ``try_route`` (may decline with None)."""
    if router is None:
        return None
    return getattr(router, "try_route", None) or router.route  # type: ignore[attr-defined]


# ``PureScpRouter`` is always the class on the pure base; ``ScpRouter`` the one
# ``load_scp_router()`` gives (compiled when built, unless NFMESH_SCP_ROUTER=pure)
PureScpRouter = ScpRouter


def load_scp_router(name: str = "auto") -> type:
    """The ``ScpRouter`` class: ``cython`` (this module's class on ``nf_adapters._scp_fast``'s
    ``ModelCFastCase``: scp_model_c.py compiled, see setup.py's TWINS), ``pure``
    (``PureScpRouter``), or ``auto``: the compiled one when built, unless
    ``NFMESH_SCP_ROUTER`` names one (A/B runs)."""
    from dataplane.twins import load_twin

    base = load_twin(name, ("nf_adapters._scp_fast", "ModelCFastCase"), ModelCFastCase,
                     "NFMESH_SCP_ROUTER", "SCP router")
    return PureScpRouter if base is ModelCFastCase else _on_base(base)  # type: ignore[arg-type]


@functools.cache
def _on_base(base: type) -> type:
    """``PureScpRouter``'s code on the compiled base (made once): its ``route``/``try_route``
    and C fields come first in the MRO, everything else is ``PureScpRouter``'s."""
    return type("ScpRouter", (base, PureScpRouter), {
        "__doc__": PureScpRouter.__doc__, "__module__": __name__,
        "__qualname__": "ScpRouter"})


ScpRouter = load_scp_router()  # type: ignore[misc]
SCP_ROUTER_IMPL = "pure" if ScpRouter is PureScpRouter else "cython"
