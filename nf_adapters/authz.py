"""Authorisation by NF type: which consumer NF types may call which SBI service.

The rule has the shape of TS 29.510's ``NFService.allowedNfTypes``: per producer service name
(``nudm-sdm``, ``npcf-smpolicycontrol``, ...) the set of NF types allowed to call it.
``NfTypeAuthzRouter`` wraps any Router: a request whose caller's NF type (read from its mTLS
certificate by a function the gateway injects, ``gateway.identity.peer_nf_types``) is not allowed
gets 403 ProblemDetails with cause ``NF_TYPE_NOT_ALLOWED`` and never reaches routing or a
producer.

Decisions, for the service named by ``:path``:

* a rule for the service lists ``*``: anyone, identified or not (the NRF APIs usually);
* a rule lists NF types: the caller's NF type (any one of them, for a certificate that
  certifies several) must be listed; a caller without an NF identity (h2c, no client
  certificate, certificate without a known NF type) is denied;
* no rule for the service: ``default`` decides (``allow``: anyone; ``deny``: no one).

The service name is the first ``:path`` segment shaped like a 3GPP service (``n<nf>-<svc>``)
that is followed by a version segment (``v1``), so an apiRoot prefix before it
(``/deployment-1/nudm-sdm/v2/...``) does not hide it; ``/oauth2/token`` (TS 29.510 access
tokens) is the service ``oauth2``.  A path with no recognisable service falls to ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from dataplane.engine import Headers
from dataplane.routing import Decision, LocalResponse, Router
from nf_adapters.discovery import NF_TYPES
from nf_adapters.problem_details import problem

CAUSE = "NF_TYPE_NOT_ALLOWED"
ANY = "*"
_SERVICE_RE = re.compile(rb"^n[a-z0-9]+-[a-z0-9-]+$")
# the first path segment shaped like a service and followed by a version segment, at most
# _MAX_PREFIX segments in (an apiRoot prefix): one regex pass with bounded backtracking
_MAX_PREFIX = 7
_SERVICE_PATH_RE = re.compile(
    rb"^/(?:[^/?]*/){0,%d}?(?:(n[a-z0-9]+-[a-z0-9-]+)/v[0-9]+|(oauth2)/token)(?:[/?]|$)"
    % _MAX_PREFIX)


def service_of(path: bytes) -> str | None:
    """The SBI service name in a request ``:path`` (``b"/nudm-sdm/v2/imsi-1/am-data"`` ->
    ``"nudm-sdm"``), or None when the path names none."""
    m = _SERVICE_PATH_RE.match(path)
    if m is None:
        return None
    return (m.group(1) or m.group(2)).decode("ascii")


class NfTypePolicy:
    """Service name -> allowed consumer NF types (``*`` = anyone), plus the default."""

    __slots__ = ("rules", "default_allow")

    def __init__(self, rules: Mapping[str, Iterable[str]], default_allow: bool = False) -> None:
        checked: dict[str, frozenset[str]] = {}
        problems = []
        for service, types in rules.items():
            if not isinstance(service, str) or not (
                    service == "oauth2" or _SERVICE_RE.match(service.encode("ascii", "replace"))):
                problems.append(f"services.{service}: not an SBI service name (like nudm-sdm)")
                continue
            if isinstance(types, (str, bytes)):
                problems.append(f"services.{service}: must be a list of NF types")
                continue
            allowed = frozenset(types)
            bad = sorted(str(t) for t in allowed if t != ANY and t not in NF_TYPES)
            if bad:
                problems.append(f"services.{service}: unknown NF type(s) {', '.join(bad)} "
                                f"(NFType of TS 29.510, or '*')")
            checked[service] = allowed
        if problems:
            raise ValueError("; ".join(problems))
        self.rules = checked
        self.default_allow = default_allow

    @classmethod
    def from_mapping(cls, data: Mapping) -> NfTypePolicy:
        """From config data: ``{"default": "allow"|"deny", "services": {svc: [types]}}``;
        ValueError naming every bad entry."""
        unknown = set(data) - {"default", "services"}
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        default = data.get("default", "deny")
        if default not in ("allow", "deny"):
            raise ValueError(f"default: must be allow or deny, not {default!r}")
        services = data.get("services", {}) or {}
        if not isinstance(services, Mapping):
            raise ValueError("services: must be a mapping of service name -> NF types")
        return cls(services, default_allow=default == "allow")

    def allows(self, nf_type: str | Sequence[str] | None, service: str | None) -> bool:
        """Whether a caller of ``nf_type`` (or of any of several certified types) may call
        ``service``."""
        allowed = self.rules.get(service) if service is not None else None
        if allowed is None:
            return self.default_allow
        if ANY in allowed:
            return True
        if nf_type is None:
            return False
        if isinstance(nf_type, str):
            return nf_type in allowed
        return any(t in allowed for t in nf_type)


def _path(headers: Headers) -> bytes:
    for name, value in headers:
        if name == b":path":
            return value
        if name[:1] != b":":
            break
    return b""


class NfTypeAuthzRouter:
    """A Router wrapper that answers 403 ``NF_TYPE_NOT_ALLOWED`` to callers the policy denies.

    ``nf_type_of(peer_info)`` returns the caller's NF type, or all its certified types, or
    None/() when unidentified (the gateway passes ``gateway.identity.peer_nf_types``, cached
    per connection; ``peer_nf_type`` works too).  ``route`` checks first and asks
    ``inner`` only when allowed; ``try_route`` (for ``ChainRouter`` members) asks ``inner``
    first so a request ``inner`` declines is declined, not denied."""

    __slots__ = ("inner", "policy", "nf_type_of", "_inner_try")

    def __init__(self, inner: Router, policy: NfTypePolicy,
                 nf_type_of: Callable[[dict], str | Sequence[str] | None]) -> None:
        self.inner = inner
        self.policy = policy
        self.nf_type_of = nf_type_of
        self._inner_try = getattr(inner, "try_route", None) or inner.route

    def check(self, headers: Headers, peer: dict) -> LocalResponse | None:
        """None when allowed, else the 403 answer."""
        service = service_of(_path(headers))
        nf_type = self.nf_type_of(peer)
        if self.policy.allows(nf_type, service):
            return None
        if isinstance(nf_type, str):
            who = f"NF type {nf_type}"
        elif nf_type:
            who = f"NF type{'s' if len(nf_type) > 1 else ''} {', '.join(nf_type)}"
        else:
            who = "a caller without an NF identity (no mesh mTLS certificate)"
        what = f"service {service}" if service else "this resource"
        return problem(403, CAUSE, f"{who} may not call {what}")

    def route(self, headers: Headers, peer: dict) -> Decision:
        denial = self.check(headers, peer)
        return denial if denial is not None else self.inner.route(headers, peer)

    def try_route(self, headers: Headers, peer: dict) -> Decision | None:
        decision = self._inner_try(headers, peer)
        if decision is None:
            return None
        denial = self.check(headers, peer)
        return denial if denial is not None else decision
