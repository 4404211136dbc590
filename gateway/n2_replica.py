"""Replicated N2 UE state on etcd: several N2 proxy replicas, no established UE lost when one dies.

Design (issue 17, item 1).  What must survive a replica is, per established UE, what routing
needs and no message carries: the gNB's RAN UE NGAP ID and stream on one side, the AMF (by
its configured name, the same on every replica), the AMF's UE NGAP ID, and the two ids the
gateway allocated.  The router (``NgapRouter.replicate``) hands such a record over when the
AMF's first message makes a UE established, and ``None`` when the UE is released; nothing is
written per NAS message.  Ids are made replica-proof rather than shared: each replica
allocates in its own range (replica number in the top 8 bits of both ids), so replicas need
no coordination per UE and an adopted UE never collides with a local one.  All replicas run
NG Setup toward each AMF with the same Global gNB ID: to the AMF they are several TNL
associations of one gNB (TS 38.412 §7 allows several), so the loss of one is not the loss
of its UEs.

This module puts the records on etcd (the registry's store already): key
``<prefix>/ue/<Global RAN Node ID>/<RAN UE NGAP ID>``, value ``[replica, AMF name, AMF UE id,
gateway RAN UE id, gateway AMF UE id, gNB stream, AMF stream]`` (JSON), attached to a lease
of the writing replica (``ttl_s``: records of a replica that died and whose gNBs never came
back go away with its lease).  Writes are batched (write-behind, one transaction per
``flush_interval_s`` at most, 128 operations each): the InitialUEMessage path never waits on
etcd, and a UE established within the last flush interval before a crash is the only kind
that can be lost.  A prefix watch feeds the other replicas' records into the router's
``standby``; when a gNB reconnects to this replica and runs NG Setup, the router adopts its
records and rewrites them as its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from nf_adapters.ngap.ngap_router import NgapRouter, UeRecord

log = logging.getLogger("nfmesh.n2.replica")

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list).decode


class EtcdUeReplica:
    """Shares one router's UE records with the other replicas through etcd."""

    def __init__(self, router: NgapRouter, endpoints: list[str], prefix: str = "/nfmesh/n2",
                 *, ttl_s: int = 30, flush_interval_s: float = 0.01,
                 timeout_s: float = 2.0) -> None:
        if router.replica is None:
            raise ValueError("the router needs a replica number (its id range)")
        self.router = router
        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/") + "/ue/"
        self.ttl_s = ttl_s
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.stats = {"records_written": 0, "records_deleted": 0, "transactions": 0,
                      "write_failures": 0, "records_received": 0}
        self._pending: dict[str, UeRecord | None] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task] = []
        self._client = None
        self._lease = 0

    async def start(self) -> EtcdUeReplica:
        from etcd3aio import Etcd3Client, prefix_range_end  # noqa: PLC0415 (grpc on demand)

        self._client = Etcd3Client(self.endpoints, rpc_max_attempts=1,
                                   watch_reconnect_backoff_seconds=0.1,
                                   watch_max_reconnect_backoff_seconds=2.0)
        await self._client.connect()
        resp = await self._client.lease.grant(self.ttl_s, timeout=self.timeout_s)
        self._lease = int(resp.ID)
        p = self.prefix.encode()
        resp = await self._client.kv.get(p, prefix_range_end(p), timeout=self.timeout_s)
        for kv in resp.kvs:
            self._apply(kv.key, kv.value, deleted=False)
        self.router.replicate = self.changed
        self._tasks = [asyncio.create_task(self._watch(resp.header.revision + 1)),
                       asyncio.create_task(self._flush_loop()),
                       asyncio.create_task(self._keepalive())]
        return self

    async def close(self) -> None:
        self.router.replicate = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()

    # ---- from the router ----------------------------------------------------------------

    def changed(self, key: str, record: UeRecord | None) -> None:
        self._pending[key] = record
        self._idle.clear()
        self._wake.set()

    async def flushed(self, timeout: float = 5.0) -> None:
        """Wait until every change handed over so far is in etcd."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _flush_loop(self) -> None:
        assert self._client is not None
        kv = self._client.kv
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.flush_interval_s)
            batch, self._pending = self._pending, {}
            items = list(batch.items())
            try:
                for i in range(0, len(items), MAX_TXN_OPS):
                    ops = []
                    for key, rec in items[i:i + MAX_TXN_OPS]:
                        k = (self.prefix + key).encode()
                        if rec is None:
                            ops.append(kv.txn_op_delete(k))
                        else:
                            ops.append(kv.txn_op_put(
                                k, _encode([self.router.replica, *rec]), lease=self._lease))
                    await kv.txn([], ops, timeout=self.timeout_s)
                    self.stats["transactions"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (etcd unreachable: keep them, retry)
                self.stats["write_failures"] += 1
                log.warning("N2 UE records not written to etcd (%r); retrying", exc)
                for key, rec in batch.items():
                    self._pending.setdefault(key, rec)
                self._wake.set()
                await asyncio.sleep(0.5)
                continue
            for rec in batch.values():
                self.stats["records_written" if rec is not None else "records_deleted"] += 1
            if not self._pending:
                self._idle.set()

    async def _keepalive(self) -> None:
        from gateway.registry.etcd_store import _KeepAliveStream  # noqa: PLC0415

        assert self._client is not None
        stream = _KeepAliveStream(self._client.lease)
        while True:
            await asyncio.sleep(max(0.5, self.ttl_s / 3))
            try:
                ttl = await stream.keepalive(self._lease, self.timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("N2 replica lease keep-alive failed: %r", exc)
                continue
            if ttl <= 0:  # lost (etcd was away too long): a new lease, every record again
                resp = await self._client.lease.grant(self.ttl_s, timeout=self.timeout_s)
                self._lease = int(resp.ID)
                for ue in self.router.established():
                    self.changed(*ue)

    # ---- from the other replicas -----------------------------------------------------------

    def _apply(self, key: bytes, value: bytes, *, deleted: bool) -> None:
        name = key.decode()[len(self.prefix):]
        if deleted:
            self.router.standby_update(name, None)
            return
        try:
            rec = _decode(value)
        except msgspec.DecodeError:
            return
        if rec and rec[0] != self.router.replica:
            self.stats["records_received"] += 1
            self.router.standby_update(name, tuple(rec[1:]))  # type: ignore[arg-type]

    async def _watch(self, start_revision: int) -> None:
        from etcd3aio import prefix_range_end  # noqa: PLC0415

        assert self._client is not None
        p = self.prefix.encode()
        while True:
            try:
                async for resp in self._client.watch.watch(p, prefix_range_end(p),
                                                           start_revision=start_revision):
                    for e in resp.events:
                        self._apply(e.kv.key, e.kv.value, deleted=e.type == 1)
                        start_revision = max(start_revision, e.kv.mod_revision + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (keep watching through outages)
                log.warning("N2 replica watch interrupted: %r; retrying", exc)
                await asyncio.sleep(0.5)


async def _serve(args) -> None:
    from gateway.n2 import AmfEndpointSettings, AmfPoolSettings, N2Service, N2Settings

    eps = []
    for spec in args.amf:
        host, _, port = spec.rpartition(":")
        eps.append(AmfEndpointSettings((host,), int(port)))
    settings = N2Settings(listen=tuple(args.listen), port=args.port, replica=args.replica,
                          replication_etcd=tuple(args.etcd), replication_prefix=args.prefix,
                          heartbeat_interval_ms=1000, rto_min_ms=100, rto_max_ms=1000,
                          amf_pools=(AmfPoolSettings("pool", tuple(eps)),))
    service = await N2Service(settings).start()
    while sum(a.state == "up" for a in service.router.amfs) < len(eps):
        await asyncio.sleep(0.05)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as fh:
            fh.write(str(service.port))
        import os  # noqa: PLC0415

        os.replace(args.port_file + ".tmp", args.port_file)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """One N2 proxy replica (for the VM test and perf): ``python -m gateway.n2_replica
    --replica 1 --amf 127.0.0.1:38413 --etcd 127.0.0.1:2379 --port-file /tmp/port``."""
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(description="one N2 proxy replica sharing UE records on etcd")
    ap.add_argument("--replica", type=int, required=True)
    ap.add_argument("--listen", action="append", default=None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--amf", action="append", required=True, help="host:port")
    ap.add_argument("--etcd", action="append", default=[])
    ap.add_argument("--prefix", default="/nfmesh/n2")
    ap.add_argument("--port-file", default="")
    args = ap.parse_args(argv)
    args.listen = args.listen or ["127.0.0.1"]
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
