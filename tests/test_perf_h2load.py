"""h2load output parsing (captured text and a real h2load run against nghttpd)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perf.h2load import H2loadError, build_argv, parse_log, parse_summary, run_h2load
from perf.peers.backend import RESPONSE_PATH, request_body, start_nghttpd
from perf.peers.launcher import free_port

SAMPLE = """starting benchmark...
spawning thread #0: 10 total client(s). 2000 total requests
Application protocol: h2c
progress: 100% done

finished in 14.62ms, 136826.98 req/s, 33.34MB/s
requests: 2000 total, 2000 started, 1990 done, 1985 succeeded, 15 failed, 10 errored, 0 timeout
status codes: 1985 2xx, 0 3xx, 3 4xx, 2 5xx
traffic: 498.99KB (510970) total, 20.24KB (20730) headers (space savings 93.31%), 443.36KB (454000) data
                     min         max         mean         sd        +/- sd
time for request:      115us       989us       382us       173us    79.60%
"""


def test_summary_fields() -> None:
    s = parse_summary(SAMPLE)
    assert s.duration_s == pytest.approx(0.01462)
    assert s.rps == pytest.approx(136826.98)
    assert (s.total, s.started, s.done, s.succeeded, s.failed, s.errored, s.timeout) == (
        2000, 2000, 1990, 1985, 15, 10, 0)
    assert (s.status_2xx, s.status_4xx, s.status_5xx) == (1985, 3, 2)


def test_summary_seconds_unit() -> None:
    s = parse_summary(SAMPLE.replace("finished in 14.62ms", "finished in 2.00s"))
    assert s.duration_s == pytest.approx(2.0)


def test_summary_missing_lines_named() -> None:
    with pytest.raises(H2loadError, match="requests"):
        parse_summary("finished in 1.00s, 10.00 req/s, 1KB/s\nstatus codes: 1 2xx, 0 3xx, 0 4xx, 0 5xx\n")


def test_log_keeps_only_2xx_latencies_and_counts_statuses() -> None:
    log = parse_log("1000\t200\t50\n1010\t201\t70\n1020\t503\t900\n1030\t-1\t5000\n\n")
    assert log.latencies_us == [50, 70]
    assert log.statuses == {200: 1, 201: 1, 503: 1, -1: 1}
    assert log.first_start_us == 1000
    assert log.last_end_us == 6030


@pytest.mark.parametrize("line", ["1000\t200", "x\t200\t5"])
def test_log_rejects_bad_lines(line: str) -> None:
    with pytest.raises(H2loadError, match="line 1"):
        parse_log(line + "\n")


def test_argv_needs_one_bound() -> None:
    with pytest.raises(ValueError):
        build_argv("http://127.0.0.1:1/", duration_s=1, requests=10)
    argv = build_argv("http://127.0.0.1:1/", duration_s=0.5, rps_per_client=7, headers=["a: b"])
    assert ["-D", "500ms"] == argv[argv.index("-D"): argv.index("-D") + 2]
    assert "--rps=7" in argv and ["-H", "a: b"] == argv[argv.index("-H"): argv.index("-H") + 2]


@pytest.mark.interop
@pytest.mark.skipif(not (shutil.which("h2load") and shutil.which("nghttpd")),
                    reason="needs h2load and nghttpd (nghttp2-client, nghttp2-server)")
def test_real_h2load_against_nghttpd(tmp_path: Path) -> None:
    port = free_port()
    body = tmp_path / "body.json"
    body.write_bytes(request_body())
    log = tmp_path / "log.tsv"
    with start_nghttpd(port, tmp_path, cpu=None):
        argv = build_argv(f"http://127.0.0.1:{port}{RESPONSE_PATH}", clients=2, streams=4,
                          requests=300, data_file=body, log_file=log)
        run = run_h2load(argv, log, timeout_s=20)
        missing = build_argv(f"http://127.0.0.1:{port}/no-such-file", clients=1, streams=1,
                             requests=20, log_file=log)
        run404 = run_h2load(missing, log, timeout_s=20)
    assert run.summary.succeeded == 300 and run.summary.status_2xx == 300
    assert len(run.log.latencies_us) == 300
    assert all(x > 0 for x in run.log.latencies_us)
    assert run404.summary.status_4xx == 20 and run404.log.latencies_us == []
