"""The replicated registry store on etcd (v3 API over gRPC, through ``etcd3aio``).

Key layout under ``prefix``:

* ``nf/<nfInstanceId>``: the NFProfile (JSON), no lease: a profile outlives its heartbeats;
* ``alive/<nfInstanceId>``: the instance's liveness, attached to a lease of TTL
  ``heartBeatTimer + grace``; its value is the lease id.  A heartbeat is one lease keep-alive.
  When heartbeats stop, etcd expires the lease and deletes the key; every replica's watch sees
  the delete and marks the instance SUSPENDED (one replica, which wins a ``claim``, notifies);
* ``sub/<subscriptionId>``: a subscription (JSON);
* ``claim/<event>``: create-once keys (short lease) that elect the one replica that sends a
  notification for an event all replicas observe.

A registration writes ``nf/`` and ``alive/`` in one transaction, a deregistration deletes both
in one: nothing is half-written.  Every call has a deadline (``timeout_s``) and one attempt;
a failure raises ``StoreError`` (the API answers 503) and the registry's state is unchanged.
Replicas apply each other's changes from one prefix watch, started at the revision they loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import msgspec

from gateway.registry.store import StoreContents, StoreError, StoreEvent

log = logging.getLogger(__name__)

CLAIM_TTL_S = 60
_encode = msgspec.json.Encoder().encode


class _KeepAliveStream:
    """One long-lived ``LeaseKeepAlive`` stream shared by all heartbeats.

    etcd answers each keep-alive request on the stream with the lease's new TTL (0 when the
    lease is gone); a heartbeat waits for the answer to its lease id.  Opening a stream per
    heartbeat costs several times more (gRPC call setup).  If the stream breaks, waiting
    heartbeats fail (-> 503) and the next one opens a new stream."""

    def __init__(self, lease_service) -> None:
        self._svc = lease_service
        self._queue: asyncio.Queue[int | None] = asyncio.Queue()
        self._waiters: dict[int, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None

    def _start(self) -> None:
        from etcd3aio._protobuf import LeaseKeepAliveRequest  # noqa: PLC0415

        queue = self._queue

        async def requests():
            while True:
                lease_id = await queue.get()
                if lease_id is None:
                    return
                yield LeaseKeepAliveRequest(ID=lease_id)

        call = self._svc._stub.LeaseKeepAlive(requests(), metadata=self._svc._metadata or None)
        self._task = asyncio.create_task(self._read(call), name="etcd-lease-keepalive")

    async def _read(self, call) -> None:
        error: BaseException = ConnectionError("etcd keep-alive stream ended")
        try:
            async for resp in call:
                for fut in self._waiters.pop(int(resp.ID), ()):
                    if not fut.done():
                        fut.set_result(int(resp.TTL))
        except asyncio.CancelledError:
            error = ConnectionError("etcd keep-alive stream closed")
            raise
        except Exception as exc:  # noqa: BLE001
            error = exc
        finally:
            call.cancel()
            waiters, self._waiters = self._waiters, {}
            for futs in waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(error)
            self._queue = asyncio.Queue()

    async def keepalive(self, lease_id: int, timeout: float) -> int:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._start()
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease_id, []).append(fut)
        self._queue.put_nowait(lease_id)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            lst = self._waiters.get(lease_id)
            if lst is not None and fut in lst:
                lst.remove(fut)
                if not lst:
                    del self._waiters[lease_id]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


class EtcdStore:
    """``RegistryStore`` on etcd; see the module docstring for the key layout."""

    tracks_liveness = True

    def __init__(self, endpoints: list[str], prefix: str = "/nfmesh/registry", *,
                 timeout_s: float = 2.0) -> None:
        from etcd3aio import Etcd3Client  # noqa: PLC0415 (grpc only when etcd is used)

        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self._client = Etcd3Client(endpoints, rpc_max_attempts=1,
                                   watch_reconnect_backoff_seconds=0.1,
                                   watch_max_reconnect_backoff_seconds=2.0)
        self._listener: Callable[[StoreEvent], None] | None = None
        self._watch_task: asyncio.Task | None = None
        self._leases: dict[str, int] = {}
        self._connected = False
        self._ka: _KeepAliveStream | None = None

    # ------------------------------------------------------------------ helpers

    def _k(self, kind: str, key: str) -> bytes:
        return f"{self.prefix}{kind}/{key}".encode()

    async def _call(self, what: str, coro):
        try:
            return await asyncio.wait_for(coro, self.timeout_s + 0.5)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (grpc/etcd errors of every kind)
            raise StoreError(f"etcd {what} failed ({type(exc).__name__}: {str(exc)[:200]})") from exc

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> StoreContents:
        from etcd3aio import prefix_range_end  # noqa: PLC0415

        await self._client.connect()
        self._connected = True
        resp = await self._call("range", self._client.kv.get(
            self.prefix.encode(), prefix_range_end(self.prefix.encode()), timeout=self.timeout_s))
        out = StoreContents(alive=set(), revision=resp.header.revision)
        for kv in resp.kvs:
            ev = self._event(kv.key, kv.value, kv.mod_revision, deleted=False)
            if ev is None:
                continue
            if ev.kind == "profile" and ev.value is not None:
                out.profiles[ev.key] = ev.value
            elif ev.kind == "subscription" and ev.value is not None:
                out.subscriptions[ev.key] = ev.value
            elif ev.kind == "alive":
                assert out.alive is not None
                out.alive.add(ev.key)
        self._watch_task = asyncio.create_task(self._watch(out.revision + 1), name="etcd-registry-watch")
        return out

    async def ping(self) -> None:
        """One read of the registry's prefix key: raises ``StoreError`` when etcd does not
        answer (the admin API's readiness check)."""
        await self._call("ping", self._client.kv.get(self.prefix.encode(), timeout=self.timeout_s))

    async def close(self) -> None:
        if self._ka is not None:
            await self._ka.close()
            self._ka = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        if self._connected:
            await self._client.close()
            self._connected = False

    def set_listener(self, listener: Callable[[StoreEvent], None]) -> None:
        self._listener = listener

    # ------------------------------------------------------------------ watch

    def _event(self, key: bytes, value: bytes, rev: int, *, deleted: bool) -> StoreEvent | None:
        k = key.decode("utf-8", "replace")
        if not k.startswith(self.prefix):
            return None
        kind, _, ident = k[len(self.prefix):].partition("/")
        if not ident:
            return None
        if kind == "alive":
            if deleted:
                self._leases.pop(ident, None)
                return StoreEvent("dead", ident, None, rev)
            with contextlib.suppress(ValueError):
                self._leases[ident] = int(value or b"0")
            return StoreEvent("alive", ident, None, rev)
        if kind in ("nf", "sub"):
            name = "profile" if kind == "nf" else "subscription"
            if deleted:
                return StoreEvent(name + "_deleted", ident, None, rev)
            try:
                obj = json.loads(value)
            except ValueError:
                log.warning("etcd registry: unreadable value at %s", k)
                return None
            return StoreEvent(name, ident, obj, rev)
        return None

    async def _watch(self, start_revision: int) -> None:
        from etcd3aio import prefix_range_end  # noqa: PLC0415

        p = self.prefix.encode()
        while True:
            try:
                async for resp in self._client.watch.watch(p, prefix_range_end(p),
                                                           start_revision=start_revision):
                    for e in resp.events:
                        ev = self._event(e.kv.key, e.kv.value, e.kv.mod_revision, deleted=e.type == 1)
                        if ev is not None and self._listener is not None:
                            self._listener(ev)
                        start_revision = max(start_revision, e.kv.mod_revision + 1)
                    if resp.compact_revision:
                        start_revision = max(start_revision, resp.compact_revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (keep watching through outages)
                log.warning("etcd registry watch interrupted: %r; retrying", exc)
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ leases

    async def _keepalive(self, lease_id: int) -> int:
        """One keep-alive; returns the remaining TTL (<= 0: the lease is gone)."""
        if self._ka is None:
            self._ka = _KeepAliveStream(self._client.lease)
        return await self._ka.keepalive(lease_id, self.timeout_s)

    async def _grant(self, ttl_s: int) -> int:
        resp = await self._client.lease.grant(max(1, ttl_s), timeout=self.timeout_s)
        return int(resp.ID)

    # ------------------------------------------------------------------ writes

    async def put_profile(self, nf_id: str, profile: dict, ttl_s: int) -> int:
        async def run() -> int:
            lease = self._leases.get(nf_id)
            if lease is None or await self._keepalive(lease) <= 0:
                lease = await self._grant(ttl_s)
            kv = self._client.kv
            resp = await kv.txn([], [
                kv.txn_op_put(self._k("nf", nf_id), _encode(profile)),
                kv.txn_op_put(self._k("alive", nf_id), str(lease), lease=lease),
            ], timeout=self.timeout_s)
            self._leases[nf_id] = lease
            return int(resp.header.revision)

        return await self._call("put profile", run())

    async def heartbeat(self, nf_id: str, ttl_s: int) -> int:
        async def run() -> int:
            lease = self._leases.get(nf_id)
            if lease is not None and await self._keepalive(lease) > 0:
                return 0
            lease = await self._grant(ttl_s)  # expired (SUSPENDED): a new lease revives it
            kv = self._client.kv
            resp = await kv.txn([kv.txn_compare_create_revision(self._k("nf", nf_id), 0,
                                                                result=_not_equal())],
                                [kv.txn_op_put(self._k("alive", nf_id), str(lease), lease=lease)],
                                timeout=self.timeout_s)
            if not resp.succeeded:
                raise StoreError(f"NF instance {nf_id} vanished from etcd", "NF_CONGESTION")
            self._leases[nf_id] = lease
            return int(resp.header.revision)

        return await self._call("heartbeat", run())

    async def delete_profile(self, nf_id: str) -> int:
        async def run() -> int:
            kv = self._client.kv
            resp = await kv.txn([], [kv.txn_op_delete(self._k("nf", nf_id)),
                                     kv.txn_op_delete(self._k("alive", nf_id))],
                                timeout=self.timeout_s)
            lease = self._leases.pop(nf_id, None)
            if lease is not None:
                with contextlib.suppress(Exception):
                    await self._client.lease.revoke(lease, timeout=self.timeout_s)
            return int(resp.header.revision)

        return await self._call("delete profile", run())

    async def put_subscription(self, sub_id: str, data: dict) -> int:
        resp = await self._call("put subscription", self._client.kv.put(
            self._k("sub", sub_id), _encode(data), timeout=self.timeout_s))
        return int(resp.header.revision)

    async def delete_subscription(self, sub_id: str) -> int:
        resp = await self._call("delete subscription", self._client.kv.delete(
            self._k("sub", sub_id), timeout=self.timeout_s))
        return int(resp.header.revision)

    async def claim(self, name: str) -> bool:
        """True for exactly one caller per ``name`` (within ``CLAIM_TTL_S``) across replicas."""
        async def run() -> bool:
            lease = await self._grant(CLAIM_TTL_S)
            kv = self._client.kv
            key = self._k("claim", name)
            resp = await kv.txn([kv.txn_compare_create_revision(key, 0)],
                                [kv.txn_op_put(key, b"1", lease=lease)], timeout=self.timeout_s)
            if not resp.succeeded:
                with contextlib.suppress(Exception):
                    await self._client.lease.revoke(lease, timeout=self.timeout_s)
            return bool(resp.succeeded)

        return await self._call("claim", run())


def _not_equal() -> int:
    from etcd3aio._protobuf import Compare  # noqa: PLC0415

    return Compare.NOT_EQUAL
