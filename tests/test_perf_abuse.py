"""``nfmesh perf abuse``: a short run of two cases on every backend (bounded: 0.5 s a case)."""

from __future__ import annotations

import json

from dataplane.engine import available_backends
from nfmesh_cli.main import PERF_TOOLS
from perf import abuse


def test_registered_as_a_perf_tool():
    assert PERF_TOOLS["abuse"][0] == "perf.abuse"


def test_quick_json_run(capsys):
    rc = abuse.main(["--json", "--duration", "0.5", "--idle", "20",
                     "--cases", "ping_flood,garbage_preface,idle_connections"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["backend"] for b in out["backends"]] == available_backends()
    for b in out["backends"]:
        cases = {c["case"]: c for c in b["cases"]}
        assert list(cases) == ["baseline", "ping_flood", "garbage_preface", "idle_connections"]
        assert "ENHANCE_YOUR_CALM" in cases["ping_flood"]["attacker"]["goaway"]
        assert set(cases["garbage_preface"]["attacker"]["goaway"]) <= {
            "PROTOCOL_ERROR", "FRAME_SIZE_ERROR"}
        assert cases["garbage_preface"]["attacker"]["cut"] >= 1
        assert cases["idle_connections"]["attacker"]["connections"] == 20
        for c in cases.values():
            assert c["legit"]["requests"] > 0 and 0.0 <= c["legit"]["success"] <= 1.0
