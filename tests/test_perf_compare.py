"""``nfmesh perf compare``: result shaping, argument checks, and one short real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from perf.compare import (
    Measurement,
    TargetResults,
    add_ratios,
    format_table,
    main,
    phase_summary,
    target_summary,
)


def _m(requests: int, cpu_us: float, lat: list[int], rps: float = 100.0) -> Measurement:
    return Measurement(requests=requests, failed=0, rps=rps, cpu_us=cpu_us,
                       rss_bytes=10 << 20, latencies_us=lat)


def test_phase_summary_pools_repeats() -> None:
    s = phase_summary([_m(100, 1000.0, [100] * 100, 90.0), _m(300, 5000.0, [300] * 300, 110.0),
                       _m(100, 1000.0, [200] * 100, 100.0)])
    assert s["requests"] == 500
    assert s["cpu_us_per_req"] == pytest.approx(7000 / 500)  # total CPU over total requests
    assert s["rps"] == 100.0  # median of the repeats
    assert s["p50_ms"] == pytest.approx(0.3) and s["p99_ms"] == pytest.approx(0.3)
    assert s["per_repeat_cpu_us_per_req"] == [10.0, 16.67, 10.0]
    assert s["per_repeat_p99_ms"] == [pytest.approx(0.1), pytest.approx(0.3), pytest.approx(0.2)]


def test_one_noisy_repeat_shows_in_the_per_repeat_p99() -> None:
    calm = list(range(100, 200))
    s = phase_summary([_m(100, 1000.0, calm), _m(100, 1000.0, [x * 10 for x in calm]),
                       _m(100, 1000.0, calm)])
    assert s["p99_ms"] == pytest.approx(1.96)  # the pooled tail is all the noisy repeat's
    assert s["per_repeat_p99_ms"] == [pytest.approx(0.198), pytest.approx(1.98),
                                      pytest.approx(0.198)]


def test_skipped_and_failed_targets_are_never_missing() -> None:
    assert target_summary(TargetResults(skipped="envoy not found")) == {"skipped": "envoy not found"}
    failed = target_summary(TargetResults(errors=["repeat 1: exited with status 3"]))
    assert failed == {"skipped": "failed: repeat 1: exited with status 3"}


def test_same_failure_in_every_repeat_is_told_once() -> None:
    res = TargetResults(errors=["repeat 1: boom", "repeat 2: boom", "repeat 3: other",
                                "config: bad"])
    assert target_summary(res) == {
        "skipped": "failed: repeats 1, 2: boom; repeat 3: other; config: bad"}


def test_ratios_to_haproxy() -> None:
    res = {"haproxy": TargetResults(phases={"closed": [_m(100, 1000.0, [1000] * 100)]}),
           "nfmesh": TargetResults(phases={"closed": [_m(100, 1200.0, [500] * 100)]}),
           "envoy": TargetResults(skipped="no")}
    targets = {n: target_summary(r) for n, r in res.items()}
    add_ratios(targets, "haproxy")
    assert targets["nfmesh"]["ratio_cpu_to_haproxy"] == 1.2
    assert targets["nfmesh"]["ratio_p99_to_haproxy"] == 0.5
    assert targets["nfmesh"]["phases"]["closed"]["ratio_cpu_us_per_req_to_haproxy"] == 1.2
    assert targets["haproxy"]["ratio_cpu_to_haproxy"] == 1.0
    assert targets["envoy"] == {"skipped": "no"}
    table = format_table({"targets": targets})
    assert "envoy    skipped: no" in table and "1.20" in table


@pytest.mark.parametrize("argv", [
    ["--rates", "5"], ["--rates", "x"], ["--repeats", "0"], ["--duration", "0.1"],
    ["--targets", ","],
])
def test_bad_arguments(argv: list[str], capsys) -> None:
    assert main(argv + ["--no-report"]) == 2
    assert "nfmesh perf compare:" in capsys.readouterr().err


@pytest.mark.interop
@pytest.mark.skipif(not all(shutil.which(b) for b in ("haproxy", "h2load", "nghttpd")),
                    reason="needs haproxy, h2load, nghttpd")
def test_short_real_run(tmp_path: Path, capsys) -> None:
    """HAProxy measured for real; an unknown target and a target that dies at start are
    reported as skipped with their reason; exactly one JSON object on stdout."""
    rc = main([
        "--quick", "--json", "--no-report",
        "--targets", "haproxy,nfmesh,nosuch", "--duration", "0.5", "--rates", "200",
        "--rate-duration", "0.5", "--loadgen",
        "--nfmesh-cmd", "{python} -c 'import sys; print(\"bad flag\"); sys.exit(3)'",
    ])
    out = capsys.readouterr().out
    result = json.loads(out)  # the whole stdout is one JSON object
    t = result["targets"]
    assert set(t) == {"haproxy", "nfmesh", "nosuch"}
    assert t["nosuch"] == {"skipped": "unknown target"}
    assert "exited with status 3" in t["nfmesh"]["skipped"] and "bad flag" in t["nfmesh"]["skipped"]
    h = t["haproxy"]
    assert h["requests"] > 0 and h["failed"] == 0
    assert h["cpu_us_per_req"] > 0 and h["rss_mb"] > 0 and h["p50_ms"] <= h["p99_ms"]
    assert h["ratio_cpu_to_haproxy"] == 1.0
    assert set(h["phases"]) == {"closed", "rate_200", "single", "loadgen_200"}
    lg = h["phases"]["loadgen_200"]  # the project's generator, merged HdrHistograms
    assert lg["requests"] == 100 and lg["failed"] == 0
    assert 0 < lg["p50_ms"] <= lg["p99_ms"] <= lg["max_ms"] and len(lg["cdf"]) > 10
    assert 0 < lg["service_p50_ms"] <= lg["service_p99_ms"]
    assert 80 <= h["phases"]["rate_200"]["requests"] <= 120  # 10 clients x 20 req/s x 0.5 s
    # 50 idle connections and 200 held streams cost HAProxy some memory, bounded
    assert 0 < h["memory"]["bytes_per_open_stream"] < 1 << 20
    assert h["memory"]["bytes_per_idle_connection"] < 1 << 20
    assert rc == 1  # a target failed


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_nfmesh_target_config_is_valid(tmp_path: Path, tls: bool) -> None:
    """The config the harness writes for nfmesh passes the gateway's own config checks and
    has routing, metrics and access logging on."""
    config = pytest.importorskip("gateway.config")
    from perf.peers import TargetSpec
    from perf.peers.nfmesh import Nfmesh
    from perf.peers.tls_certs import make_self_signed

    spec = TargetSpec(listen_port=18080, backend_port=18081, workdir=tmp_path,
                      tls=make_self_signed(tmp_path / "tls") if tls else None)
    argv = Nfmesh().command(spec)
    assert argv[argv.index("-c") + 1] == str(tmp_path / "nfmesh.yaml")
    cfg = config.load_config(str(tmp_path / "nfmesh.yaml"))
    assert cfg.listeners[0].port == 18080
    assert cfg.listeners[0].protocol == ("tls" if tls else "h2c")
    assert cfg.routes[0].cluster == "backend" and cfg.clusters[0].endpoints[0].port == 18081
    assert cfg.metrics.enabled and cfg.logging.access_log


def test_nfmesh_set_changes_the_generated_config(tmp_path: Path) -> None:
    from perf.peers import TargetSpec
    from perf.peers.nfmesh import Nfmesh

    peer = Nfmesh(set_fields=["logging.access_log=false", "http2.max_concurrent_streams=50"])
    peer.command(TargetSpec(listen_port=1, backend_port=2, workdir=tmp_path))
    cfg = json.loads((tmp_path / "nfmesh.yaml").read_text())
    assert cfg["logging"] == {"level": "info", "access_log": False}
    assert cfg["http2"] == {"max_concurrent_streams": 50}
    with pytest.raises(ValueError, match="dotted.path=value"):
        Nfmesh(set_fields=["no-equals-sign"])
    assert main(["--nfmesh-set", "logging.access_log", "--no-report"]) == 2


def test_nfmesh_variants(tmp_path: Path) -> None:
    from perf.compare import build_parser, nfmesh_variants
    from perf.peers import TargetSpec

    args = build_parser().parse_args([
        "--nfmesh-set", "gateway.name=x",
        "--nfmesh-variant", "nolog:logging.access_log=false,metrics.enabled=false"])
    (v,) = nfmesh_variants(args)
    assert v.name == "nolog"
    v.command(TargetSpec(listen_port=1, backend_port=2, workdir=tmp_path))
    cfg = json.loads((tmp_path / "nfmesh.yaml").read_text())
    assert cfg["gateway"]["name"] == "x"  # the base changes apply to variants too
    assert cfg["logging"]["access_log"] is False and cfg["metrics"]["enabled"] is False
    for bad in ("haproxy:logging.level=info", "novalue", "name:"):
        assert main(["--nfmesh-variant", bad, "--no-report"]) == 2


def test_goals_against_haproxy() -> None:
    from perf.compare import goals

    def t(cpu: float, p99_10k: float, p50_single: float) -> dict:
        return {"phases": {
            "closed": {"ratio_cpu_us_per_req_to_haproxy": cpu},
            "rate_10000": {"ratio_p99_ms_to_haproxy": p99_10k},
            "single": {"ratio_p50_ms_to_haproxy": p50_single},
        }}

    g = goals({"nfmesh": t(1.3, 0.9, 1.6)}, tls=False)
    assert [x["met"] for x in g] == [False, True, None, False]
    g = goals({"nfmesh": t(1.3, 0.9, 1.4)}, tls=True)  # TLS allows 1.5x CPU
    assert [x["met"] for x in g] == [True, True, None, True]
    assert all(x["met"] is None for x in goals({"nfmesh": {"skipped": "x"}}, tls=False))


def test_nfmesh_engine_read_from_its_log_and_divergence_reported() -> None:
    from perf.peers.nfmesh import Nfmesh

    log = ("2026-11-26 INFO nfmesh[1]: worker 0 serving: sbi=:8080 backend=nghttp2\n"
           "GET /x 200\n")
    assert Nfmesh().run_info(log) == {"engine": "nghttp2"}
    assert Nfmesh().run_info("nothing") == {"engine": "unknown"}
    res = TargetResults(phases={"closed": [_m(10, 100.0, [5] * 10)] * 2},
                        run_info=[{"engine": "nghttp2"}, {"engine": "h2"}])
    out = target_summary(res)
    assert out["run_info"] == [{"engine": "nghttp2"}, {"engine": "h2"}]
    assert any("ran differently between repeats" in e for e in out["errors"])
