"""The structural pass of config validation: YAML to plain data, then plain data to Structs.

``load_yaml`` reads YAML with duplicate-key detection, the line number of every path and bounded
alias expansion; ``Decoder`` walks a msgspec type (from ``msgspec.inspect``) over plain data and
records EVERY problem with its dotted path (types, ranges, enums, unknown and missing keys)
instead of stopping at the first, returning ``BAD`` where a value could not be built.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec.inspect as mi
import yaml

from gateway.config_sections import ConfigIssue

MAX_NODES = 200_000  # YAML nodes after alias expansion


# ---------------------------------------------------------------------------------------------
# YAML with duplicate-key detection, line numbers and bounded alias expansion

class _Yaml:
    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self.issues: list[ConfigIssue] = []
        self.nodes = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, path: str) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = self.constructor.construct_object(knode, deep=True)
                if not isinstance(key, str):
                    self.issues.append(ConfigIssue(path, f"keys must be strings, got {key!r}",
                                                   knode.start_mark.line + 1))
                    continue
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.issues.append(ConfigIssue(sub, "duplicate key", knode.start_mark.line + 1))
                    continue
                out[key] = self.convert(vnode, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


class _TooBig(Exception):
    pass


def load_yaml(text: str) -> tuple[Any, dict[str, int], list[ConfigIssue]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, {}, [ConfigIssue("", f"invalid YAML: {problem}",
                                      mark.line + 1 if mark else None)]
    if node is None:
        return {}, {}, []
    conv = _Yaml()
    try:
        data = conv.convert(node, "")
    except _TooBig:
        return None, {}, [ConfigIssue("", f"document too large (over {MAX_NODES} nodes "
                                          "after alias expansion)")]
    except yaml.YAMLError as exc:
        return None, {}, [ConfigIssue("", f"invalid YAML value: {exc}")]
    return data, conv.lines, conv.issues


# ---------------------------------------------------------------------------------------------
# structural decode: every error, with its path

_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping",
          type(None): "null"}


def type_name(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _describe(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.StrType):
        return "str"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.ListType):
        return "list"
    if isinstance(t, mi.StructType):
        return "mapping"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(x) for x in t.types)
    return "value"


def _range_reason(t: Any, value: float) -> str | None:
    lo = t.ge if t.ge is not None else t.gt
    hi = t.le if t.le is not None else t.lt
    bad = ((t.ge is not None and value < t.ge) or (t.gt is not None and value <= t.gt)
           or (t.le is not None and value > t.le) or (t.lt is not None and value >= t.lt))
    if not bad:
        return None
    if t.ge is not None and t.le is not None:
        return f"must be {t.ge}..{t.le}"
    if lo is not None and hi is None:
        return f"must be {'>=' if t.ge is not None else '>'} {lo}"
    return f"must be {'<=' if t.le is not None else '<'} {hi}"


class Decoder:
    def __init__(self, lines: dict[str, int]) -> None:
        self.lines = lines
        self.issues: list[ConfigIssue] = []

    def issue(self, path: str, reason: str) -> None:
        line = self.lines.get(path)
        if line is None and "." in path:
            line = self.lines.get(path.rsplit(".", 1)[0])
        self.issues.append(ConfigIssue(path, reason, line))

    def decode(self, t: mi.Type, value: Any, path: str) -> Any:
        """The converted value, or ``BAD`` after recording the issue."""
        if isinstance(t, mi.UnionType):
            if value is None and any(isinstance(x, mi.NoneType) for x in t.types):
                return None
            others = [x for x in t.types if not isinstance(x, mi.NoneType)]
            if len(others) == 1:
                if value is None:
                    self.issue(path, f"expected {_describe(others[0])}, got null")
                    return BAD
                return self.decode(others[0], value, path)
            self.issue(path, f"expected {_describe(t)}, got {type_name(value)}")
            return BAD
        if isinstance(t, mi.StructType):
            return self.struct(t, value, path)
        if isinstance(t, mi.ListType):
            if not isinstance(value, list):
                self.issue(path, f"expected list, got {type_name(value)}")
                return BAD
            if t.min_length is not None and len(value) < t.min_length:
                self.issue(path, f"must have at least {t.min_length} item(s)")
                return BAD
            out = [self.decode(t.item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return BAD if any(v is BAD for v in out) else out
        if isinstance(t, mi.DictType):
            if not isinstance(value, dict):
                self.issue(path, f"expected mapping, got {type_name(value)}")
                return BAD
            out_d = {}
            for k, v in value.items():
                key = self.decode(t.key_type, k, f"{path}.{k}")
                out_d[key] = self.decode(t.value_type, v, f"{path}.{k}")
            bad = any(x is BAD for x in (*out_d, *out_d.values()))
            return BAD if bad else out_d
        if isinstance(t, mi.LiteralType):
            if value not in t.values or type(value) is bool:
                self.issue(path, f"expected one of {', '.join(map(str, t.values))}, got {value!r}")
                return BAD
            return value
        if isinstance(t, mi.BoolType):
            if type(value) is not bool:
                self.issue(path, f"expected bool, got {type_name(value)}")
                return BAD
            return value
        if isinstance(t, mi.IntType):
            if type(value) is not int:
                self.issue(path, f"expected int, got {type_name(value)}")
                return BAD
            reason = _range_reason(t, value)
            if reason:
                self.issue(path, reason)
                return BAD
            return value
        if isinstance(t, mi.FloatType):
            if type(value) not in (int, float):
                self.issue(path, f"expected number, got {type_name(value)}")
                return BAD
            if not math.isfinite(value):
                self.issue(path, "must be a finite number")
                return BAD
            reason = _range_reason(t, value)
            if reason:
                self.issue(path, reason)
                return BAD
            return float(value)
        if isinstance(t, mi.StrType):
            if type(value) is not str:
                self.issue(path, f"expected str, got {type_name(value)}")
                return BAD
            if t.min_length is not None and len(value) < t.min_length:
                self.issue(path, "must not be empty")
                return BAD
            if t.pattern is not None and not re.search(t.pattern, value):
                self.issue(path, f"must match {t.pattern}")
                return BAD
            return value
        if isinstance(t, mi.NoneType):
            if value is not None:
                self.issue(path, f"expected null, got {type_name(value)}")
                return BAD
            return None
        raise TypeError(f"config model uses an unsupported type {t!r}")  # a bug in this file

    def struct(self, t: mi.StructType, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            self.issue(path, f"expected mapping, got {type_name(value)}")
            return BAD
        known = {f.encode_name: f for f in t.fields}
        bad = False
        for key in value:
            if key not in known:
                sub = f"{path}.{key}" if path else str(key)
                self.issue(sub, "unknown field")
                bad = True
        kwargs = {}
        for f in t.fields:
            sub = f"{path}.{f.encode_name}" if path else f.encode_name
            if f.encode_name not in value:
                if f.required:
                    self.issue(sub, "missing required field")
                    bad = True
                continue
            v = self.decode(f.type, value[f.encode_name], sub)
            if v is BAD:
                bad = True
            else:
                kwargs[f.name] = v
        if bad:
            return BAD
        return t.cls(**kwargs)


BAD = object()
