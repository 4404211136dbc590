"""The supervisor's /metrics merge (``WorkerMetricsAggregator``): every worker's samples come
through with a ``worker`` label whatever their own label values hold, families keep their type,
and HELP/TYPE appear once per family.  Workers are real ``MetricsServer``s on Unix sockets;
the merged text is read back with prometheus_client's own parser."""

from __future__ import annotations

import collections
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import MetricsServer, WorkerMetricsAggregator, label_samples, new_registry

NASTY = 'a}b"c\\d\ne\rf{g="h",i}'  # a closing brace, quotes, a backslash, newline, CR


class _Collector:
    """A counter and a histogram whose label values are ``values``."""

    def __init__(self, values: list[str], scale: int) -> None:
        self.values, self.scale = values, scale

    def collect(self) -> object:
        c = CounterMetricFamily("t_requests", "Requests, by peer", labels=["peer"])
        h = HistogramMetricFamily("t_duration_seconds", "Durations", labels=["peer"])
        for i, value in enumerate(self.values):
            c.add_metric([value], self.scale * (i + 1))
            h.add_metric([value], [("0.1", self.scale), ("+Inf", 2 * self.scale)], 0.5 * self.scale)
        yield c
        yield h


def _parse(text: bytes) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text.decode("utf-8"))}


async def test_merge_keeps_every_sample_and_type_across_workers(tmp_path: Path) -> None:
    values = [NASTY, "plain", ""]
    servers, sockets = [], []
    for i in range(2):
        sock = str(tmp_path / f"metrics-{i}.sock")
        server = MetricsServer(new_registry(_Collector(values, scale=10 * (i + 1))))
        await server.start_unix(sock)
        servers.append(server)
        sockets.append(sock)
    sockets.append(str(tmp_path / "absent.sock"))  # a worker that does not answer
    local = new_registry(_Collector(["control-only"], scale=1))
    try:
        agg = WorkerMetricsAggregator(sockets, local)
        text = await agg.exposition()
    finally:
        for server in servers:
            await server.close()

    assert agg.last_answered == 2
    families = _parse(text)
    assert families["t_requests"].type == "counter"
    assert families["t_duration_seconds"].type == "histogram"
    counts = {(s.labels["worker"], s.labels["peer"]): s.value
              for s in families["t_requests"].samples if s.name == "t_requests_total"}
    assert counts == {("0", NASTY): 10, ("0", "plain"): 20, ("0", ""): 30,
                      ("1", NASTY): 20, ("1", "plain"): 40, ("1", ""): 60,
                      ("control", "control-only"): 1}
    buckets = {(s.labels["worker"], s.labels["peer"], s.labels["le"]): s.value
               for s in families["t_duration_seconds"].samples if s.name == "t_duration_seconds_bucket"}
    assert buckets[("1", NASTY, "0.1")] == 20 and buckets[("1", NASTY, "+Inf")] == 40
    assert len(buckets) == 2 * 2 * 3 + 2
    up = {s.labels["worker"]: s.value for s in families["nfmesh_worker_up"].samples}
    assert up == {"0": 1, "1": 1, "2": 0}
    lines = text.split(b"\n")
    headers = collections.Counter(tuple(line.split(b" ", 3)[1:3]) for line in lines if line.startswith(b"# "))
    assert headers and set(headers.values()) == {1}  # one HELP and one TYPE per family
    assert (b"TYPE", b"t_requests_total") in headers and (b"HELP", b"t_duration_seconds") in headers


def test_label_samples_on_the_shapes_of_a_sample_line() -> None:
    text = (b"# HELP a_total x\n# TYPE a_total counter\na_total 3.0\n"
            b'b_total{cluster="x}",status="200"} 2.0\nc{} 1\n\n!not a sample\n')
    assert label_samples(text, b'worker="1"') == [
        b"# HELP a_total x", b"# TYPE a_total counter", b'a_total{worker="1"} 3.0',
        b'b_total{worker="1",cluster="x}",status="200"} 2.0', b'c{worker="1"} 1']


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=1,
                max_size=4, unique=True))
def test_any_label_value_survives_with_the_worker_label(values: list[str]) -> None:
    body = generate_latest(new_registry(_Collector(values, scale=1)))
    merged = b"\n".join(label_samples(body, b'worker="7"')) + b"\n"
    families = _parse(merged)
    got = {s.labels["peer"]: s.value for s in families["t_requests"].samples
           if s.name == "t_requests_total" and s.labels.get("worker") == "7"}
    assert got == {v: i + 1 for i, v in enumerate(values)}
    assert all(s.labels.get("worker") == "7" for f in families.values() for s in f.samples)
