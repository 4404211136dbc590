"""The compare report: Markdown tables, PNG plots, results.json, skipped targets shown."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from perf.compare import add_ratios
from perf.report import markdown, phase_names, write_report


def _phase(cpu: float, p50: float, p99: float, rps: float = 1000.0) -> dict:
    return {
        "rps": rps, "requests": 3000, "failed": 0, "cpu_us_per_req": cpu, "rss_mb": 12.0,
        "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p99, "p999_ms": p99 * 1.2, "max_ms": p99 * 2,
        "cdf": [[0, p50 / 2], [50, p50], [99, p99], [100, p99 * 2]],
    }


def _target(cpu: float, p50: float, p99: float) -> dict:
    phases = {"closed": _phase(cpu, p50, p99, 50000.0), "rate_1000": _phase(cpu * 3, p50 / 3, p99 / 2),
              "single": _phase(cpu * 5, p50 / 10, p99 / 10),
              "loadgen_1000": _phase(cpu * 3, p50 / 2, p99), "rate_200": _phase(cpu, p50, p99)}
    return {"rps": 50000.0, "p50_ms": p50, "p99_ms": p99, "cpu_us_per_req": cpu, "rss_mb": 12.0,
            "requests": 3000, "failed": 0, "phases": phases}


@pytest.fixture
def result() -> dict:
    targets = {
        "nfmesh": {"skipped": "failed: repeat 1: exited with status 2: bad flag"},
        "haproxy": _target(10.0, 0.8, 1.7),
        "nghttpx": _target(9.0, 0.7, 1.5),
        "envoy": {"skipped": "envoy not found"},
    }
    targets["haproxy"]["memory"] = {"bytes_per_idle_connection": 1126,
                                    "bytes_per_open_stream": 7270}
    add_ratios(targets, "haproxy")
    return {"targets": targets, "settings": {"repeats": 1, "target_cpu": "1", "load_cpu": "0",
                                             "memory_connections": 50, "memory_streams": 200},
            "machine": {"cpu": "test cpu", "cpus": 2, "kernel": "x"}, "started": "now"}


def test_phase_order(result: dict) -> None:
    assert phase_names(result) == ["closed", "rate_200", "rate_1000", "single", "loadgen_1000"]


def test_markdown_tables_and_skips(result: dict) -> None:
    result["goals"] = [{"goal": "p50 at one stream ≤ 1.5x HAProxy", "ratio": 0.8, "limit": 1.5,
                        "met": True},
                       {"goal": "CPU", "ratio": None, "limit": 1.2, "met": None}]
    md = markdown(result, {"cdf": "latency_cdf.png"})
    assert "| p50 at one stream ≤ 1.5x HAProxy | 0.80 | 1.5 | yes |" in md
    assert "| CPU | - | 1.2 | not measured |" in md
    assert "| nfmesh | skipped: failed: repeat 1: exited with status 2: bad flag |" in md
    assert "| envoy | skipped: envoy not found |" in md
    assert "| nghttpx | 50000 | 0.700 | 1.500 | 9.0 | 12.0 | 0.90 | 0.88 |" in md
    assert "## fixed rate 1,000 req/s" in md and "## one connection, one stream" in md
    assert "## nfmesh loadgen, open loop 1,000 req/s" in md
    assert "![cdf](latency_cdf.png)" in md
    assert "| haproxy | 1.1 | 7.1 |" in md


def test_write_report_files(result: dict, tmp_path: Path) -> None:
    report = write_report(result, tmp_path / "out")
    folder = report.parent
    assert report.name == "report.md"
    assert json.loads((folder / "results.json").read_text())["targets"]["envoy"] == {
        "skipped": "envoy not found"}
    if importlib.util.find_spec("matplotlib") is None:  # the perf extra is not installed
        assert "No plots: matplotlib is not installed" in report.read_text()
        return
    for png in ("latency_cdf.png", "cpu_per_request.png"):
        data = (folder / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"({png})" in report.read_text()


def test_report_without_measurements(tmp_path: Path) -> None:
    res = {"targets": {"haproxy": {"skipped": "haproxy not found"}}}
    md = write_report(res, tmp_path).read_text()
    assert "No plots: no target was measured" in md
    assert not (tmp_path / "latency_cdf.png").exists()


def test_report_without_matplotlib(result: dict, tmp_path: Path, monkeypatch) -> None:
    """Without the perf extra the Markdown and JSON are still written, and say why no plots."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    md = write_report(result, tmp_path).read_text()
    assert "No plots: matplotlib is not installed" in md and "| haproxy |" in md
    assert not (tmp_path / "latency_cdf.png").exists()
    assert (tmp_path / "results.json").exists()
