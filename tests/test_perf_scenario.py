"""Scenario files: the built-in ones parse and render; mistakes name their field."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from perf.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = sorted((Path(__file__).parent.parent / "perf" / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_builtin_scenarios_render(path: Path) -> None:
    sc = load_scenario(path)
    pool = sc.prepare(scheme=b"http", authority=b"127.0.0.1:1",
                      variables={"target_apiroot": "http://127.0.0.1:2"})
    assert pool
    for req in pool[:50]:
        h = dict(req.headers)
        assert [n for n, _ in req.headers[:4]] == [b":method", b":scheme", b":authority", b":path"]
        assert h[b"3gpp-sbi-target-apiroot"] == b"http://127.0.0.1:2"
        assert h[b"user-agent"].startswith(b"AMF-")
        assert b"{" not in h[b":path"]  # every placeholder rendered
        if req.body is not None:
            json.loads(req.body)
            assert h[b"content-type"] == b"application/json"


def test_sbi_mix_weights_and_subscribers() -> None:
    sc = load_scenario(Path(__file__).parent.parent / "perf" / "scenarios" / "sbi-mix.yaml")
    pool = sc.prepare(scheme=b"http", authority=b"a:1")
    counts = collections.Counter(r.operation for r in pool)
    weights = {op.name: op.weight for op in sc.operations}
    rounds = len(pool) // sum(weights.values())
    assert counts == {name: w * rounds for name, w in weights.items()}
    am = [r for r in pool if r.operation == "nudm-sdm-am-data"]
    paths = {dict(r.headers)[b":path"] for r in am}
    assert len(paths) > 100  # many subscribers, not one
    assert b"/nudm-sdm/v2/imsi-001010000000001/am-data" in {p.split(b"?")[0] for p in paths}
    # no apiRoot given: the header is left out rather than sent empty
    assert all(b"3gpp-sbi-target-apiroot" not in dict(r.headers) for r in pool)


def test_operation_header_overrides_common_only_when_set() -> None:
    sc = load_scenario(Path(__file__).parent.parent / "perf" / "scenarios" / "sbi-mix.yaml")
    pool = sc.prepare(scheme=b"http", authority=b"a:1",
                      variables={"target_apiroot": "http://all:1", "udm_apiroot": "http://udm:2"})
    by_op = {r.operation: dict(r.headers)[b"3gpp-sbi-target-apiroot"] for r in pool}
    assert by_op["nudm-sdm-am-data"] == b"http://udm:2"
    assert by_op["nausf-ue-authentication"] == b"http://all:1"


def test_extra_headers_replace() -> None:
    sc = parse_scenario({"operations": [{"method": "GET", "path": "/x", "headers": {"a": "1"}}]})
    pool = sc.prepare(scheme=b"http", authority=b"h:1", extra_headers=[(b"a", b"2")])
    assert [v for n, v in pool[0].headers if n == b"a"] == [b"2"]


@pytest.mark.parametrize(("doc", "where"), [
    ([], "top level"),
    ({"operations": []}, "operations"),
    ({"operations": [{"method": "FETCH", "path": "/x"}]}, r"operations\[0\]\.method"),
    ({"operations": [{"method": "GET", "path": "x"}]}, r"operations\[0\]\.path"),
    ({"operations": [{"method": "GET", "path": "/x", "weight": 0}]}, r"operations\[0\]\.weight"),
    ({"operations": [{"method": "GET", "path": "/x", "colour": 1}]}, "colour"),
    ({"operations": [{"method": "GET", "path": "/x", "headers": {"bad name": "v"}}]},
     r"operations\[0\]\.headers"),
    ({"operations": [{"method": "GET", "path": "/x", "expect": [999]}]}, "expect"),
    ({"operations": [{"name": "a", "method": "GET", "path": "/x"},
                     {"name": "a", "method": "GET", "path": "/y"}]}, r"operations\[1\]\.name"),
    ({"oprations": []}, "oprations"),
])
def test_errors_name_the_field(doc: object, where: str) -> None:
    with pytest.raises(ScenarioError, match=where):
        parse_scenario(doc)


def test_unknown_placeholder_named_at_prepare() -> None:
    sc = parse_scenario({"operations": [{"name": "op", "method": "GET", "path": "/x/{nope}"}]})
    with pytest.raises(ScenarioError, match=r"operations\[0\] \(op\)\.path: unknown placeholder \{nope\}"):
        sc.prepare(scheme=b"http", authority=b"h:1")


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("operations: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(f)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.yaml")
