"""Kernel-SCTP tests: they run inside the QEMU VM (scripts/sctp_vm.py) and are skipped, with
the reason, on a host whose kernel has no SCTP.

    .venv/bin/python scripts/sctp_vm.py -- $PWD/.venv/bin/python -m pytest -m sctp tests/sctp -q
"""

from __future__ import annotations

import pytest

from dataplane.sctp import sctp_available

_OK, _REASON = sctp_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/sctp/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("sctp/"):
            item.add_marker(pytest.mark.sctp)
            if not _OK:
                item.add_marker(pytest.mark.skip(
                    reason=f"{_REASON} (run: .venv/bin/python scripts/sctp_vm.py -- "
                           "$PWD/.venv/bin/python -m pytest -m sctp tests/sctp -q)"))
