"""The engines' log of abuse cuts is rate-limited (dataplane.abuse_log): an attacker that
reconnects after every cut gets at most ``per_second`` lines a second, and the next line let
through says how many were held back."""

from __future__ import annotations

import logging

from dataplane.abuse_log import CutLog


def test_at_most_per_second_lines_and_the_rest_counted(caplog) -> None:
    now = [100.0]
    cuts = CutLog(logging.getLogger("test.abuse"), per_second=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.abuse"):
        for i in range(25):
            cuts.warn("cut %s", i)
        assert [r.getMessage() for r in caplog.records] == [f"cut {i}" for i in range(10)]
        now[0] += 1.0
        cuts.warn("cut %s", "next")
    assert caplog.records[-1].getMessage() == "cut next (and 15 more cuts not logged)"
    assert len(caplog.records) == 11 and cuts.suppressed == 0
