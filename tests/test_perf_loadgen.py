"""The SBI load generator against real servers: nghttpd and the project's emulated UDM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
from pathlib import Path

import pytest

from perf.emulated_nf import EmulatedNF
from perf.loadgen import LoadGenerator, Target, main, resolve_scenario
from perf.peers.backend import start_nghttpd
from perf.peers.launcher import free_port
from perf.scenario import load_scenario

needs_nghttpd = pytest.mark.skipif(shutil.which("nghttpd") is None,
                                   reason="needs nghttpd (nghttp2-server)")


@pytest.fixture
def nghttpd(tmp_path: Path):
    port = free_port()
    server = start_nghttpd(port, tmp_path, cpu=None)
    try:
        yield server, port
    finally:
        server.stop()


def _requests(port: int, name: str = "ausf-auth", **variables: str):
    sc = load_scenario(resolve_scenario(name))
    return sc.prepare(scheme=b"http", authority=f"127.0.0.1:{port}".encode(), variables=variables)


@needs_nghttpd
async def test_closed_loop_counts_every_answer(nghttpd, backend) -> None:
    _, port = nghttpd
    gen = LoadGenerator(Target("127.0.0.1", port), _requests(port), backend=backend.NAME)
    await gen.connect(2)
    try:
        stats = await gen.closed_loop(5, duration_s=20, max_requests=300)
    finally:
        gen.close()
    s = stats.summary("closed")
    assert s["sent"] == s["completed"] == s["answered"] == 300
    assert s["statuses"] == {"200": 300} and s["errors"] == {} and s["timeouts"] == 0
    assert s["latency"]["count"] == 300 and s["latency"]["p50_ms"] > 0
    assert s["operations"]["nausf-ue-authentication"]["count"] == 300


@needs_nghttpd
async def test_open_loop_keeps_the_schedule(nghttpd, backend) -> None:
    _, port = nghttpd
    gen = LoadGenerator(Target("127.0.0.1", port), _requests(port), backend=backend.NAME)
    await gen.connect(2)
    try:
        stats = await gen.open_loop(1000, duration_s=5, max_requests=300)
    finally:
        gen.close()
    s = stats.summary("open")
    assert s["sent"] == s["answered"] == 300 and s["timeouts"] == 0
    # request 299 is not due before 0.299 s after the start: the rate was held, not exceeded
    assert s["elapsed_s"] >= 0.299


@needs_nghttpd
async def test_open_loop_counts_a_stall_from_the_intended_time(nghttpd, backend) -> None:
    """The server is stopped (SIGSTOP) for 0.5 s: requests due meanwhile pile up behind the
    stream limit; their latency must include the wait (no coordinated omission)."""
    server, port = nghttpd
    gen = LoadGenerator(Target("127.0.0.1", port), _requests(port), backend=backend.NAME)
    await gen.connect(1)
    loop = asyncio.get_running_loop()
    try:
        loop.call_later(0.1, os.kill, server.pid, signal.SIGSTOP)
        loop.call_later(0.6, os.kill, server.pid, signal.SIGCONT)
        stats = await gen.open_loop(1000, duration_s=5, max_requests=800, drain_s=10)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        gen.close()
    s = stats.summary("open")
    assert s["answered"] == 800
    assert s["max_backlog"] > 0  # nghttpd allows 100 streams: the rest waited in the backlog
    assert s["latency"]["max_ms"] >= 350
    # at least the requests due in the middle of the stall waited 200 ms or more
    h = stats.histogram
    assert sum(c for v, c in _counts(h) if v >= 200_000) >= 100
    # the service time (from the actual send) hides the backlog wait: it is lower
    assert stats.service.get_value_at_percentile(50) < h.get_value_at_percentile(50)


def _counts(h):
    for item in h.get_recorded_iterator():
        yield item.value_iterated_to, item.count_added_in_this_iter_step


async def test_sbi_mix_against_emulated_udm(backend) -> None:
    """The UDM operations of the sbi-mix scenario, answered by the project's emulated UDM,
    all get the status the scenario expects."""
    udm = EmulatedNF("UDM", backend=backend.NAME)
    await udm.start()
    try:
        sc = load_scenario(resolve_scenario("sbi-mix"))
        sc.operations = [op for op in sc.operations if op.name.startswith("nudm-")]
        reqs = sc.prepare(scheme=b"http", authority=f"127.0.0.1:{udm.port}".encode())
        gen = LoadGenerator(Target("127.0.0.1", udm.port), reqs, backend=backend.NAME)
        await gen.connect(2)
        try:
            stats = await gen.closed_loop(4, duration_s=20, max_requests=250)
        finally:
            gen.close()
    finally:
        await udm.close()
    s = stats.summary("closed")
    assert s["answered"] == 250 and s["unexpected_status"] == 0, s["statuses"]
    ops = s["operations"]
    assert set(ops) == {"nudm-sdm-am-data", "nudm-sdm-sm-data", "nudm-uecm-amf-registration"}
    assert ops["nudm-sdm-am-data"]["count"] == 3 * ops["nudm-sdm-sm-data"]["count"] == 150


def test_cli_usage_errors(capsys) -> None:
    assert main(["--url", "http://127.0.0.1:1", "-H", "no-colon"]) == 2
    assert main(["--url", "http://127.0.0.1:1", "--scenario", "no-such"]) == 2
    assert "built-in: " in capsys.readouterr().err
    assert main(["--url", "ftp://x", "--duration", "1"]) == 2


def test_cli_unreachable_target(capsys) -> None:
    assert main(["--url", f"http://127.0.0.1:{free_port()}", "--duration", "0.2"]) == 1
    assert "cannot reach" in capsys.readouterr().err


@needs_nghttpd
def test_cli_json_open_loop(nghttpd, capsys) -> None:
    _, port = nghttpd
    rc = main(["--url", f"http://127.0.0.1:{port}", "--scenario", "ausf-auth", "--rate", "500",
               "--requests", "200", "--connections", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["mode"] == "open" and out["answered"] == 200 and out["target_rate"] == 500


@needs_nghttpd
async def test_tls_with_certificate_check(tmp_path: Path, backend) -> None:
    """Open loop over TLS (ALPN h2) to nghttpd, the server certificate checked against the CA
    file; a wrong CA fails the handshake."""
    from perf.loadgen import client_ssl_context
    from perf.peers.backend import write_docroot
    from perf.peers.launcher import Launched
    from perf.peers.tls_certs import make_self_signed

    tls = make_self_signed(tmp_path / "tls")
    other = make_self_signed(tmp_path / "other")
    port = free_port()
    docroot = write_docroot(tmp_path / "www")
    server = Launched(["nghttpd", "-a", "127.0.0.1", "-d", str(docroot), str(port),
                       str(tls.key), str(tls.cert)], tmp_path / "nghttpd.log")
    try:
        server.wait_listening("127.0.0.1", port, 5)
        reqs = _requests(port)
        target = Target("127.0.0.1", port, tls=True, server_name="localhost")
        gen = LoadGenerator(target, reqs, backend=backend.NAME,
                            ssl_context=client_ssl_context(cafile=str(tls.cert)))
        await gen.connect(2)
        try:
            stats = await gen.open_loop(500, duration_s=5, max_requests=100)
        finally:
            gen.close()
        assert stats.summary("open")["statuses"] == {"200": 100}
        bad = LoadGenerator(target, reqs, backend=backend.NAME,
                            ssl_context=client_ssl_context(cafile=str(other.cert)))
        with pytest.raises(ssl.SSLCertVerificationError):
            await bad.connect(1)
        bad.close()
    finally:
        server.stop()
