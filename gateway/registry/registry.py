"""The NF registry: NF profiles, heartbeats and suspension, subscriptions, notifications.

It is what the NRF API (``gateway.nrf_api``) and the route snapshot (``gateway.route_snapshot``)
work on.  The working set lives in this object; every change is first written to the store
(``MemoryStore`` or ``EtcdStore``) and applied only when the store accepted it, so a store
failure (``StoreError`` -> 503) leaves nothing half-written.  Replicas on one etcd apply each
other's changes from the store's watch events, ordered by etcd revision per key.

Liveness: the NRF assigns ``heartBeatTimer``; an instance not heard from for
``heartBeatTimer + grace`` is SUSPENDED (an effective status kept beside the stored profile: it
is neither discovered nor selected), subscribers get NF_PROFILE_CHANGED, and after
``suspended_removal_s`` it is removed (NF_DEREGISTERED).  With the memory store the registry's
own sweeper decides; with etcd a lease per instance does, so every replica agrees.

``add_listener`` callbacks run (synchronously, cheaply) after each change; the route snapshot
uses one to rebuild.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator

import msgspec

from gateway.registry.json_patch import PatchError, apply_patch
from gateway.registry.notifier import Notifier
from gateway.registry.profile import (
    NF_STATUSES,
    InvalidParam,
    ProfileError,
    validate_profile,
    validate_subscription,
)
from gateway.registry.settings import RegistrySettings
from gateway.registry.store import RegistryStore, StoreEvent
from nf_adapters.discovery import DiscoveryQuery, matching_services, profile_matches, services_of

log = logging.getLogger(__name__)

_HIDDEN = ("allowedPlmns", "allowedSnpns", "allowedNfTypes", "allowedNfDomains", "allowedNssais")
_HEARTBEAT_PATHS = frozenset({"/nfStatus", "/load", "/loadTimeStamp"})
_encode = msgspec.json.Encoder().encode


class NotFound(KeyError):
    """No such NF instance or subscription."""


def public_view(profile: dict, status: str) -> dict:
    """The profile as shown to other NFs (discovery, notifications): access rules removed and
    the effective status set."""
    out = {k: v for k, v in profile.items() if k not in _HIDDEN}
    out["nfStatus"] = status
    lst = out.get("nfServiceList")
    if isinstance(lst, dict):
        out["nfServiceList"] = {
            k: {kk: vv for kk, vv in s.items() if kk not in _HIDDEN} for k, s in lst.items()
        }
    arr = out.get("nfServices")
    if isinstance(arr, list):
        out["nfServices"] = [{kk: vv for kk, vv in s.items() if kk not in _HIDDEN} for s in arr]
    return out


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with a ``Z`` (TS 29.571 DateTime)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> float:
    """RFC 3339 DateTime -> epoch seconds (ValueError when malformed)."""
    v = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if v.tzinfo is None:
        v = v.replace(tzinfo=dt.UTC)
    return v.timestamp()


class Registry:
    """NF instances and subscriptions over a ``RegistryStore``; see the module docstring."""

    def __init__(
        self,
        settings: RegistrySettings,
        store: RegistryStore,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        self._profiles: dict[str, dict] = {}
        self._by_type: dict[str, set[str]] = {}
        self._suspended_at: dict[str, float] = {}
        self._suspend_rev: dict[str, int] = {}  # etcd revision of the lease expiry (replicas)
        self._removal_claimed: dict[str, float] = {}  # nf_id -> when this replica tried
        self._deadline: dict[str, float] = {}
        self._subs: dict[str, dict] = {}
        self._sub_expiry: dict[str, float] = {}
        self._revs: dict[str, int] = {}
        self._public_json: dict[str, bytes] = {}
        self._listeners: list[Callable[[], None]] = []
        self._sweeper: asyncio.Task | None = None
        self.version = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the store, start the sweeper and the notifier."""
        contents = await self.store.open()
        now = time.monotonic()
        for nf_id, p in contents.profiles.items():
            self._put_local(nf_id, p)
            self._deadline[nf_id] = now + self._ttl()
        if contents.alive is not None:
            for nf_id in contents.profiles:
                if nf_id not in contents.alive:
                    self._suspended_at[nf_id] = now
        for sid, d in contents.subscriptions.items():
            self._put_sub_local(sid, d)
        self.store.set_listener(self._on_store_event)
        if self.notifier is not None:
            self.notifier.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="nrf-sweeper")
        self._changed()

    async def close(self) -> None:
        """Stop timers and the notifier and close the store."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        if self.notifier is not None:
            await self.notifier.close()
        await self.store.close()

    def add_listener(self, cb: Callable[[], None]) -> None:
        """``cb()`` runs after every change of the registered set or of a status."""
        self._listeners.append(cb)

    # ------------------------------------------------------------------ reads

    def _ttl(self) -> float:
        return self.settings.heartbeat_timer_s + self.settings.heartbeat_grace_s

    def status_of(self, nf_id: str) -> str:
        """The effective NF status (SUSPENDED after missed heartbeats)."""
        if nf_id in self._suspended_at:
            return "SUSPENDED"
        return self._profiles[nf_id].get("nfStatus", "REGISTERED")

    def get(self, nf_id: str) -> dict:
        """The stored profile with the effective status; ``NotFound`` if absent."""
        p = self._profiles.get(nf_id.lower())
        if p is None:
            raise NotFound(nf_id)
        out = dict(p)
        out["nfStatus"] = self.status_of(nf_id.lower())
        return out

    def __len__(self) -> int:
        return len(self._profiles)

    def instance_ids(self, nf_type: str | None = None) -> list[str]:
        if nf_type is None:
            return list(self._profiles)
        return list(self._by_type.get(nf_type, ()))

    def instances(self) -> Iterator[tuple[dict, str]]:
        """(stored profile, effective status) for every instance (for the route snapshot)."""
        for nf_id, p in self._profiles.items():
            yield p, self.status_of(nf_id)

    def discover(self, q: DiscoveryQuery) -> list[str]:
        """Ids of REGISTERED instances matching ``q``; preferred locality first, then priority."""
        out: list[tuple[int, int, str]] = []
        for nf_id in self._by_type.get(q.target_nf_type, ()):
            p = self._profiles[nf_id]
            if not profile_matches(p, q, status=self.status_of(nf_id)):
                continue
            loc = 0 if q.preferred_locality and p.get("locality") == q.preferred_locality else 1
            prio = p.get("priority")
            if prio is None:
                svc = matching_services(p, q) if q.service_names else services_of(p)
                prio = min((s.get("priority", 65535) for s in svc), default=65535)
            out.append((loc, prio, nf_id))
        out.sort()
        return [nf_id for _, _, nf_id in out]

    def public_json(self, nf_id: str) -> bytes:
        """The public view of one instance as JSON bytes (cached until it changes)."""
        b = self._public_json.get(nf_id)
        if b is None:
            b = _encode(public_view(self._profiles[nf_id], self.status_of(nf_id)))
            self._public_json[nf_id] = b
        return b

    # ------------------------------------------------------------------ NF management

    async def register(self, nf_id: str, body: object) -> tuple[bool, dict]:
        """PUT: validate, store and apply; returns (created, stored profile)."""
        profile = dict(validate_profile(body, nf_id))
        nf_id = nf_id.lower()
        profile["nfInstanceId"] = nf_id
        profile["heartBeatTimer"] = self.settings.heartbeat_timer_s
        created = nf_id not in self._profiles
        old = self._profiles.get(nf_id)
        rev = await self.store.put_profile(nf_id, profile, int(self._ttl() + 0.999))
        self._revs[f"nf/{nf_id}"] = rev
        self._put_local(nf_id, profile)
        self._deadline[nf_id] = time.monotonic() + self._ttl()
        self._suspended_at.pop(nf_id, None)
        self._changed()
        if created:
            self._notify("NF_REGISTERED", nf_id)
        elif old != profile:
            self._notify("NF_PROFILE_CHANGED", nf_id)
        return created, self.get(nf_id)

    async def update(self, nf_id: str, ops: object) -> tuple[dict, bool]:
        """PATCH: apply a JSON Patch; returns (profile, nrf_changed_something).

        A patch that only replaces /nfStatus (and /load) is a heartbeat."""
        nf_id = nf_id.lower()
        cur = self._profiles.get(nf_id)
        if cur is None:
            raise NotFound(nf_id)
        new = _heartbeat_patch(cur, ops)
        if new is None:  # a general patch: apply to a deep copy and validate the whole profile
            try:
                new = apply_patch(cur, ops)
            except PatchError as exc:
                raise _patch_error(exc) from None
            for key in ("nfInstanceId", "nfType"):
                if new.get(key) != cur.get(key):
                    raise ProfileError("MODIFICATION_NOT_ALLOWED", f"{key} cannot be changed",
                                       [_ip(f"/{key}", "cannot be changed")])
            validate_profile(new, nf_id)
        nrf_changed = False
        if new.get("heartBeatTimer") != self.settings.heartbeat_timer_s:
            new = dict(new)  # never mutate the stored profile in place
            new["heartBeatTimer"] = self.settings.heartbeat_timer_s
            nrf_changed = True
        heartbeat_only = all(
            isinstance(op, dict) and op.get("path") in _HEARTBEAT_PATHS for op in ops  # type: ignore[union-attr]
        )
        ttl = int(self._ttl() + 0.999)
        if new is cur or new == cur:
            rev = await self.store.heartbeat(nf_id, ttl)
        else:
            rev = await self.store.put_profile(nf_id, new, ttl)
            self._revs[f"nf/{nf_id}"] = rev
            self._put_local(nf_id, new)
        self._deadline[nf_id] = time.monotonic() + self._ttl()
        resumed = self._suspended_at.pop(nf_id, None) is not None
        self._removal_claimed.pop(nf_id, None)
        if new != cur or resumed:
            self._public_json.pop(nf_id, None)
            self._changed()
            status_changed = cur.get("nfStatus") != new.get("nfStatus") or (
                resumed and new.get("nfStatus") == "REGISTERED"
            )
            if not heartbeat_only or status_changed:
                self._notify("NF_PROFILE_CHANGED", nf_id)
        return self.get(nf_id), nrf_changed

    async def deregister(self, nf_id: str) -> None:
        """DELETE: remove the instance and tell subscribers."""
        nf_id = nf_id.lower()
        if nf_id not in self._profiles:
            raise NotFound(nf_id)
        snapshot = self._profiles[nf_id]
        rev = await self.store.delete_profile(nf_id)
        self._revs[f"nf/{nf_id}"] = rev
        self._drop_local(nf_id)
        self._changed()
        self._notify("NF_DEREGISTERED", nf_id, profile=snapshot)

    # ------------------------------------------------------------------ subscriptions

    def get_subscription(self, sub_id: str) -> dict:
        d = self._subs.get(sub_id)
        if d is None:
            raise NotFound(sub_id)
        return d

    def _validity(self, requested: object) -> tuple[float, bool]:
        """(expiry epoch, nrf_changed): the requested validityTime clamped to the maximum."""
        limit = time.time() + self.settings.subscription_validity_s
        if requested is None:
            return limit, True
        try:
            want = parse_time(str(requested))
        except ValueError:
            raise ProfileError("OPTIONAL_IE_INCORRECT", "validityTime: not an RFC 3339 date-time",
                               [_ip("/validityTime", "not an RFC 3339 date-time")]) from None
        if want <= time.time():
            raise ProfileError("OPTIONAL_IE_INCORRECT", "validityTime: in the past",
                               [_ip("/validityTime", "in the past")])
        if want > limit:
            return limit, True
        return want, False

    async def subscribe(self, body: object) -> dict:
        """POST /subscriptions: returns the created SubscriptionData (with subscriptionId)."""
        data = dict(validate_subscription(body))
        expiry, _ = self._validity(data.get("validityTime"))
        sub_id = uuid.uuid4().hex
        data["subscriptionId"] = sub_id
        data["validityTime"] = format_time(expiry)
        rev = await self.store.put_subscription(sub_id, data)
        self._revs[f"sub/{sub_id}"] = rev
        self._put_sub_local(sub_id, data)
        return data

    async def update_subscription(self, sub_id: str, ops: object) -> tuple[dict, bool]:
        """PATCH /subscriptions/{id}: only /validityTime may change; (data, nrf_changed)."""
        cur = self.get_subscription(sub_id)
        try:
            new = apply_patch(cur, ops)
        except PatchError as exc:
            raise _patch_error(exc) from None
        changed = {k for k in set(cur) | set(new) if cur.get(k) != new.get(k)}
        if changed - {"validityTime"}:
            bad = sorted(changed - {"validityTime"})[0]
            raise ProfileError("MODIFICATION_NOT_ALLOWED", f"/{bad} cannot be changed",
                               [_ip(f"/{bad}", "only /validityTime can be changed")])
        expiry, clamped = self._validity(new.get("validityTime"))
        new["validityTime"] = format_time(expiry)
        rev = await self.store.put_subscription(sub_id, new)
        self._revs[f"sub/{sub_id}"] = rev
        self._put_sub_local(sub_id, new)
        return new, clamped

    async def unsubscribe(self, sub_id: str) -> None:
        if sub_id not in self._subs:
            raise NotFound(sub_id)
        rev = await self.store.delete_subscription(sub_id)
        self._revs[f"sub/{sub_id}"] = rev
        self._subs.pop(sub_id, None)
        self._sub_expiry.pop(sub_id, None)

    # ------------------------------------------------------------------ local state

    def _put_local(self, nf_id: str, profile: dict) -> None:
        old = self._profiles.get(nf_id)
        if old is not None and old.get("nfType") != profile.get("nfType"):
            self._by_type.get(old.get("nfType"), set()).discard(nf_id)
        self._profiles[nf_id] = profile
        self._by_type.setdefault(profile.get("nfType", ""), set()).add(nf_id)
        self._public_json.pop(nf_id, None)

    def _drop_local(self, nf_id: str) -> None:
        self._suspend_rev.pop(nf_id, None)
        self._removal_claimed.pop(nf_id, None)
        p = self._profiles.pop(nf_id, None)
        if p is not None:
            self._by_type.get(p.get("nfType", ""), set()).discard(nf_id)
        self._suspended_at.pop(nf_id, None)
        self._deadline.pop(nf_id, None)
        self._public_json.pop(nf_id, None)

    def _put_sub_local(self, sub_id: str, data: dict) -> None:
        self._subs[sub_id] = data
        try:
            self._sub_expiry[sub_id] = parse_time(data.get("validityTime", ""))
        except ValueError:
            self._sub_expiry[sub_id] = time.time() + self.settings.subscription_validity_s

    def _changed(self) -> None:
        self.version += 1
        for cb in self._listeners:
            try:
                cb()
            except Exception:  # noqa: BLE001 (a listener must not break the registry)
                log.exception("registry listener failed")

    def _suspend(self, nf_id: str, *, notify: bool = True) -> None:
        if nf_id not in self._profiles or nf_id in self._suspended_at:
            return
        prev = self._profiles[nf_id].get("nfStatus", "REGISTERED")
        self._suspended_at[nf_id] = time.monotonic()
        self._public_json.pop(nf_id, None)
        log.info("NF instance %s SUSPENDED: no heartbeat", nf_id)
        self._changed()
        if notify:
            self._notify("NF_PROFILE_CHANGED", nf_id, changes=[
                {"op": "REPLACE", "path": "/nfStatus", "origValue": prev, "newValue": "SUSPENDED"}
            ])

    # ------------------------------------------------------------------ replicas

    def _on_store_event(self, ev: StoreEvent) -> None:
        """Apply a change made by another replica (or echo of ours, ignored by revision)."""
        prefix = "sub/" if ev.kind.startswith("subscription") else "nf/"
        if ev.kind in ("alive", "dead"):
            prefix = "alive/"
        rk = prefix + ev.key
        if ev.revision and ev.revision <= self._revs.get(rk, 0):
            return
        if ev.revision:
            self._revs[rk] = ev.revision
        if ev.kind == "profile" and ev.value is not None:
            if self._profiles.get(ev.key) != ev.value:
                self._put_local(ev.key, ev.value)
                self._deadline[ev.key] = time.monotonic() + self._ttl()
                self._changed()
        elif ev.kind == "profile_deleted":
            if ev.key in self._profiles:
                self._drop_local(ev.key)
                self._changed()
        elif ev.kind == "alive":
            self._removal_claimed.pop(ev.key, None)
            if self._suspended_at.pop(ev.key, None) is not None:
                self._public_json.pop(ev.key, None)
                self._changed()
        elif ev.kind == "dead":
            if ev.key in self._profiles:
                asyncio.get_running_loop().create_task(self._suspend_claimed(ev.key, ev.revision))
        elif ev.kind == "subscription" and ev.value is not None:
            self._put_sub_local(ev.key, ev.value)
        elif ev.kind == "subscription_deleted":
            self._subs.pop(ev.key, None)
            self._sub_expiry.pop(ev.key, None)

    async def _suspend_claimed(self, nf_id: str, revision: int) -> None:
        """Lease expiry seen by every replica: all suspend, one (the claim winner) notifies."""
        claim = getattr(self.store, "claim", None)
        notify = True
        if claim is not None:
            try:
                notify = await claim(f"suspend/{nf_id}/{revision}")
            except Exception:  # noqa: BLE001
                notify = False
        self._suspend_rev[nf_id] = revision
        self._suspend(nf_id, notify=notify)

    # ------------------------------------------------------------------ timers

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (store down: try again next tick)
                log.exception("registry sweep failed")

    async def sweep(self) -> None:
        """Suspend silent instances, remove long-suspended ones, drop expired subscriptions."""
        now = time.monotonic()
        if not self.store.tracks_liveness:
            for nf_id, deadline in list(self._deadline.items()):
                if now > deadline and nf_id not in self._suspended_at:
                    if self._profiles.get(nf_id, {}).get("nfStatus") == "REGISTERED":
                        self._suspend(nf_id)
        claim = getattr(self.store, "claim", None)
        for nf_id, since in list(self._suspended_at.items()):
            if now - since > self.settings.suspended_removal_s and nf_id in self._profiles:
                if claim is not None:  # replicas: one removes (and notifies), the rest see it
                    if now - self._removal_claimed.get(nf_id, -1e9) < 60.0:
                        continue  # tried lately; the claim's holder is removing it
                    self._removal_claimed[nf_id] = now
                    if not await claim(f"remove/{nf_id}/{self._suspend_rev.get(nf_id, 0)}"):
                        continue
                log.info("NF instance %s removed after %.0f s SUSPENDED", nf_id, now - since)
                await self.deregister(nf_id)
        wall = time.time()
        for sid, exp in list(self._sub_expiry.items()):
            if wall > exp:
                log.info("subscription %s expired", sid)
                try:
                    await self.unsubscribe(sid)
                except NotFound:
                    pass

    # ------------------------------------------------------------------ notifications

    def _notify(self, event: str, nf_id: str, *, profile: dict | None = None,
                changes: list[dict] | None = None) -> None:
        if self.notifier is None or not self._subs:
            return
        p = profile if profile is not None else self._profiles.get(nf_id)
        if p is None:
            return
        body: bytes | None = None
        for sid, sub in self._subs.items():
            if not _sub_wants(sub, event, p):
                continue
            if self._sub_expiry.get(sid, 0) < time.time():
                continue
            if body is None:
                data: dict = {
                    "event": event,
                    "nfInstanceUri": f"{self.settings.api_root}/nnrf-nfm/v1/nf-instances/{nf_id}",
                }
                if changes is not None:
                    data["profileChanges"] = changes
                elif event != "NF_DEREGISTERED":
                    data["nfProfile"] = public_view(p, self.status_of(nf_id))
                body = _encode(data)
            self.notifier.post(sub["nfStatusNotificationUri"], body)


def _heartbeat_patch(cur: dict, ops: object) -> dict | None:
    """The heartbeat fast path: ``replace``/``add`` of /nfStatus, /load, /loadTimeStamp with
    valid values -> the new profile (the same object when nothing changes); None for any other
    patch, which then takes the general path (deep copy, full validation)."""
    if not isinstance(ops, list) or not ops or len(ops) > 3:
        return None
    changes = {}
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("replace", "add") or "value" not in op:
            return None
        path, value = op.get("path"), op["value"]
        if path == "/nfStatus":
            if not isinstance(value, str) or value not in NF_STATUSES:
                return None
        elif path == "/load":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                return None
        elif path == "/loadTimeStamp":
            if not isinstance(value, str):
                return None
        else:
            return None
        key = path[1:]
        if key not in cur and op["op"] == "replace" and key != "nfStatus":
            return None  # replace of an absent member: let the general path report it
        changes[key] = value
    if all(cur.get(k) == v for k, v in changes.items()):
        return cur
    new = dict(cur)
    new.update(changes)
    return new


def _ip(param: str, reason: str) -> InvalidParam:
    return InvalidParam(param, reason)


def _patch_error(exc: PatchError) -> ProfileError:
    """A malformed or inapplicable JSON Patch: 400 INVALID_MSG_FORMAT naming the operation."""
    return ProfileError("INVALID_MSG_FORMAT", f"JSON Patch: {exc}", [_ip(exc.param, exc.reason)])


def _sub_wants(sub: dict, event: str, profile: dict) -> bool:
    events = sub.get("reqNotifEvents")
    if events and event not in events:
        return False
    cond = sub.get("subscrCond")
    if not cond:
        return True
    if "nfInstanceId" in cond:
        return cond["nfInstanceId"].lower() == profile.get("nfInstanceId", "").lower()
    if "nfType" in cond:
        return cond["nfType"] == profile.get("nfType")
    if "serviceName" in cond:
        return any(s.get("serviceName") == cond["serviceName"] for s in services_of(profile))
    if "nfSetId" in cond:
        return cond["nfSetId"] in (profile.get("nfSetIdList") or ())
    return True
