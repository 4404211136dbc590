"""SBI load scenarios: a YAML file describing a weighted mix of service operations.

Format (see ``perf/scenarios/sbi-mix.yaml``)::

    name: sbi-mix
    variables:                 # defaults; --var NAME=VALUE overrides
      target_apiroot: ""       # a header whose value renders empty is left out
      udm_apiroot: ""          # an operation's header overrides the common one when not empty
    subscribers: {prefix: "imsi-00101", first: 1, count: 1000, digits: 10}   # {supi}
    headers:                   # on every request
      user-agent: AMF-nfmesh-loadgen
      3gpp-sbi-target-apiroot: "{target_apiroot}"
    operations:
      - name: nausf-ue-authentication
        weight: 2
        method: POST
        path: /nausf-auth/v1/ue-authentications
        headers: {content-type: application/json}
        body: {supiOrSuci: "{supi}", servingNetworkName: "5G:mnc001.mcc001.3gppnetwork.org"}
        expect: [201]

Placeholders ``{name}`` may appear in paths, header values and string values of bodies:
``{supi}`` (the subscriber of this request, cycling through ``subscribers``), ``{seq}`` (the
request's index in the pool), and every variable.  A mistake is reported as a
``ScenarioError`` naming the field (``operations[1].method: ...``).

``Scenario.prepare`` renders a pool of requests once, ahead of the run, in an exact weighted
interleaving (smooth weighted round robin), so the load generator only cycles through it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dataplane.engine import Headers

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
MAX_OPERATIONS = 256
MAX_POOL = 65536
MAX_FILE_BYTES = 1 << 20


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One SBI service operation of a scenario (templates, not yet rendered)."""

    name: str
    method: str
    path: str
    weight: int = 1
    headers: tuple[tuple[str, str], ...] = ()
    body: object = None  # JSON value (dict/list), a string, or None
    expect: frozenset[int] = frozenset()  # empty: any 2xx


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One ready-to-send request of the pool."""

    operation: str
    headers: Headers
    body: bytes | None
    expect: frozenset[int]


@dataclass(slots=True)
class Scenario:
    """A parsed scenario."""

    name: str
    operations: list[Operation]
    headers: tuple[tuple[str, str], ...] = ()
    variables: dict[str, str] = field(default_factory=dict)
    supi_prefix: str = "imsi-00101"
    supi_first: int = 1
    supi_count: int = 1000
    supi_digits: int = 10

    def supi(self, i: int) -> str:
        return f"{self.supi_prefix}{self.supi_first + i % self.supi_count:0{self.supi_digits}d}"

    def weighted_order(self, n: int) -> list[int]:
        """Indices of ``n`` operations in smooth weighted round-robin order (exact mix)."""
        total = sum(op.weight for op in self.operations)
        current = [0] * len(self.operations)
        out = []
        for _ in range(n):
            for k, op in enumerate(self.operations):
                current[k] += op.weight
            best = max(range(len(current)), key=current.__getitem__)
            current[best] -= total
            out.append(best)
        return out

    def pool_size(self) -> int:
        total = sum(op.weight for op in self.operations)
        n = max(self.supi_count, total)
        n = -(-n // total) * total  # whole rounds of the weighted mix
        return min(n, MAX_POOL)

    def prepare(
        self, *, scheme: bytes, authority: bytes, variables: dict[str, str] | None = None,
        extra_headers: Headers | None = None, size: int | None = None,
    ) -> list[PreparedRequest]:
        """Render the request pool.  ``variables`` override the scenario's; unknown
        placeholders raise ``ScenarioError``."""
        values = {**self.variables, **(variables or {})}
        n = size or self.pool_size()
        pool = []
        for seq, k in enumerate(self.weighted_order(n)):
            op = self.operations[k]
            ctx = {**values, "supi": self.supi(seq), "seq": str(seq)}
            where = f"operations[{k}] ({op.name})"
            path = _render(op.path, ctx, f"{where}.path")
            headers: Headers = [
                (b":method", op.method.encode()),
                (b":scheme", scheme),
                (b":authority", authority),
                (b":path", path.encode()),
            ]
            seen = set()
            for name, value in (*op.headers, *self.headers):
                if name in seen:
                    continue  # the operation's own header wins over the common one
                v = _render(value, ctx, f"{where}.headers.{name}")
                if v:  # a header that renders empty is left out (and does not shadow)
                    seen.add(name)
                    headers.append((name.encode(), v.encode()))
            for name, value in extra_headers or ():
                headers = [h for h in headers if h[0] != name]
                headers.append((name, value))
            body = _render_body(op.body, ctx, f"{where}.body")
            if body is not None and not any(h[0] == b"content-type" for h in headers):
                headers.append((b"content-type", b"application/json"))
            pool.append(PreparedRequest(op.name, headers, body, op.expect or _ANY_2XX))
        return pool


_ANY_2XX = frozenset(range(200, 300))


def _render(template: str, ctx: dict[str, str], where: str) -> str:
    def sub(m: re.Match) -> str:
        try:
            return str(ctx[m.group(1)])
        except KeyError:
            raise ScenarioError(
                f"{where}: unknown placeholder {{{m.group(1)}}} (known: {', '.join(sorted(ctx))})"
            ) from None
    return _PLACEHOLDER.sub(sub, template)


def _render_value(value: object, ctx: dict[str, str], where: str) -> object:
    if isinstance(value, str):
        return _render(value, ctx, where)
    if isinstance(value, dict):
        return {k: _render_value(v, ctx, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, ctx, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _render_body(body: object, ctx: dict[str, str], where: str) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str):
        return _render(body, ctx, where).encode()
    return json.dumps(_render_value(body, ctx, where), separators=(",", ":")).encode()


def _str_map(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a mapping of header name to value")
    out = []
    for k, v in value.items():
        name = str(k).lower()
        if not _HEADER_NAME.match(name):
            raise ScenarioError(f"{where}.{k}: not a valid HTTP header name")
        if isinstance(v, (dict, list)) or v is None:
            raise ScenarioError(f"{where}.{k}: header value must be a string or number")
        out.append((name, str(v)))
    return tuple(out)


def _int(value: object, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ScenarioError(f"{where}: expected an integer within {lo}..{hi}, got {value!r}")
    return value


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Validate a scenario document (already decoded from YAML)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    known = {"name", "description", "variables", "subscribers", "headers", "operations"}
    for key in data:
        if key not in known:
            raise ScenarioError(f"{source}: unknown field {key!r} (known: {', '.join(sorted(known))})")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{source}: name: expected a non-empty string")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict) or any(isinstance(v, (dict, list)) for v in variables.values()):
        raise ScenarioError(f"{source}: variables: expected a mapping of name to string")
    subs = data.get("subscribers") or {}
    if not isinstance(subs, dict):
        raise ScenarioError(f"{source}: subscribers: expected a mapping")
    for key in subs:
        if key not in ("prefix", "first", "count", "digits"):
            raise ScenarioError(f"{source}: subscribers: unknown field {key!r}")
    ops_data = data.get("operations")
    if not isinstance(ops_data, list) or not ops_data:
        raise ScenarioError(f"{source}: operations: expected a non-empty list")
    if len(ops_data) > MAX_OPERATIONS:
        raise ScenarioError(f"{source}: operations: at most {MAX_OPERATIONS}")
    ops = []
    names = set()
    for i, od in enumerate(ops_data):
        where = f"operations[{i}]"
        if not isinstance(od, dict):
            raise ScenarioError(f"{where}: expected a mapping")
        for key in od:
            if key not in ("name", "weight", "method", "path", "headers", "body", "expect"):
                raise ScenarioError(f"{where}: unknown field {key!r}")
        method = od.get("method")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ScenarioError(f"{where}.method: expected one of {', '.join(sorted(METHODS))}, "
                                f"got {method!r}")
        path = od.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ScenarioError(f"{where}.path: expected a string starting with '/', got {path!r}")
        op_name = od.get("name", f"{method.upper()} {path}")
        if not isinstance(op_name, str) or op_name in names:
            raise ScenarioError(f"{where}.name: expected a unique string, got {op_name!r}")
        names.add(op_name)
        body = od.get("body")
        if body is not None and not isinstance(body, (dict, list, str)):
            raise ScenarioError(f"{where}.body: expected a JSON object, list or string")
        expect = od.get("expect") or []
        if not isinstance(expect, list):
            raise ScenarioError(f"{where}.expect: expected a list of status codes")
        ops.append(Operation(
            name=op_name,
            method=method.upper(),
            path=path,
            weight=_int(od.get("weight", 1), f"{where}.weight", 1, 1000),
            headers=_str_map(od.get("headers"), f"{where}.headers"),
            body=body,
            expect=frozenset(_int(s, f"{where}.expect", 100, 599) for s in expect),
        ))
    prefix = subs.get("prefix", "imsi-00101")
    if not isinstance(prefix, str):
        raise ScenarioError(f"{source}: subscribers.prefix: expected a string")
    return Scenario(
        name=name,
        operations=ops,
        headers=_str_map(data.get("headers"), "headers"),
        variables={str(k): "" if v is None else str(v) for k, v in variables.items()},
        supi_prefix=prefix,
        supi_first=_int(subs.get("first", 1), "subscribers.first", 0, 10**15),
        supi_count=_int(subs.get("count", 1000), "subscribers.count", 1, MAX_POOL),
        supi_digits=_int(subs.get("digits", 10), "subscribers.digits", 1, 15),
    )


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario YAML file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"{p}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    return parse_scenario(data, str(p))
