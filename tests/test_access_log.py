"""The access log: one line per request, written in batches, nothing lost at shutdown.

Each test runs on every available implementation (the pure ``gateway.access_log.AccessLog``
and, once built, the compiled ``gateway._access_log_fast.AccessLog``)."""

from __future__ import annotations

import io
import json

import pytest

from gateway.access_log import available_access_logs, load_access_log
from tests.waiting import wait_until


@pytest.fixture(params=available_access_logs())
def AccessLog(request):
    return load_access_log(request.param)


async def test_lines_are_batched_and_flushed(AccessLog) -> None:
    out = io.StringIO()
    log = AccessLog("json", out=out, flush_s=0.05)
    for i in range(3):
        log(method="GET", path=f"/nudm-sdm/v2/imsi-{i}/am-data", status=200, duration_s=0.001)
    assert out.getvalue() == ""  # nothing written per request
    await wait_until(lambda: out.getvalue().count("\n") == 3)  # the 0.05 s timer flushed them
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["path"] for x in lines] == [f"/nudm-sdm/v2/imsi-{i}/am-data" for i in range(3)]


async def test_large_batches_flush_early_and_stop_flushes_the_rest(AccessLog) -> None:
    out = io.StringIO()
    log = AccessLog("text", out=out, flush_s=60)
    for i in range(2000):
        log(method="POST", path="/x" * 20, status=201, n=i)
    written = out.getvalue().count("\n")
    assert 0 < written < 2000  # the 64 KiB bound forced writes before the timer
    log.flush()
    assert out.getvalue().count("\n") == 2000
    assert out.getvalue().splitlines()[-1].endswith("n=1999")
