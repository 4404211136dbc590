"""``nfmesh perf abuse``: short runs against the engine responders and, side by side, against
HAProxy and the nfmesh gateway before the same nghttpd origin (bounded: 0.5-1 s a case); the
attack bytes, the verdicts against the issue's targets, and a target whose binary is missing."""

from __future__ import annotations

import json
import os
import sys

from dataplane.engine import available_backends
from nfmesh_cli.main import PERF_TOOLS
from perf import abuse
from perf.abuse_attacks import Attack
from perf.abuse_report import format_table, verdicts
from perf.abuse_targets import unavailable

ROW_KEYS = {"case", "legit", "rss_peak_growth_kib", "attacker"}
LEGIT_KEYS = {"requests", "ok", "success", "p50_ms", "p99_ms", "failures"}
ATTACKER_KEYS = {"connections", "cut", "goaway", "rst_stream", "responses", "bytes_sent"}


def _run(capsys, *argv: str) -> dict:
    rc = abuse.main(["--json", *argv])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def _check_row(row: dict) -> None:
    assert ROW_KEYS <= set(row)
    assert LEGIT_KEYS <= set(row["legit"]) and ATTACKER_KEYS <= set(row["attacker"])
    legit = row["legit"]
    assert legit["requests"] > 0 and 0.0 <= legit["success"] <= 1.0
    assert legit["ok"] + sum(legit["failures"].values()) == legit["requests"]


def test_registered_as_a_perf_tool():
    assert PERF_TOOLS["abuse"][0] == "perf.abuse"


def test_engine_targets_quick_json(capsys):
    engines = [f"engine-{b}" for b in available_backends()]
    out = _run(capsys, "--duration", "0.5", "--idle", "20", "--targets", ",".join(engines),
               "--cases", "ping_flood,garbage_preface,idle_connections")
    assert out["duration_s"] == 0.5
    assert [t["target"] for t in out["targets"]] == engines
    for t in out["targets"]:
        assert "skipped" not in t and "error" not in t
        cases = {c["case"]: c for c in t["cases"]}
        assert list(cases) == ["baseline", "ping_flood", "garbage_preface", "idle_connections"]
        for c in cases.values():
            _check_row(c)
        assert "ENHANCE_YOUR_CALM" in cases["ping_flood"]["attacker"]["goaway"]
        assert set(cases["garbage_preface"]["attacker"]["goaway"]) <= {
            "PROTOCOL_ERROR", "FRAME_SIZE_ERROR"}
        assert cases["garbage_preface"]["attacker"]["cut"] >= 1
        assert cases["idle_connections"]["attacker"]["connections"] == 20
        assert "kib_per_idle_connection" in cases["idle_connections"]


def test_proxies_side_by_side(capsys):
    """HAProxy and the nfmesh gateway (h2 engine) in one run; a target whose binary is not
    installed here must come back skipped with its reason, never crash the run."""
    out = _run(capsys, "--quick", "--targets", "haproxy,nfmesh-h2",
               "--cases", "ping_flood,garbage_preface")
    assert out["duration_s"] == 1.0
    by_name = {t["target"]: t for t in out["targets"]}
    assert list(by_name) == ["haproxy", "nfmesh-h2"]
    for name, t in by_name.items():
        why = unavailable(name)
        if why:
            assert t["skipped"] == why
            continue
        assert "error" not in t, t.get("error")
        assert t["origin"] == "nghttpd --no-tls"
        assert [c["case"] for c in t["cases"]] == ["baseline", "ping_flood", "garbage_preface"]
        for c in t["cases"]:
            _check_row(c)
        assert t["cases"][0]["legit"]["ok"] > 0
        ping = t["cases"][1]
        assert ping["attacker"]["connections"] >= 1 and ping["attacker"]["bytes_sent"] > 0
        assert isinstance(ping["missed"], list)
        # garbage after the preface is refused by every target: the connection is cut
        assert t["cases"][2]["attacker"]["cut"] >= 1
    nf = by_name["nfmesh-h2"]
    if "skipped" not in nf:
        assert nf["engine"] == "h2"
        ping = nf["cases"][1]["attacker"]
        assert "ENHANCE_YOUR_CALM" in ping["goaway"] and ping["cut"] >= 1
    text = format_table({"duration_s": 1.0, "targets": out["targets"]})
    assert "ping_flood" in text and "haproxy" in text and "nfmesh-h2" in text


def test_missing_binaries_are_skipped(capsys, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    out = _run(capsys, "--quick", "--targets", "haproxy,nghttpx", "--cases", "ping_flood")
    assert [(t["target"], "cases" in t) for t in out["targets"]] == [
        ("haproxy", False), ("nghttpx", False)]
    assert "haproxy not found" in out["targets"][0]["skipped"]
    assert "nghttpx not found" in out["targets"][1]["skipped"]


def test_unknown_target_is_refused(capsys):
    try:
        abuse.main(["--targets", "haproxy,apache"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("an unknown target was accepted")
    assert "apache" in capsys.readouterr().err


def test_stream_exhaustion_leaves_every_request_open():
    import hpack

    a = Attack("stream_exhaustion")
    chunk = a.more()
    sids, offset = [], 0
    while offset < len(chunk):
        n = int.from_bytes(chunk[offset:offset + 3], "big")
        ftype, flags = chunk[offset + 3], chunk[offset + 4]
        sid = int.from_bytes(chunk[offset + 5:offset + 9], "big")
        assert ftype == 1 and flags & 0x1 == 0 and flags & 0x4  # no END_STREAM, END_HEADERS
        block = chunk[offset + 9:offset + 9 + n]
        sids.append(sid)
        offset += 9 + n
    assert sids == list(range(1, 400, 2))
    decoded = dict(hpack.Decoder().decode(_first_block(Attack("stream_exhaustion").more())))
    assert decoded[":method"] == "POST" and decoded[":path"] == "/hold"
    assert block  # every HEADERS carries a header block


def _first_block(chunk: bytes) -> bytes:
    n = int.from_bytes(chunk[:3], "big")
    return chunk[9:9 + n]


def test_verdicts_name_each_missed_target():
    row = {"case": "ping_flood", "rss_peak_growth_kib": 17 * 1024.0,
           "legit": {"requests": 100, "ok": 98, "success": 0.98, "p99_ms": 12.0,
                     "p99_vs_baseline": 12.0},
           "attacker": {}}
    missed = verdicts(row)
    assert any("legit 98.00%" in m for m in missed)
    assert any("p99 12x" in m for m in missed)
    assert any("RSS +17.0 MB" in m for m in missed)
    good = {"case": "idle_connections", "rss_peak_growth_kib": 100.0,
            "kib_per_idle_connection": 4.0,
            "legit": {"requests": 100, "ok": 100, "success": 1.0, "p99_vs_baseline": 1.5},
            "attacker": {}}
    assert verdicts(good) == []
    assert verdicts({**good, "kib_per_idle_connection": 9.5}) == ["9.5 KiB/idle conn > 8"]
