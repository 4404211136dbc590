"""RFC 6902 JSON Patch: RFC examples, and on random input only PatchError, never a mutated
original."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.registry.json_patch import PatchError, apply_patch


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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)
pointers = st.lists(st.sampled_from(["a", "b", "0", "1", "-", "~0", "~1", "01", ""]), max_size=3).map(
    lambda toks: "".join("/" + t for t in toks))
ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]), "path": pointers},
    optional={"value": json_values, "from": pointers},
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
