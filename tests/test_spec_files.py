"""The vendored 3GPP OpenAPI files (specs/3gpp): all there, unmodified (the sha256 table of
SOURCE.md), with their copyright header, and closed under the ``$ref``s the tests can follow."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest

from tests.spec_files import (
    COMMON,
    DISC,
    NFM,
    NOT_VENDORED,
    SPEC_DIR,
    TOKEN,
    VENDORED,
    load_spec,
    spec_path,
)

_ROW = re.compile(r"^\| `(?P<file>[^`]+\.yaml)` \|.*\| (?P<size>\d+) \| `(?P<sha>[0-9a-f]{64})` \|$", re.M)


def _table() -> dict[str, tuple[int, str]]:
    text = (SPEC_DIR / "SOURCE.md").read_text(encoding="utf-8")
    return {m["file"]: (int(m["size"]), m["sha"]) for m in _ROW.finditer(text)}


def test_the_folder_holds_exactly_the_vendored_files() -> None:
    on_disk = {p.name for p in SPEC_DIR.iterdir()}
    assert on_disk == {*VENDORED, "SOURCE.md"}
    assert set(_table()) == set(VENDORED)


@pytest.mark.parametrize("name", VENDORED)
def test_each_file_is_the_unmodified_copy_with_its_copyright(name: str) -> None:
    data = spec_path(name).read_bytes()
    size, sha = _table()[name]
    assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha)
    assert "3GPP Organizational Partners (ARIB, ATIS, CCSA, ETSI, TSDSI, TTA, TTC)" in data.decode("utf-8")


def test_a_missing_file_is_an_error_not_a_skip() -> None:
    with pytest.raises(FileNotFoundError, match="part of the repository"):
        spec_path("TS29999_Nowhere.yaml")


def _pointer(doc: dict, ptr: str) -> object:
    node: object = doc
    for part in ptr.strip("/").split("/"):
        if part:
            assert isinstance(node, dict) and part in node, f"no {ptr}"
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_refs_reachable_from_the_validated_files_resolve_or_are_declared_absent() -> None:
    """Walk every ``$ref`` reachable from any schema of the four files the tests validate
    against: each lands in a vendored file at a component that exists, or in a file SOURCE.md
    declares not vendored; and each of those declared files is really referred to."""
    todo = [(name, f"/components/schemas/{c}") for name in (NFM, DISC, TOKEN, COMMON)
            for c in load_spec(name)["components"]["schemas"]]
    seen: set[tuple[str, str]] = set()
    absent: set[str] = set()
    while todo:
        file, ptr = todo.pop()
        if (file, ptr) in seen:
            continue
        seen.add((file, ptr))
        if file not in VENDORED:
            assert file in NOT_VENDORED, f"{file} is referred to but neither vendored nor declared absent"
            absent.add(file)
            continue
        for ref in _refs(_pointer(load_spec(file), ptr)):
            target, _, pointer = ref.partition("#")
            todo.append((target or file, pointer))
    assert absent == NOT_VENDORED
    assert {f for f, _ in seen} == set(VENDORED) | NOT_VENDORED
