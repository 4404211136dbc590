"""Codecs for the TS 29.500 custom HTTP headers (annex ABNF, Rel-18) and ``Via`` (RFC 9110).

Each ``parse_*`` takes the field value as received (``bytes`` as on the wire, or ``str``) and
returns a typed value; each ``format_*`` is its inverse, so ``parse(format(x)) == x``.  A value
that does not follow the ABNF raises ``SbiHeaderError(header, reason)`` with the header's
canonical name and a precise reason, which callers turn into 400 ProblemDetails with
``invalidParams``.  Every parser bounds its work by ``MAX_VALUE_LEN`` and ``MAX_ELEMENTS``.

Header names on the wire are lowercase (HTTP/2); the ``*_H`` constants are those bytes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote, unquote

MAX_VALUE_LEN = 8192
MAX_ELEMENTS = 32

TARGET_APIROOT_H = b"3gpp-sbi-target-apiroot"
DISCOVERY_PREFIX_H = b"3gpp-sbi-discovery-"
MESSAGE_PRIORITY_H = b"3gpp-sbi-message-priority"
SENDER_TIMESTAMP_H = b"3gpp-sbi-sender-timestamp"
MAX_RSP_TIME_H = b"3gpp-sbi-max-rsp-time"
OCI_H = b"3gpp-sbi-oci"
LCI_H = b"3gpp-sbi-lci"
ROUTING_BINDING_H = b"3gpp-sbi-routing-binding"
BINDING_H = b"3gpp-sbi-binding"
PRODUCER_ID_H = b"3gpp-sbi-producer-id"
MAX_FORWARD_HOPS_H = b"3gpp-sbi-max-forward-hops"
CALLBACK_H = b"3gpp-sbi-callback"
CORRELATION_INFO_H = b"3gpp-sbi-correlation-info"
TARGET_NF_ID_H = b"3gpp-sbi-target-nf-id"
VIA_H = b"via"


class SbiHeaderError(ValueError):
    """A 3GPP header value that does not follow its ABNF."""

    def __init__(self, header: str, reason: str) -> None:
        super().__init__(f"{header}: {reason}")
        self.header = header
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# shared lexical pieces

_OWS = " \t"
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UUID_RE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
_PATH_ABSOLUTE_RE = re.compile(rf"/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?")
_REGNAME_RE = re.compile(r"[A-Za-z0-9\-._~]+")
_IPV4_RE = re.compile(
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
    r"(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])){3}")
_DIGITS_DOTS_RE = re.compile(r"[0-9.]+")
_BAD_CHAR_RE = re.compile(r"[^\t\x20-\x7e]")


def _text(header: str, value: bytes | str) -> str:
    """Decode and bound a field value; strip the OWS every 3GPP header allows around it."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value)
        if len(value) > MAX_VALUE_LEN:
            raise SbiHeaderError(header, f"value longer than {MAX_VALUE_LEN} bytes")
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise SbiHeaderError(header, "non-ASCII byte in value") from None
    elif len(value) > MAX_VALUE_LEN:
        raise SbiHeaderError(header, f"value longer than {MAX_VALUE_LEN} characters")
    if _BAD_CHAR_RE.search(value):
        raise SbiHeaderError(header, "control or non-ASCII character in value")
    value = value.strip(_OWS)
    if not value:
        raise SbiHeaderError(header, "empty value")
    return value


def _token(header: str, what: str, value: str) -> str:
    if not _TOKEN_RE.fullmatch(value):
        raise SbiHeaderError(header, f"{what} must be a token, got {value!r}")
    return value


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not inside a DQUOTE string (quoted-pair aware)."""
    parts, cur, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _elements(header: str, text: str, sep: str = ",") -> list[str]:
    parts = [p.strip(_OWS) for p in _split_outside_quotes(text, sep)]
    if len(parts) > MAX_ELEMENTS:
        raise SbiHeaderError(header, f"more than {MAX_ELEMENTS} elements")
    if any(not p for p in parts):
        raise SbiHeaderError(header, f"empty element between {sep!r} separators")
    return parts


def _uuid(header: str, what: str, value: str) -> str:
    if not _UUID_RE.fullmatch(value):
        raise SbiHeaderError(header, f"{what} must be a UUID (8-4-4-4-12 hex), got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Target-apiRoot

_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class ApiRoot:
    """``scheme://host[:port][prefix]``; ``host`` is bare (no brackets for IPv6)."""

    scheme: str  # "http" | "https"
    host: str
    port: int | None = None  # None: the scheme's default
    prefix: str = ""  # "" or a path-absolute ("/a/b", "/", "/a/")

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def is_ip(self) -> bool:
        return ":" in self.host or bool(_IPV4_RE.fullmatch(self.host))

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORT[self.scheme]

    @property
    def authority(self) -> str:
        """The value for ``:authority`` (IPv6 in brackets; port only when given)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def join(self, path: str) -> str:
        """The request ``path`` (with query) under this apiRoot's prefix: exactly one slash
        between them, the query kept."""
        return join_prefix(self.prefix, path)


def join_prefix(prefix: str, path: str) -> str:
    """``prefix`` + ``path`` without a doubled or missing ``/``: ``("/a/", "/b?x")`` ->
    ``"/a/b?x"``; ``("", p)`` -> ``p``; ``("/a", "*")`` -> ``"/a"``."""
    if not prefix or prefix == "/":
        return path if path != "*" or not prefix else "/"
    if path == "*" or path == "":
        return prefix
    if path[0] == "?":
        return prefix + path
    if prefix[-1] == "/":
        return prefix + path[1:] if path[0] == "/" else prefix + path
    return prefix + path if path[0] == "/" else prefix + "/" + path


def _parse_host_port(header: str, authority: str) -> tuple[str, int | None]:
    if "@" in authority:
        raise SbiHeaderError(header, "userinfo is not allowed in the authority")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise SbiHeaderError(header, "unterminated IPv6 literal (missing ']')")
        literal, rest = authority[1:end], authority[end + 1:]
        if literal[:1] in ("v", "V"):
            raise SbiHeaderError(header, "IPvFuture literals are not supported")
        if "%" in literal:
            raise SbiHeaderError(header, "IPv6 zone identifiers are not allowed")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise SbiHeaderError(header, f"invalid IPv6 address {literal!r}") from None
        host = literal.lower()
    else:
        host, sep, port_text = authority.partition(":")
        rest = sep + port_text
        if not host:
            raise SbiHeaderError(header, "empty host")
        if ":" in port_text:
            raise SbiHeaderError(header, "IPv6 address must be in brackets")
        if _DIGITS_DOTS_RE.fullmatch(host):
            if not _IPV4_RE.fullmatch(host):
                raise SbiHeaderError(header, f"invalid IPv4 address {host!r}")
        elif not _REGNAME_RE.fullmatch(host):
            raise SbiHeaderError(header, f"invalid character in host {host!r}")
        host = host.lower()
    if not rest:
        return host, None
    if rest[0] != ":":
        raise SbiHeaderError(header, f"unexpected {rest[0]!r} after host")
    port_text = rest[1:]
    if port_text == "":
        return host, None  # RFC 3986: an empty port means the default
    if not port_text.isdigit() or not port_text.isascii():
        raise SbiHeaderError(header, f"port must be digits, got {port_text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise SbiHeaderError(header, f"port must be 1..65535, got {port}")
    return host, port


def parse_target_apiroot(value: bytes | str, header: str = "3gpp-Sbi-Target-apiRoot") -> ApiRoot:
    """``sbi-scheme "://" sbi-authority [ path-absolute ]``; nothing else (no query, fragment,
    userinfo, or other scheme)."""
    text = _text(header, value)
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise SbiHeaderError(header, "missing '://' after the scheme")
    scheme_l = scheme.lower()
    if scheme_l not in _DEFAULT_PORT:
        raise SbiHeaderError(header, f"scheme must be http or https, got {scheme!r}")
    for ch in "?#":
        if ch in rest:
            what = "query" if ch == "?" else "fragment"
            raise SbiHeaderError(header, f"a {what} is not allowed in an apiRoot")
    slash = rest.find("/", rest.find("]") + 1 if rest.startswith("[") else 0)
    authority, prefix = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if not authority:
        raise SbiHeaderError(header, "empty authority")
    if any(c in _OWS for c in authority):
        raise SbiHeaderError(header, "whitespace inside the authority")
    host, port = _parse_host_port(header, authority)
    if prefix and not _PATH_ABSOLUTE_RE.fullmatch(prefix):
        raise SbiHeaderError(header, f"apiPrefix is not a valid absolute path: {prefix!r}")
    return ApiRoot(scheme_l, host, port, prefix)


def format_target_apiroot(root: ApiRoot) -> bytes:
    return f"{root.scheme}://{root.authority}{root.prefix}".encode()


# ---------------------------------------------------------------------------------------------
# numbers: priority, max response time, max forward hops

def parse_message_priority(value: bytes | str) -> int:
    """0..31, 0 the highest priority."""
    header = "3gpp-Sbi-Message-Priority"
    text = _text(header, value)
    if not text.isdigit() or not text.isascii() or len(text) > 2:
        raise SbiHeaderError(header, f"must be an integer 0..31, got {text!r}")
    n = int(text)
    if n > 31:
        raise SbiHeaderError(header, f"must be an integer 0..31, got {text!r}")
    if len(text) == 2 and text[0] == "0":
        raise SbiHeaderError(header, f"must be an integer 0..31 without leading zero, got {text!r}")
    return n


def format_message_priority(priority: int) -> bytes:
    if not 0 <= priority <= 31:
        raise ValueError(f"message priority must be 0..31, got {priority}")
    return str(priority).encode()


def parse_max_rsp_time(value: bytes | str) -> int:
    """Milliseconds, 1 to 5 digits."""
    header = "3gpp-Sbi-Max-Rsp-Time"
    text = _text(header, value)
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise SbiHeaderError(header, f"must be 1 to 5 digits (milliseconds), got {text!r}")
    return int(text)


def format_max_rsp_time(ms: int) -> bytes:
    if not 0 <= ms <= 99999:
        raise ValueError(f"max response time must be 0..99999 ms, got {ms}")
    return str(ms).encode()


def parse_max_forward_hops(value: bytes | str) -> int:
    """``N ";" OWS "nodetype=scp"`` with N 0..99.  A bare ``N`` (earlier releases) is accepted."""
    header = "3gpp-Sbi-Max-Forward-Hops"
    text = _text(header, value)
    num, sep, rest = text.partition(";")
    num = num.strip(_OWS)
    if not num.isdigit() or not num.isascii() or len(num) > 2 or (len(num) == 2 and num[0] == "0"):
        raise SbiHeaderError(header, f"hop count must be 0..99, got {num!r}")
    if sep:
        rest = rest.lstrip(_OWS)
        if rest.lower() != "nodetype=scp":
            raise SbiHeaderError(header, f"expected 'nodetype=scp' after ';', got {rest!r}")
    return int(num)


def format_max_forward_hops(hops: int) -> bytes:
    if not 0 <= hops <= 99:
        raise ValueError(f"max forward hops must be 0..99, got {hops}")
    return f"{hops}; nodetype=scp".encode()


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Sender-Timestamp: "Tue, 04 Feb 2020 08:49:37.845 GMT"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SENDER_TS_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?\.([0-9]{3}) GMT")


def parse_sender_timestamp(value: bytes | str) -> dt.datetime:
    """An aware UTC datetime with millisecond precision; the day name must match the date."""
    header = "3gpp-Sbi-Sender-Timestamp"
    text = _text(header, value)
    m = _SENDER_TS_RE.fullmatch(text)
    if not m:
        raise SbiHeaderError(
            header, f"expected 'Day, DD Mon YYYY HH:MM:SS.mmm GMT', got {text!r}")
    day_name, day, mon, year, hh, mm, ss, ms = m.groups()
    try:
        when = dt.datetime(int(year), _MONTHS.index(mon) + 1, int(day), int(hh), int(mm),
                           int(ss or 0), int(ms) * 1000, tzinfo=dt.UTC)
    except ValueError as exc:
        raise SbiHeaderError(header, f"invalid date or time: {exc}") from None
    if _DAYS[when.weekday()] != day_name:
        raise SbiHeaderError(header, f"day name {day_name} does not match the date")
    return when


def format_sender_timestamp(when: dt.datetime) -> bytes:
    when = when.astimezone(dt.UTC)
    return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}.{when.microsecond // 1000:03d}"
            " GMT").encode()


def _parse_date_time(header: str, text: str) -> dt.datetime:
    """RFC 5322 date-time (inside the OCI/LCI Timestamp)."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise SbiHeaderError(header, f"invalid RFC 5322 date-time {text!r}") from None
    if when is None:
        raise SbiHeaderError(header, f"invalid RFC 5322 date-time {text!r}")
    if when.tzinfo is None:  # "-0000": UTC with unknown origin
        when = when.replace(tzinfo=dt.UTC)
    return when


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Oci and 3gpp-Sbi-Lci

_SCOPE_KEYS = {
    "NF-Instance", "NF-Set", "NF-Service-Instance", "NF-Service-Set", "NF-Inst",
    "NFC-Instance", "NFC-Set", "NFC-Service-Instance", "NFC-Service-Set", "Service-Name",
    "Callback-Uri", "SCP-FQDN", "SEPP-FQDN", "S-NSSAI", "DNN", "Relative-Capacity",
}
_SCOPE_FIRST = {
    "oci": ("NF-Instance", "NF-Set", "NF-Service-Instance", "NF-Service-Set", "NFC-Instance",
            "NFC-Set", "NFC-Service-Instance", "NFC-Service-Set", "Callback-Uri", "SCP-FQDN",
            "SEPP-FQDN"),
    "lci": ("NF-Instance", "NF-Set", "NF-Service-Instance", "NF-Service-Set", "SCP-FQDN",
            "SEPP-FQDN"),
}


@dataclass(frozen=True, slots=True)
class ControlScope:
    """The scope part of an OCI/LCI element: ``kind`` (``NF-Instance``, ``NF-Set``, ``SCP-FQDN``,
    ...) and its ``value``; optional parts in ``extra`` as (name, value) pairs, list values
    (S-NSSAI, DNN, Callback-Uri) joined by ``" & "`` as on the wire."""

    kind: str
    value: str
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OverloadControl:
    """One ``3gpp-Sbi-Oci`` element."""

    timestamp: dt.datetime
    validity_s: int
    reduction_pct: int
    scope: ControlScope


@dataclass(frozen=True, slots=True)
class LoadControl:
    """One ``3gpp-Sbi-Lci`` element."""

    timestamp: dt.datetime
    load_pct: int
    scope: ControlScope


def _named(header: str, part: str, name: str) -> str:
    prefix = name + ":"
    if not part.startswith(prefix):
        raise SbiHeaderError(header, f"expected '{prefix}', got {part[:40]!r}")
    rest = part[len(prefix):]
    if not rest or rest[0] not in _OWS:
        raise SbiHeaderError(header, f"expected whitespace after '{prefix}'")
    return rest.strip(_OWS)


def _percent(header: str, what: str, text: str) -> int:
    if not text.endswith("%") or not text[:-1].isdigit() or not text[:-1].isascii():
        raise SbiHeaderError(header, f"{what} must be 0..100 followed by '%', got {text!r}")
    n = int(text[:-1])
    if n > 100 or (len(text) > 2 and text[0] == "0"):
        raise SbiHeaderError(header, f"{what} must be 0..100, got {text!r}")
    return n


def _timestamp(header: str, part: str) -> dt.datetime:
    quoted = _named(header, part, "Timestamp")
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise SbiHeaderError(header, "Timestamp must be a quoted date-time")
    return _parse_date_time(header, quoted[1:-1])


def _scope(header: str, kind: str, parts: list[str]) -> ControlScope:
    if not parts:
        raise SbiHeaderError(header, "missing scope")
    pairs = []
    for part in parts:
        name, sep, value = part.partition(":")
        if not sep or name not in _SCOPE_KEYS:
            raise SbiHeaderError(header, f"unknown scope element {part[:40]!r}")
        if not value or value[0] not in _OWS or not value.strip(_OWS):
            raise SbiHeaderError(header, f"expected whitespace and a value after '{name}:'")
        pairs.append((name, value.strip(_OWS)))
    first, value = pairs[0]
    if first not in _SCOPE_FIRST[kind]:
        raise SbiHeaderError(header, f"scope cannot start with {first!r}")
    if first in ("NF-Instance", "NFC-Instance"):
        _uuid(header, first, value)
    for name, val in pairs[1:]:
        if name == "NF-Inst":
            _uuid(header, name, val)
        elif name == "Relative-Capacity":
            _percent(header, name, val)
    return ControlScope(first, value, tuple(pairs[1:]))


def _format_scope(scope: ControlScope) -> str:
    return "; ".join(f"{k}: {v}" for k, v in ((scope.kind, scope.value), *scope.extra))


def parse_oci(value: bytes | str) -> list[OverloadControl]:
    header = "3gpp-Sbi-Oci"
    out = []
    for element in _elements(header, _text(header, value)):
        parts = _elements(header, element, ";")
        if len(parts) < 4:
            raise SbiHeaderError(
                header, "element needs Timestamp; Period-of-Validity; "
                        "Overload-Reduction-Metric; scope")
        ts = _timestamp(header, parts[0])
        validity = _named(header, parts[1], "Period-of-Validity")
        if not validity.endswith("s") or not validity[:-1].isdigit() or not validity.isascii():
            raise SbiHeaderError(header, f"Period-of-Validity must be digits then 's', got {validity!r}")
        metric = _percent(header, "Overload-Reduction-Metric",
                          _named(header, parts[2], "Overload-Reduction-Metric"))
        out.append(OverloadControl(ts, int(validity[:-1]), metric, _scope(header, "oci", parts[3:])))
    return out


def format_oci(elements: Iterable[OverloadControl]) -> bytes:
    return ", ".join(
        f'Timestamp: "{format_datetime(e.timestamp.astimezone(dt.UTC), usegmt=True)}"; '
        f"Period-of-Validity: {e.validity_s}s; Overload-Reduction-Metric: {e.reduction_pct}%; "
        f"{_format_scope(e.scope)}" for e in elements).encode()


def parse_lci(value: bytes | str) -> list[LoadControl]:
    header = "3gpp-Sbi-Lci"
    out = []
    for element in _elements(header, _text(header, value)):
        parts = _elements(header, element, ";")
        if len(parts) < 3:
            raise SbiHeaderError(header, "element needs Timestamp; Load-Metric; scope")
        ts = _timestamp(header, parts[0])
        metric = _percent(header, "Load-Metric", _named(header, parts[1], "Load-Metric"))
        out.append(LoadControl(ts, metric, _scope(header, "lci", parts[2:])))
    return out


def format_lci(elements: Iterable[LoadControl]) -> bytes:
    return ", ".join(
        f'Timestamp: "{format_datetime(e.timestamp.astimezone(dt.UTC), usegmt=True)}"; '
        f"Load-Metric: {e.load_pct}%; {_format_scope(e.scope)}" for e in elements).encode()


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Routing-Binding and 3gpp-Sbi-Binding

BINDING_LEVELS = ("nf-instance", "nf-set", "nfservice-instance", "nfservice-set")
_BINDING_PARAMS = frozenset(
    ("nfinst", "nfset", "nfservinst", "nfserviceset", "servname", "backupamfinst", "backupnf"))
_BH_PARAMS = _BINDING_PARAMS | {"scope"}
_GROUP_PARAMS = frozenset(
    ("oldgroupid", "groupid", "uribase", "oldnfinst", "oldservset", "oldservinst", "guami"))


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding indication (TS 29.500 §6.12 / ABNF ``binding-element``).

    ``params`` keeps the (name, value) pairs in order (``nfinst``, ``nfset``, ``servname``,
    ``scope``, ``group``, ``recoverytime``, ``nr``...); ``callback_uri_prefix`` is unquoted."""

    level: str
    params: tuple[tuple[str, str], ...] = ()
    callback_uri_prefix: str | None = None

    def get(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None


def _parse_binding(header: str, element: str, routing: bool) -> Binding:
    parts = _elements(header, element, ";")
    head = parts[0]
    if not head.startswith("bl="):
        raise SbiHeaderError(header, f"must start with 'bl=', got {head[:40]!r}")
    level = head[3:]
    if level not in BINDING_LEVELS:
        raise SbiHeaderError(header, f"bl must be one of {', '.join(BINDING_LEVELS)}, got {level!r}")
    params: list[tuple[str, str]] = []
    cb_prefix = None
    for part in parts[1:]:
        name, sep, val = part.partition("=")
        if not sep or not val:
            raise SbiHeaderError(header, f"expected name=value, got {part[:40]!r}")
        if cb_prefix is not None:
            raise SbiHeaderError(header, "callback-uri-prefix must be the last parameter")
        if name == "callback-uri-prefix":
            if len(val) < 2 or val[0] != '"' or val[-1] != '"' or \
                    not _PATH_ABSOLUTE_RE.fullmatch(val[1:-1]):
                raise SbiHeaderError(header, "callback-uri-prefix must be a quoted absolute path")
            cb_prefix = val[1:-1]
            continue
        allowed = _BINDING_PARAMS if routing else _BH_PARAMS | _GROUP_PARAMS | {
            "recoverytime", "nr", "group", "no-redundancy"}
        if name not in allowed:
            raise SbiHeaderError(header, f"unknown parameter {name!r}")
        if name == "recoverytime":
            val = val.strip(_OWS)
            if len(val) < 2 or val[0] != '"' or val[-1] != '"':
                raise SbiHeaderError(header, "recoverytime must be a quoted date-time")
            _parse_date_time(header, val[1:-1])
        elif name == "nr":
            if ":" not in val or any(c in val for c in ' "<>\\^`{|}'):
                raise SbiHeaderError(header, f"nr must be a URI, got {val[:60]!r}")
        elif name == "group":
            if val not in ("true", "false"):
                raise SbiHeaderError(header, "group must be true or false")
        elif name == "no-redundancy":
            if val != "true":
                raise SbiHeaderError(header, "no-redundancy must be true")
        else:
            _token(header, name, val)
            if name in ("nfinst", "backupamfinst", "oldnfinst"):
                _uuid(header, name, val)
        params.append((name, val))
    if not any(k in _BH_PARAMS for k, _ in params):
        raise SbiHeaderError(header, "at least one binding parameter (nfinst, nfset, ...) needed")
    return Binding(level, tuple(params), cb_prefix)


def parse_routing_binding(value: bytes | str) -> Binding:
    """``3gpp-Sbi-Routing-Binding``: exactly one binding (routing parameters only)."""
    header = "3gpp-Sbi-Routing-Binding"
    return _parse_binding(header, _text(header, value), routing=True)


_NEXT_BINDING_RE = re.compile(r",[ \t]*(?=bl=)")


def parse_binding(value: bytes | str) -> list[Binding]:
    """``3gpp-Sbi-Binding``: one or more binding elements separated by commas (a comma only
    separates elements when ``bl=`` follows, since ``nr`` URIs may contain commas)."""
    header = "3gpp-Sbi-Binding"
    text = _text(header, value)
    pieces, start, quoted = [], 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            m = _NEXT_BINDING_RE.match(text, i)
            if m:
                pieces.append(text[start:i].strip(_OWS))
                start = i = m.end()
                continue
        i += 1
    pieces.append(text[start:].strip(_OWS))
    if len(pieces) > MAX_ELEMENTS:
        raise SbiHeaderError(header, f"more than {MAX_ELEMENTS} elements")
    return [_parse_binding(header, p, routing=False) for p in pieces]


def format_binding(binding: Binding) -> bytes:
    parts = [f"bl={binding.level}", *(f"{k}={v}" for k, v in binding.params)]
    if binding.callback_uri_prefix is not None:
        parts.append(f'callback-uri-prefix="{binding.callback_uri_prefix}"')
    return "; ".join(parts).encode()


def format_bindings(bindings: Iterable[Binding]) -> bytes:
    return b", ".join(format_binding(b) for b in bindings)


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Producer-Id, 3gpp-Sbi-Target-Nf-Id

@dataclass(frozen=True, slots=True)
class ProducerId:
    nfinst: str
    nfservinst: str | None = None
    nfset: str | None = None
    nfserviceset: str | None = None


_PRODUCER_ORDER = ("nfservinst", "nfset", "nfserviceset")


def parse_producer_id(value: bytes | str) -> ProducerId:
    header = "3gpp-Sbi-Producer-Id"
    parts = _elements(header, _text(header, value), ";")
    name, sep, inst = parts[0].partition("=")
    if name != "nfinst" or not sep:
        raise SbiHeaderError(header, "must start with 'nfinst='")
    _uuid(header, "nfinst", inst)
    found: dict[str, str] = {}
    last = -1
    for part in parts[1:]:
        name, sep, val = part.partition("=")
        if not sep or name not in _PRODUCER_ORDER:
            raise SbiHeaderError(header, f"unknown parameter {part[:40]!r}")
        idx = _PRODUCER_ORDER.index(name)
        if idx <= last:
            raise SbiHeaderError(header, f"{name} out of order or repeated")
        last = idx
        found[name] = _token(header, name, val)
    return ProducerId(inst, **found)


def format_producer_id(pid: ProducerId) -> bytes:
    parts = [f"nfinst={pid.nfinst}"]
    for name in _PRODUCER_ORDER:
        val = getattr(pid, name)
        if val is not None:
            parts.append(f"{name}={val}")
    return "; ".join(parts).encode()


def parse_target_nf_id(value: bytes | str) -> tuple[str, str | None]:
    """``nfinst=<uuid>[; nfservinst=<token>]`` -> (nfinst, nfservinst)."""
    header = "3gpp-Sbi-Target-Nf-Id"
    parts = _elements(header, _text(header, value), ";")
    name, sep, inst = parts[0].partition("=")
    if name != "nfinst" or not sep:
        raise SbiHeaderError(header, "must start with 'nfinst='")
    _uuid(header, "nfinst", inst)
    if len(parts) == 1:
        return inst, None
    name, sep, serv = parts[1].partition("=")
    if len(parts) > 2 or name != "nfservinst" or not sep:
        raise SbiHeaderError(header, "only 'nfservinst=' may follow nfinst")
    return inst, _token(header, "nfservinst", serv)


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Callback, 3gpp-Sbi-Correlation-Info

_CBTYPE_RE = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True, slots=True)
class Callback:
    """The callback (notification) type and the API major version, when given."""

    type: str
    api_version: int | None = None


def parse_callback(value: bytes | str) -> Callback:
    header = "3gpp-Sbi-Callback"
    text = _text(header, value)
    cbtype, sep, rest = text.partition(";")
    cbtype = cbtype.strip(_OWS)
    if not _CBTYPE_RE.fullmatch(cbtype):
        raise SbiHeaderError(header, f"callback type must be letters, digits, '-', '_': {cbtype!r}")
    if not sep:
        return Callback(cbtype)
    rest = rest.lstrip(_OWS)
    if not rest.startswith("apiversion="):
        raise SbiHeaderError(header, f"expected 'apiversion=' after ';', got {rest[:30]!r}")
    ver = rest[len("apiversion="):]
    if not ver.isdigit() or not ver.isascii() or len(ver) > 4:
        raise SbiHeaderError(header, f"apiversion must be a major version number, got {ver!r}")
    return Callback(cbtype, int(ver))


def format_callback(cb: Callback) -> bytes:
    return (cb.type if cb.api_version is None else f"{cb.type}; apiversion={cb.api_version}").encode()


_CTYPE_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z]+")
_CVALUE_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z@]+")


def parse_correlation_info(value: bytes | str) -> list[tuple[str, str]]:
    """``imsi-345012123123123; gpsi...`` -> [("imsi", "345012123123123"), ...]."""
    header = "3gpp-Sbi-Correlation-Info"
    out = []
    for part in _elements(header, _text(header, value), ";"):
        ctype, sep, cvalue = part.partition("-")
        if not sep or not _CTYPE_RE.fullmatch(ctype) or not _CVALUE_RE.fullmatch(cvalue):
            raise SbiHeaderError(header, f"expected ctype-cvalue, got {part[:40]!r}")
        out.append((ctype, cvalue))
    return out


def format_correlation_info(items: Iterable[tuple[str, str]]) -> bytes:
    return "; ".join(f"{t}-{v}" for t, v in items).encode()


# ---------------------------------------------------------------------------------------------
# Via (RFC 9110 §7.6.3): #( received-protocol RWS received-by [ RWS comment ] )

@dataclass(frozen=True, slots=True)
class ViaEntry:
    protocol: str  # "2.0" or "HTTP/2.0"
    received_by: str  # pseudonym or host[:port], e.g. "SCP-scp1.operator.com"
    comment: str | None = None  # without the parentheses


_RECEIVED_BY_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?::[0-9]+)?")


def parse_via(value: bytes | str) -> list[ViaEntry]:
    header = "Via"
    out = []
    for element in _elements(header, _text(header, value)):
        proto, sep, rest = element.partition(" ")
        if not sep:
            proto, sep, rest = element.partition("\t")
        if not sep:
            raise SbiHeaderError(header, f"expected 'protocol received-by', got {element[:40]!r}")
        name, slash, version = proto.rpartition("/")
        if slash:
            _token(header, "protocol-name", name)
        _token(header, "protocol-version", version)
        rest = rest.strip(_OWS)
        by, _, comment = rest.partition(" ")
        comment = comment.strip(_OWS)
        if not _RECEIVED_BY_RE.fullmatch(by):
            raise SbiHeaderError(header, f"invalid received-by {by[:40]!r}")
        if comment:
            if comment[0] != "(" or comment[-1] != ")":
                raise SbiHeaderError(header, "comment must be in parentheses")
            comment = comment[1:-1]
        out.append(ViaEntry(proto, by, comment or None))
    return out


def format_via(entries: Iterable[ViaEntry]) -> bytes:
    return ", ".join(
        f"{e.protocol} {e.received_by}" + (f" ({e.comment})" if e.comment else "")
        for e in entries).encode()


def scp_via_pseudonym(name: str) -> str:
    """The received-by an SCP puts in Via (TS 29.500 §6.10.x): ``SCP-<FQDN or name>``."""
    return name if name.startswith("SCP-") else f"SCP-{name}"


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Discovery-*: the TS 29.510 discovery query parameters carried as headers

# parameters whose value is JSON text (TS 29.510 content: application/json parameters)
JSON_DISCOVERY_PARAMS = frozenset("""
target-plmn-list requester-plmn-list snssais requester-snssais plmn-specific-snssai-list
requester-plmn-specific-snssai-list ipv4-index ipv6-index tai guami pgw-ip pfd-data
chf-supported-plmn complex-query atsss-capability client-type lmf-id an-node-type rat-type
preferred-tai target-snpn requester-snpn-list af-ee-data w-agf-info tngf-info twif-info
preferred-api-versions remote-plmn-id remote-snpn-id preferred-vendor-specific-features
preferred-vendor-specific-nf-features ml-analytics-info-list mbs-session-id-list upf-n6-ip
tai-list v2x-capability prose-capability exclude-nfservinst-list preferred-analytics-delays
""".split())
# array parameters with style=form, explode=false: comma-separated
LIST_DISCOVERY_PARAMS = frozenset("""
preferred-collocated-nf-types service-names nsi-list group-id-list dnai-list pdu-session-types
event-id-list nwdaf-event-list required-features preferred-nf-instances serving-scope
scp-domain-list preferences-precedence exclude-nfinst-list exclude-nfserviceset-list
exclude-nfset-list
""".split())


@dataclass(frozen=True, slots=True)
class DiscoveryParam:
    name: str  # the query parameter name, e.g. "target-nf-type"
    value: object  # str, list[str] or the decoded JSON
    raw: str = field(default="", compare=False)  # the URL-decoded text


def discovery_header_name(param: str) -> bytes:
    return DISCOVERY_PREFIX_H + param.lower().encode()


def parse_discovery_header(name: bytes | str, value: bytes | str) -> DiscoveryParam:
    """One ``3gpp-sbi-discovery-<param>`` header -> its query parameter and decoded value."""
    lname = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    lname = lname.lower()
    prefix = DISCOVERY_PREFIX_H.decode()
    if not lname.startswith(prefix) or len(lname) == len(prefix):
        raise SbiHeaderError(lname, "not a 3gpp-Sbi-Discovery-<parameter> header")
    param = lname[len(prefix):]
    header = f"3gpp-Sbi-Discovery-{param}"
    if not _TOKEN_RE.fullmatch(param):
        raise SbiHeaderError(header, "invalid parameter name")
    text = _text(header, value)
    if param in LIST_DISCOVERY_PARAMS:
        items = text.split(",")
        if len(items) > MAX_ELEMENTS * 8 or any(not v for v in items):
            raise SbiHeaderError(header, "empty or too many comma-separated items")
        return DiscoveryParam(param, [unquote(v, errors="strict") for v in items], text)
    raw = unquote(text, errors="strict")
    if param in JSON_DISCOVERY_PARAMS:
        try:
            decoded: object = json.loads(raw)
        except ValueError as exc:
            raise SbiHeaderError(header, f"invalid JSON: {exc.args[0]}") from None
    else:
        decoded = raw
    return DiscoveryParam(param, decoded, raw)


def parse_discovery_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, object]:
    """All ``3gpp-sbi-discovery-*`` headers of a request as {query parameter: value}."""
    out: dict[str, object] = {}
    for name, value in headers:
        if name.startswith(DISCOVERY_PREFIX_H):
            p = parse_discovery_header(name, value)
            if p.name in out:
                raise SbiHeaderError(f"3gpp-Sbi-Discovery-{p.name}", "header repeated")
            out[p.name] = p.value
    return out


def format_discovery_value(param: str, value: object) -> bytes:
    """Encode a discovery parameter value for its header (percent-encoding as a query value)."""
    if param in JSON_DISCOVERY_PARAMS:
        text = json.dumps(value, separators=(",", ":"))
    elif param in LIST_DISCOVERY_PARAMS and not isinstance(value, str):
        text = ",".join(quote(str(v), safe="-._~") for v in value)  # type: ignore[union-attr]
        return text.encode()
    else:
        text = str(value)
    return quote(text, safe="-._~:@!$'()*").encode()


# ---------------------------------------------------------------------------------------------
# 3gpp-Sbi-Originating-Network-Id

_ORIG_NETWORK_RE = re.compile(
    r"([0-9]{3})-([0-9]{2,3})(?:-([0-9A-Fa-f]{11}))?"
    r"(?:;[ \t]*src:[ \t]+(SCP|SEPP)-([A-Za-z0-9.\-]{4,}))?")


@dataclass(frozen=True, slots=True)
class OriginatingNetworkId:
    mcc: str
    mnc: str
    nid: str | None = None
    src_type: str | None = None  # "SCP" / "SEPP"
    src_fqdn: str | None = None


def parse_originating_network_id(value: bytes | str) -> OriginatingNetworkId:
    """``<mcc>-<mnc>[-<nid: 11 hex>][; src: SCP|SEPP-<fqdn>]`` (TS 29.500 ABNF)."""
    header = "3gpp-Sbi-Originating-Network-Id"
    m = _ORIG_NETWORK_RE.fullmatch(_text(header, value))
    if m is None:
        raise SbiHeaderError(header, "must be <mcc 3 digits>-<mnc 2-3 digits>[-<nid 11 hex>]"
                                     "[; src: SCP-<fqdn>|SEPP-<fqdn>]")
    return OriginatingNetworkId(*m.groups())


# ---------------------------------------------------------------------------------------------
# request headers the routers check before forwarding

# the optional 3gpp-Sbi headers nfmesh interprets or forwards whose value it checks against
# the ABNF before routing a request (the overload ones are checked where they are read)
CHECKED_REQUEST_HEADERS: dict[bytes, Callable[[bytes], object]] = {
    b"3gpp-sbi-routing-binding": parse_routing_binding,
    b"3gpp-sbi-target-nf-id": parse_target_nf_id,
    b"3gpp-sbi-originating-network-id": parse_originating_network_id,
}
CHECKED_REQUEST_HEADER_LENGTHS = frozenset(len(n) for n in CHECKED_REQUEST_HEADERS)


def first_invalid_header(headers: Iterable[tuple[bytes, bytes]]) -> SbiHeaderError | None:
    """The error of the first ``CHECKED_REQUEST_HEADERS`` field that breaks its ABNF (a
    repeated one counts as invalid: each is a single-valued header), else None."""
    seen: set[bytes] = set()
    for name, value in headers:
        parse = CHECKED_REQUEST_HEADERS.get(name)
        if parse is None:
            continue
        if name in seen:
            return SbiHeaderError(_HEADER_CASE.get(name, name.decode()), "header repeated")
        seen.add(name)
        try:
            parse(value)
        except SbiHeaderError as exc:
            return exc
    return None


_HEADER_CASE = {
    b"3gpp-sbi-routing-binding": "3gpp-Sbi-Routing-Binding",
    b"3gpp-sbi-target-nf-id": "3gpp-Sbi-Target-Nf-Id",
    b"3gpp-sbi-originating-network-id": "3gpp-Sbi-Originating-Network-Id",
}
