"""RFC 6902 JSON Patch: RFC examples, RFC 6901 pointers to the letter (array indices, ``-``,
escapes), ``test`` equality with JSON types, the PATCH body decoder, and on random input only
PatchError, never a mutated original.  The published suite runs in test_json_patch_suite.py."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.registry.json_patch import (
    MAX_DEPTH,
    PatchError,
    apply,
    apply_patch,
    decode_patch,
    json_equal,
    parse_pointer,
)


@pytest.mark.parametrize("doc, ops, want", [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"foo": "bar", "baz": "qux"}),
    ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}], {"foo": ["bar", "qux", "baz"]}),
    ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": 1}], {"foo": ["bar", 1]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"baz": "qux"}, [{"op": "replace", "path": "/baz", "value": "boo"}], {"baz": "boo"}),
    ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": 1}, "c": {"b": 1}}),
    ({"a/b": 1, "m~n": 2}, [{"op": "replace", "path": "/a~1b", "value": 3},
                            {"op": "remove", "path": "/m~0n"}], {"a/b": 3}),
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "qux"}], {"baz": "qux"}),
])
def test_rfc6902_examples(doc: dict, ops: list, want: dict) -> None:
    before = copy.deepcopy(doc)
    assert apply_patch(doc, ops) == want
    assert doc == before


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/baz", "value": "bar"}],
    [{"op": "add", "path": "/missing/x", "value": 1}],
    [{"op": "add", "path": "/list/9", "value": 1}],
    [{"op": "add", "path": "/list/01", "value": 1}],
    [{"op": "move", "from": "/obj", "path": "/obj/inner"}],
    [{"op": "remove", "path": ""}],
    [{"op": "replace", "path": "", "value": [1]}],
])
def test_failures_are_patch_errors(ops: list) -> None:
    doc = {"baz": "qux", "list": [1], "obj": {"a": 1}}
    with pytest.raises(PatchError):
        apply_patch(doc, ops)


@pytest.mark.parametrize("token", [
    "01", "00", "1e0", "-1", "+1", " 1", "1 ", "0x1", "1.0", "",
    "\u00b2",  # ² : str.isdigit() says yes, int() says no: once a 500 with a traceback
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() reads it as 3, RFC 6901 does not
    "\uff11",  # FULLWIDTH DIGIT ONE
])
def test_array_index_is_ascii_digits_without_leading_zero(token: str) -> None:
    doc = {"a": [10, 11, 12, 13, 14]}
    for op in ({"op": "add", "path": f"/a/{token}", "value": 1},
               {"op": "replace", "path": f"/a/{token}", "value": 1},
               {"op": "remove", "path": f"/a/{token}"},
               {"op": "test", "path": f"/a/{token}", "value": 13},
               {"op": "copy", "from": f"/a/{token}", "path": "/b"},
               {"op": "add", "path": f"/a/{token}/x", "value": 1}):
        with pytest.raises(PatchError):
            apply_patch(doc, [op])


def test_array_index_zero_and_the_last_element() -> None:
    doc = {"a": [10, 11]}
    assert apply_patch(doc, [{"op": "replace", "path": "/a/0", "value": 9}]) == {"a": [9, 11]}
    assert apply_patch(doc, [{"op": "add", "path": "/a/2", "value": 12}]) == {"a": [10, 11, 12]}
    assert apply_patch(doc, [{"op": "test", "path": "/a/1", "value": 11}]) == doc
    with pytest.raises(PatchError):
        apply_patch(doc, [{"op": "replace", "path": "/a/2", "value": 12}])


def test_dash_only_as_an_add_target() -> None:
    doc = {"a": [1, 2], "o": {"-": "member"}}
    assert apply_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}])["a"] == [1, 2, 3]
    assert apply_patch(doc, [{"op": "copy", "from": "/a/0", "path": "/a/-"}])["a"] == [1, 2, 1]
    assert apply_patch(doc, [{"op": "move", "from": "/a/0", "path": "/a/-"}])["a"] == [2, 1]
    # in an object "-" is an ordinary member name
    assert apply_patch(doc, [{"op": "test", "path": "/o/-", "value": "member"}]) == doc
    for op in ({"op": "remove", "path": "/a/-"},
               {"op": "replace", "path": "/a/-", "value": 0},
               {"op": "test", "path": "/a/-", "value": 2},
               {"op": "copy", "from": "/a/-", "path": "/b"},
               {"op": "move", "from": "/a/-", "path": "/b"},
               {"op": "add", "path": "/a/-/x", "value": 0}):
        with pytest.raises(PatchError):
            apply_patch(doc, [op])


@pytest.mark.parametrize("ptr, tokens", [
    ("", []), ("/", [""]), ("/a~1b", ["a/b"]), ("/m~0n", ["m~n"]),
    ("/~01", ["~1"]), ("/~10", ["/0"]), ("/~0~1", ["~/"]), ("/a/b/", ["a", "b", ""]),
])
def test_pointer_escapes(ptr: str, tokens: list[str]) -> None:
    assert parse_pointer(ptr, "/0/path") == tokens


@pytest.mark.parametrize("ptr", ["/~2", "/~", "/a~", "/~a", "/a/~/b", "/~~0", "a", 7, None])
def test_pointer_errors(ptr: object) -> None:
    with pytest.raises(PatchError) as ei:
        parse_pointer(ptr, "/0/path")
    assert ei.value.param == "/0/path"
    with pytest.raises(PatchError):
        apply_patch({"~2": 1, "~": 2, "a~": 3}, [{"op": "remove", "path": ptr}])


@pytest.mark.parametrize("a, b, equal", [
    (True, 1, False), (1, True, False), (False, 0, False), (None, False, False), (None, 0, False),
    ("1", 1, False), (1, 1.0, True), (0, -0.0, True), (1.5, 1.5, True), (2, 3, False),
    ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True), ({"a": 1}, {"a": 1, "b": None}, False),
    ([1, 2], [2, 1], False), ([True], [1], False), ({"a": True}, {"a": 1}, False),
    ([], {}, False), ("", None, False), (None, None, True), ([[1.0]], [[1]], True),
])
def test_test_op_compares_json_values(a: object, b: object, equal: bool) -> None:
    assert json_equal(a, b) is equal
    doc = {"v": a}
    if equal:
        assert apply_patch(doc, [{"op": "test", "path": "/v", "value": b}]) == doc
    else:
        with pytest.raises(PatchError):
            apply_patch(doc, [{"op": "test", "path": "/v", "value": b}])


def test_whole_document_operations() -> None:
    assert apply(3, [{"op": "replace", "path": "", "value": "x"}]) == "x"
    assert apply({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1.0}}]) == {"a": 1}
    assert apply({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}]) == {"a": 1}
    assert apply([1], []) == [1]  # an empty patch changes nothing
    with pytest.raises(PatchError):
        apply_patch({"a": 1}, [])  # but a TS 29.510 PATCH carries at least one operation
    with pytest.raises(PatchError):
        apply_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}])


@pytest.mark.parametrize("op, param", [
    ({"op": ["add"], "path": "/a", "value": 1}, "/0/op"),  # unhashable op: once a TypeError
    ({"op": {"x": 1}, "path": "/a"}, "/0/op"),
    ({"op": "add", "value": 1}, "/0/path"),
    ({"op": "add", "path": "/b"}, "/0/value"),
    ({"op": "move", "path": "/b"}, "/0/from"),
    ({"op": "copy", "path": "/b", "from": ["a"]}, "/0/from"),
])
def test_malformed_operations_name_the_member(op: dict, param: str) -> None:
    with pytest.raises(PatchError) as ei:
        apply_patch({"a": 1}, [op])
    assert ei.value.param == param


def test_decode_patch_refuses_what_json_lets_through() -> None:
    assert decode_patch(b'[{"op":"remove","path":"/a"}]') == [{"op": "remove", "path": "/a"}]
    bad = [
        b'[{"op":"add","path":"/baz","value":"qux","op":"remove"}]',  # RFC 6902 A.13
        b'[{"op":"add","path":"/a","value":{"k":1,"k":2}}]',
        b'[{"op":"add","path":"/a","value":NaN}]',
        b'[{"op":"add","path":"/a","value":1e400}]',
        b'[{"op":"add","path":"/a","value":"\\ud800"}]',  # a lone surrogate
        b'[{"op":"add","path":"/a","value":"\xff"}]',  # not UTF-8
        b'[{"op":"add","path":"/a","value":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}]",
        b"[" * 100_000 + b"]" * 100_000,
        b"",
        b"[1,",
    ]
    for body in bad:
        with pytest.raises(PatchError):
            decode_patch(body)
    deep_ok = b'[{"op":"add","path":"/a","value":' + b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2) + b"}]"
    assert isinstance(decode_patch(deep_ok), list)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)
pointers = st.lists(st.sampled_from(["a", "b", "0", "1", "-", "~0", "~1", "01", "", "~2", "~", "\u00b2",
                                      "\u0663"]), max_size=3).map(
    lambda toks: "".join("/" + t for t in toks))
ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"])
     | json_values, "path": pointers | json_values},
    optional={"value": json_values, "from": pointers | json_values},
)


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["a", "b", "0"]), json_values, max_size=3),
       patch=st.lists(ops, min_size=1, max_size=4))
def test_random_patches_never_mutate_or_escape(doc: dict, patch: list) -> None:
    before = copy.deepcopy(doc)
    try:
        out = apply_patch(doc, patch)
    except PatchError:
        pass
    else:
        assert isinstance(out, dict)
    assert doc == before


def _text(v: object) -> str:
    """JSON text of a value where an object is a list of (name, value) pairs (names may repeat)."""
    if isinstance(v, tuple):
        return "{" + ",".join(json.dumps(k) + ":" + _text(x) for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_text(x) for x in v) + "]"
    return json.dumps(v)


_names = st.sampled_from(["a", "b", "a:b", ":", "op", "{", "["])
_raw = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["", ":", "x:y", "[{", "op"]),
    lambda c: st.lists(c, max_size=3) | st.lists(st.tuples(_names, c), max_size=3).map(tuple),
    max_leaves=12,
)


def _has_duplicates(v: object) -> bool:
    if isinstance(v, tuple):
        names = [k for k, _ in v]
        return len(set(names)) != len(names) or any(_has_duplicates(x) for _, x in v)
    if isinstance(v, list):
        return any(_has_duplicates(x) for x in v)
    return False


@settings(max_examples=300, deadline=None)
@given(raw=_raw)
def test_decode_patch_finds_every_repeated_name(raw: object) -> None:
    """decode_patch skips the slow duplicate check when the ':' count matches the members it
    decoded; whatever the names and strings hold, it refuses exactly the repeated names."""
    body = _text(raw).encode()
    if _has_duplicates(raw):
        with pytest.raises(PatchError):
            decode_patch(body)
    else:
        assert decode_patch(body) == json.loads(body)
