"""The published RFC 6902 test suite (json-patch-tests, npm json-patch-test-suite 1.1.0, vendored
in data/json-patch-tests with its SOURCE.md) run case by case against our JSON Patch.

Each case's patch is written back to JSON text exactly as the suite has it (duplicate member
names included) and goes through ``decode_patch`` then ``apply``, the path a PATCH body takes.
A case with ``expected`` must give that document (compared as JSON, so ``true`` is not ``1``); a
case with ``error`` must raise ``PatchError`` and nothing else; a case with neither must apply.
The cases marked ``disabled`` (behaviour the suite leaves open) are run too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gateway.registry.json_patch import PatchError, apply, decode_patch

DATA = Path(__file__).parent / "data" / "json-patch-tests"


class _Pairs(list):
    """An object whose member names repeat, kept as its (name, value) pairs."""


def _pairs_hook(pairs: list) -> object:
    obj = dict(pairs)
    return _Pairs(pairs) if len(obj) != len(pairs) else obj


def _dump(v: object) -> str:
    if isinstance(v, _Pairs):
        return "{" + ",".join(json.dumps(k) + ":" + _dump(x) for k, x in v) + "}"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + _dump(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_dump(x) for x in v) + "]"
    return json.dumps(v)


def _canonical(v: object) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _cases() -> list:
    out = []
    for name in ("spec_tests.json", "tests.json"):
        text = (DATA / name).read_text(encoding="utf-8")
        for i, case in enumerate(json.loads(text, object_pairs_hook=_pairs_hook)):
            if "patch" not in case:  # a comment-only record
                continue
            label = f"{name}[{i}] {case.get('comment', '')}".strip()
            out.append(pytest.param(case, id=label))
    return out


CASES = _cases()


def test_the_whole_suite_is_here() -> None:
    assert len(CASES) == 95  # spec_tests.json: 17 records, tests.json: 78


@pytest.mark.parametrize("case", CASES)
def test_suite_case(case: dict) -> None:
    doc = case["doc"]
    before = copy.deepcopy(doc)
    body = _dump(case["patch"]).encode()
    if "error" in case:
        with pytest.raises(PatchError):
            apply(doc, decode_patch(body))
    else:
        out = apply(doc, decode_patch(body))
        if "expected" in case:
            assert _canonical(out) == _canonical(case["expected"])
    assert _canonical(doc) == _canonical(before)  # the input is never changed
