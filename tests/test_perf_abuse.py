"""``nfmesh perf abuse``: short runs against the engine responders and, side by side, against
HAProxy and the nfmesh gateway before the same nghttpd origin (bounded: 0.5-1 s a case); the
attack bytes (``zero_window``'s settings and streams, ``big_header``'s HPACK block over
CONTINUATIONs), the origin's big document, the verdicts against the issue's targets, and a
target whose binary is missing."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import hpack
import pytest

from dataplane.engine import H2Settings, available_backends, load_backend
from nfmesh_cli.main import PERF_TOOLS
from perf import abuse
from perf.abuse_attacks import (
    BIG_HEADER_SIZE,
    BIG_PATH,
    BIG_SIZE,
    MAX_FRAME,
    PREFACE,
    ZERO_WINDOW_CONNECTIONS,
    ZERO_WINDOW_STREAMS,
    Attack,
    big_header_request,
)
from perf.abuse_report import format_table, verdicts
from perf.abuse_targets import Targets, unavailable
from perf.peers.backend import RESPONSE_PATH, nghttpd_unavailable

ROW_KEYS = {"case", "legit", "rss_peak_growth_kib", "attacker"}
LEGIT_KEYS = {"requests", "ok", "success", "p50_ms", "p99_ms", "failures"}
ATTACKER_KEYS = {"connections", "cut", "goaway", "rst_stream", "responses", "bytes_sent",
                 "streams_opened", "bytes_received", "data_bytes"}


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


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data`` (whole frames only)."""
    out, offset = [], 0
    while offset < len(data):
        n = int.from_bytes(data[offset:offset + 3], "big")
        out.append((data[offset + 3], data[offset + 4],
                    int.from_bytes(data[offset + 5:offset + 9], "big"),
                    data[offset + 9:offset + 9 + n]))
        offset += 9 + n
    assert offset == len(data)
    return out


def test_zero_window_opens_its_streams_once_with_a_zero_window():
    a = Attack("zero_window")
    (ftype, flags, sid, payload), ack = _frames(a.first())
    assert (ftype, flags, sid) == (4, 0, 0) and payload == b"\x00\x04\x00\x00\x00\x00"
    assert ack[:3] == (4, 1, 0)
    heads = _frames(a.more())
    assert [f[2] for f in heads] == list(range(1, 2 * ZERO_WINDOW_STREAMS, 2))
    assert all(f[0] == 1 and f[1] == 0x5 for f in heads)  # END_STREAM | END_HEADERS: GETs
    dec = hpack.Decoder()
    assert all(dict(dec.decode(f[3], raw=True))[b":path"] == BIG_PATH.encode() for f in heads)
    assert a.more() == b"" and a.more() == b""  # then nothing at all: no WINDOW_UPDATE
    assert a.opened == ZERO_WINDOW_STREAMS


def test_big_header_is_one_valid_block_over_continuations():
    frames = _frames(big_header_request(1))
    assert all(len(f[3]) <= MAX_FRAME for f in frames)
    first = [f for f in frames if f[2] == 1]
    assert first[0][:2] == (1, 0x1)  # HEADERS, END_STREAM, no END_HEADERS
    assert [f[0] for f in first[1:]] == [9] * (len(first) - 1) and len(first) >= 7
    assert [f[1] for f in first[1:]] == [0] * (len(first) - 2) + [0x4]
    (nxt,) = [f for f in frames if f[2] == 3]
    assert nxt[:2] == (1, 0x5)
    dec = hpack.Decoder()
    dec.max_header_list_size = 1 << 20
    big = dict(dec.decode(b"".join(f[3] for f in first), raw=True))
    assert big[b"x-big"] == b"a" * BIG_HEADER_SIZE and big[b":method"] == b"GET"
    follow = dict(dec.decode(nxt[3], raw=True))
    assert follow[b":path"] == RESPONSE_PATH.encode() and b"x-big" not in follow


@pytest.mark.skipif(nghttpd_unavailable() is not None, reason="nghttpd not installed")
def test_origin_serves_the_big_document(tmp_path):
    targets = Targets(tmp_path, 30.0)
    try:
        port = targets.origin_port()
        engine = load_backend("auto")

        async def get() -> tuple:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                lambda: engine.ClientConnection(H2Settings()), "127.0.0.1", port)
            await asyncio.wait_for(conn.ready, 5)
            fut = loop.create_future()
            conn.request([(b":method", b"GET"), (b":scheme", b"http"),
                          (b":authority", b"origin"), (b":path", BIG_PATH.encode())],
                         None, lambda *a: fut.done() or fut.set_result(a))
            try:
                return await asyncio.wait_for(fut, 10)
            finally:
                conn.close()

        status, _, body, _, error = asyncio.run(get())
        assert error is None and status == 200 and len(body) == BIG_SIZE
    finally:
        targets.close()


def test_zero_window_and_big_header_shape(capsys):
    """Both cases against one engine responder, 0.5 s each: every field there, the attacker's
    streams opened and held with no DATA sent to them, each big-header probe's answers."""
    target = f"engine-{available_backends()[0]}"
    out = _run(capsys, "--duration", "0.5", "--targets", target,
               "--cases", "zero_window,big_header")
    (t,) = out["targets"]
    assert "skipped" not in t and "error" not in t
    cases = {c["case"]: c for c in t["cases"]}
    assert list(cases) == ["baseline", "zero_window", "big_header"]
    for c in cases.values():
        _check_row(c)
    zw = cases["zero_window"]["attacker"]
    assert zw["connections"] >= ZERO_WINDOW_CONNECTIONS
    assert zw["streams_opened"] >= ZERO_WINDOW_CONNECTIONS * ZERO_WINDOW_STREAMS
    assert zw["data_bytes"] == 0  # a zero window: no DATA may come
    assert zw["bytes_received"] > 0 and zw["bytes_sent"] > len(PREFACE) * 4
    bh = cases["big_header"]["attacker"]
    assert bh["connections"] >= 1 and bh["streams_opened"] == 2 * bh["connections"]
    assert bh["bytes_sent"] > BIG_HEADER_SIZE * bh["connections"]
    assert set(bh["big_header"]) == {"big", "next"}
    assert sum(bh["outcomes"].values()) == bh["connections"]
    assert f"{bh['big_header']['big']} / {bh['big_header']['next']}" in bh["outcomes"]
    text = format_table(out)
    assert "zero_window" in text and "streams=" in text and "got=" in text
