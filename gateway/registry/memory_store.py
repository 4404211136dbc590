"""The embedded registry store: in memory, with an optional snapshot file that survives restarts.

The file is a JSON-lines journal: one ``{"op": ...}`` record per accepted change, appended and
flushed before the change is applied, so a restart keeps every registration and subscription
the API acknowledged.  When the journal grows past ``max(1000, 4 x live records)`` it is
compacted: the live state is written to ``<file>.tmp``, fsynced and renamed over the file
(atomic on POSIX), so a crash mid-compaction leaves either the old or the new file.
Heartbeats are not journaled: after a restart every instance gets a fresh heartbeat timer.

A torn last line (crash while appending) is skipped on load; any other unreadable line stops
the start with a clear error rather than silently dropping registrations.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import msgspec

from gateway.registry.store import StoreContents, StoreError, StoreEvent

log = logging.getLogger(__name__)

_FORMAT = "nfmesh-registry-journal/1"
_encode = msgspec.json.Encoder().encode


class MemoryStore:
    """``RegistryStore`` kept in this process; ``path=None`` keeps nothing across restarts."""

    tracks_liveness = False

    def __init__(self, path: str | None = None, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._profiles: dict[str, dict] = {}
        self._subs: dict[str, dict] = {}
        self._rev = 0
        self._journal_lines = 0
        self._fh = None

    # -------------------------------------------------------------- lifecycle

    async def open(self) -> StoreContents:
        if self.path:
            self._load()
            self._compact()
        return StoreContents(dict(self._profiles), dict(self._subs), None, self._rev)

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def set_listener(self, listener: Callable[[StoreEvent], None]) -> None:
        """Nothing to report: this process is the only writer."""

    # -------------------------------------------------------------- writes

    async def put_profile(self, nf_id: str, profile: dict, ttl_s: int) -> int:
        self._append({"op": "put", "id": nf_id, "profile": profile})
        self._profiles[nf_id] = profile
        return self._bump()

    async def delete_profile(self, nf_id: str) -> int:
        if nf_id in self._profiles:
            self._append({"op": "del", "id": nf_id})
            del self._profiles[nf_id]
        return self._bump()

    async def heartbeat(self, nf_id: str, ttl_s: int) -> int:
        return self._rev

    async def put_subscription(self, sub_id: str, data: dict) -> int:
        self._append({"op": "sub", "id": sub_id, "data": data})
        self._subs[sub_id] = data
        return self._bump()

    async def delete_subscription(self, sub_id: str) -> int:
        if sub_id in self._subs:
            self._append({"op": "unsub", "id": sub_id})
            del self._subs[sub_id]
        return self._bump()

    # -------------------------------------------------------------- file

    def _bump(self) -> int:
        """Count the change just applied and compact the journal when it has grown."""
        self._rev += 1
        if self.path and self._journal_lines > max(1000, 4 * (len(self._profiles) + len(self._subs))):
            try:
                self._compact()
            except StoreError as exc:  # the change is already in the journal: keep going
                log.warning("registry journal compaction failed: %s", exc.detail)
        return self._rev

    def _append(self, rec: dict) -> None:
        if not self.path:
            return
        line = _encode(rec).decode() + "\n"
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._fh.write(line)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            raise StoreError(f"registry snapshot file {self.path}: {exc}", "INSUFFICIENT_RESOURCES") from exc
        self._journal_lines += 1

    def _load(self) -> None:
        assert self.path
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except FileNotFoundError:
            return
        last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
        for i, ln in enumerate(lines):
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
                op = rec["op"]
            except (ValueError, KeyError, TypeError) as exc:
                if i == last:
                    log.warning("registry snapshot %s: skipping torn last line", self.path)
                    break
                raise ValueError(f"registry snapshot {self.path} line {i + 1}: unreadable ({exc})") from None
            if op == "header":
                if rec.get("format") != _FORMAT:
                    raise ValueError(f"registry snapshot {self.path}: unknown format {rec.get('format')!r}")
            elif op == "put":
                self._profiles[rec["id"]] = rec["profile"]
            elif op == "del":
                self._profiles.pop(rec["id"], None)
            elif op == "sub":
                self._subs[rec["id"]] = rec["data"]
            elif op == "unsub":
                self._subs.pop(rec["id"], None)
            else:
                raise ValueError(f"registry snapshot {self.path} line {i + 1}: unknown op {op!r}")

    def _compact(self) -> None:
        assert self.path
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"op": "header", "format": _FORMAT}) + "\n")
                for nf_id, p in self._profiles.items():
                    fh.write(json.dumps({"op": "put", "id": nf_id, "profile": p}, separators=(",", ":")) + "\n")
                for sid, d in self._subs.items():
                    fh.write(json.dumps({"op": "sub", "id": sid, "data": d}, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StoreError(f"registry snapshot file {self.path}: {exc}", "INSUFFICIENT_RESOURCES") from exc
        self._journal_lines = 0
