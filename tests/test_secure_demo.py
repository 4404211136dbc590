"""`nfmesh demo --secure --rotate-every S --json` (issue 14, item 6): mTLS on every hop, a token
on every request, every certificate renewed while traffic runs, and no request lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_secure_demo_with_rotation_loses_nothing() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "nfmesh_cli", "demo", "--secure", "--rotate-every", "0.5",
         "--duration", "3", "--rate", "50", "--json"],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tls"] is True and out["errors"] == 0 and out["requests"] > 0
    assert out["requests_with_token"] == out["requests"]
    assert out["tokens_issued"] >= 3 and out["token_rejections"] == 0
    assert out["rotations"] >= 2 and out["gateway_tls_reloads"] >= 2
    # every NF (4 producers, the consumer) renewed through the gateway's CSR API each round
    assert out["renewed_via_csr_api"] == 5 * out["rotations"]


def test_rotate_every_needs_secure() -> None:
    from nfmesh_cli.main import main

    assert main(["demo", "--rotate-every", "1", "--duration", "1"]) == 2
