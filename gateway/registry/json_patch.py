"""RFC 6902 JSON Patch over RFC 6901 JSON Pointers, as TS 29.510 PATCH bodies use it.

``apply_patch`` works on a deep copy and returns it, so a failing operation leaves the stored
profile untouched (nothing half-applied).  Every malformed operation raises ``PatchError``
naming the operation index.
"""

from __future__ import annotations

import copy

MAX_OPS = 256
_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


class PatchError(ValueError):
    """The patch document is malformed or an operation cannot apply; ``param`` points at it."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


def parse_pointer(ptr: object, where: str) -> list[str]:
    """Split a JSON pointer into unescaped reference tokens."""
    if not isinstance(ptr, str):
        raise PatchError(where, "path must be a string")
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise PatchError(where, "JSON pointer must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


def _index(container: list, token: str, where: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(where, f"bad array index {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise PatchError(where, f"array index {i} out of range")
    return i


def _parent(doc: object, tokens: list[str], where: str) -> object:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(where, f"path member {t!r} does not exist")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, where, allow_end=False)]
        else:
            raise PatchError(where, "path goes through a scalar")
    return cur


def _get(doc: object, tokens: list[str], where: str) -> object:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(where, f"member {last!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, where, allow_end=False)]
    raise PatchError(where, "path goes through a scalar")


def _remove(doc: object, tokens: list[str], where: str) -> object:
    if not tokens:
        raise PatchError(where, "cannot remove the whole document")
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(where, f"member {last!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, where, allow_end=False))
    raise PatchError(where, "path goes through a scalar")


def _add(doc: object, tokens: list[str], value: object, where: str, *, replace: bool) -> object:
    if not tokens:
        return value
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(where, f"member {last!r} does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, where, allow_end=False)] = value
        else:
            parent.insert(_index(parent, last, where, allow_end=True), value)
    else:
        raise PatchError(where, "path goes through a scalar")
    return doc


def apply_patch(doc: dict, ops: object) -> dict:
    """Apply the operations to a copy of ``doc`` and return the copy."""
    if not isinstance(ops, list) or not ops:
        raise PatchError("/", "JSON Patch body must be a non-empty array of operations")
    if len(ops) > MAX_OPS:
        raise PatchError("/", f"more than {MAX_OPS} operations")
    out: object = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        where = f"/{i}"
        if not isinstance(op, dict):
            raise PatchError(where, "operation must be an object")
        kind = op.get("op")
        if kind not in _OPS:
            raise PatchError(f"{where}/op", f"unknown operation {kind!r}")
        tokens = parse_pointer(op.get("path"), f"{where}/path")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{where}/value", f"{kind} needs a value")
        if kind == "add":
            out = _add(out, tokens, copy.deepcopy(op["value"]), where, replace=False)
        elif kind == "replace":
            if tokens:
                _get(out, tokens, where)
            out = _add(out, tokens, copy.deepcopy(op["value"]), where, replace=True)
        elif kind == "remove":
            _remove(out, tokens, where)
        elif kind == "test":
            if _get(out, tokens, where) != op["value"]:
                raise PatchError(where, "test failed")
        else:  # move / copy
            src = parse_pointer(op.get("from"), f"{where}/from")
            if kind == "move":
                if tokens[: len(src)] == src and len(tokens) > len(src):
                    raise PatchError(where, "cannot move a value into itself")
                value = _remove(out, src, where)
            else:
                value = copy.deepcopy(_get(out, src, where))
            out = _add(out, tokens, value, where, replace=False)
    if not isinstance(out, dict):
        raise PatchError("/", "the patched document is not an object")
    return out
