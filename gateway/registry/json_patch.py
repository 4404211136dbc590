"""RFC 6902 JSON Patch over RFC 6901 JSON Pointers, as TS 29.510 PATCH bodies use it.

``apply`` works on a deep copy of any JSON document and returns the result, so a failing
operation leaves the stored document untouched (nothing half-applied); ``apply_patch`` is the
same for documents that must stay a JSON object (an NFProfile, a SubscriptionData).
``decode_patch`` reads a PATCH body and refuses what a plain JSON decoder would let through: an
object with a member name twice (RFC 6902 A.13: ``{"op": "add", ..., "op": "remove"}`` is no
valid operation) and nesting deeper than ``MAX_DEPTH``.

Read to the letter:

* a reference token that indexes an array is ``0`` or ASCII digits without a leading zero
  (RFC 6901 §4: ``array-index = %x30 / ( %x31-39 *(%x30-39) )``): ``01``, ``1e0``, ``-1``,
  ``+1`` and non-ASCII digits such as ``²`` or ``٣`` are errors;
* ``-`` (the element after the last) is allowed only as the last token of an ``add`` target
  (also the target of ``move``/``copy``, which add);
* ``~0`` and ``~1`` are the only escapes (RFC 6901 §3): ``~2`` or a lone ``~`` is an error;
* ``test`` compares JSON values (RFC 6902 §4.6): types must agree (``true`` is not ``1``,
  ``"1"`` is not ``1``), numbers compare by value (``1`` equals ``1.0``), objects ignore member
  order, arrays do not.

Every malformed or inapplicable operation raises ``PatchError`` naming the operation (a JSON
pointer into the patch document, e.g. ``/2/path``).
"""

from __future__ import annotations

import copy
import json
import re

import msgspec

MAX_OPS = 256
MAX_DEPTH = 64  # nesting of a PATCH body (an NFProfile is a few levels deep)
_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")  # [0-9] is ASCII only (unlike \d or str.isdigit)
_BAD_ESCAPE = re.compile(r"~(?![01])")


class PatchError(ValueError):
    """The patch document is malformed or an operation cannot apply; ``param`` points at it."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


# ---------------------------------------------------------------- decoding


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise PatchError("/", f"an object has the member {k!r} twice")
            seen.add(k)
    return out


def _depth(obj: object) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        cur, d = stack.pop()
        if isinstance(cur, dict):
            children = cur.values()
        elif isinstance(cur, list):
            children = cur
        else:
            continue
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _members(v: object) -> int:
    """How many object members a decoded JSON value holds, nested ones included."""
    n = 0
    stack = [v] if type(v) is dict or type(v) is list else []
    while stack:
        cur = stack.pop()
        if type(cur) is dict:
            n += len(cur)
            cur = cur.values()
        for x in cur:
            if type(x) is dict or type(x) is list:
                stack.append(x)
    return n


def decode_patch(body: bytes) -> object:
    """Decode an ``application/json-patch+json`` body (UTF-8 JSON, as strict as msgspec: no
    NaN, no lone surrogates, no number out of range), refusing duplicate member names and
    nesting deeper than ``MAX_DEPTH``.  The result is not checked to be a patch: ``apply``
    does that, naming the bad operation."""
    try:
        doc = msgspec.json.decode(body)
    except RecursionError:
        raise PatchError("/", f"nested deeper than {MAX_DEPTH} levels") from None
    except (msgspec.DecodeError, ValueError) as exc:
        raise PatchError("/", f"body is not valid JSON: {exc}") from None
    # cheap bounds first: no deeper than its brackets, and every ':' outside a string starts
    # one member, so as many ':' as decoded members means no name was given twice
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(doc) > MAX_DEPTH:
        raise PatchError("/", f"nested deeper than {MAX_DEPTH} levels")
    if body.count(b":") != _members(doc):  # a ':' in a string, or a repeated name
        # msgspec keeps the last of duplicate names silently; the stdlib decoder tells us
        json.loads(body, object_pairs_hook=_no_duplicates)
    return doc


# ---------------------------------------------------------------- pointers and values


def parse_pointer(ptr: object, where: str) -> list[str]:
    """Split a JSON pointer (RFC 6901) into unescaped reference tokens."""
    if not isinstance(ptr, str):
        raise PatchError(where, "a JSON pointer must be a string")
    if ptr == "":
        return []
    if ptr[0] != "/":
        raise PatchError(where, "a JSON pointer must be empty or start with '/'")
    if _BAD_ESCAPE.search(ptr):
        raise PatchError(where, "'~' must be followed by '0' or '1' (RFC 6901 escapes)")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


def json_equal(a: object, b: object) -> bool:
    """RFC 6902 §4.6 equality of two decoded JSON values."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    return False


def _index(container: list, token: str, where: str, *, allow_end: bool) -> int:
    if token == "-":
        if allow_end:
            return len(container)
        raise PatchError(where, "'-' (past the last element) is only a target of add")
    if not _ARRAY_INDEX.fullmatch(token):
        raise PatchError(where, f"bad array index {token!r} (ASCII digits, no leading zero)")
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


# ---------------------------------------------------------------- applying


def apply(doc: object, ops: object) -> object:
    """Apply the operations to a deep copy of ``doc`` (any JSON value) and return the result."""
    if not isinstance(ops, list):
        raise PatchError("/", "a JSON Patch document must be an array of operations")
    if len(ops) > MAX_OPS:
        raise PatchError("/", f"more than {MAX_OPS} operations")
    try:
        out = copy.deepcopy(doc)
        for i, op in enumerate(ops):
            out = _apply_one(out, op, f"/{i}")
    except RecursionError:
        raise PatchError("/", "document nested too deeply") from None
    return out


def _apply_one(out: object, op: object, where: str) -> object:
    if not isinstance(op, dict):
        raise PatchError(where, "an operation must be an object")
    kind = op.get("op")
    if not isinstance(kind, str) or kind not in _OPS:
        raise PatchError(f"{where}/op", f"unknown operation {kind!r}")
    if "path" not in op:
        raise PatchError(f"{where}/path", f"{kind} needs a path")
    tokens = parse_pointer(op["path"], f"{where}/path")
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchError(f"{where}/value", f"{kind} needs a value")
    if kind == "add":
        return _add(out, tokens, copy.deepcopy(op["value"]), where, replace=False)
    if kind == "replace":
        if tokens:
            _get(out, tokens, where)
        return _add(out, tokens, copy.deepcopy(op["value"]), where, replace=True)
    if kind == "remove":
        _remove(out, tokens, where)
        return out
    if kind == "test":
        if not json_equal(_get(out, tokens, where), op["value"]):
            raise PatchError(where, "test failed: the value differs")
        return out
    # move / copy
    if "from" not in op:
        raise PatchError(f"{where}/from", f"{kind} needs a from")
    src = parse_pointer(op["from"], f"{where}/from")
    if kind == "move":
        if src == tokens:
            _get(out, src, where)  # must exist; moving a value onto itself changes nothing
            return out
        if tokens[: len(src)] == src:
            raise PatchError(where, "cannot move a value into one of its children")
        value = _remove(out, src, where)
    else:
        value = copy.deepcopy(_get(out, src, where))
    return _add(out, tokens, value, where, replace=False)


def apply_patch(doc: dict, ops: object) -> dict:
    """``apply`` for a document that is and stays a JSON object, with at least one operation."""
    if not isinstance(ops, list) or not ops:
        raise PatchError("/", "JSON Patch body must be a non-empty array of operations")
    out = apply(doc, ops)
    if not isinstance(out, dict):
        raise PatchError("/", "the patched document is not an object")
    return out
