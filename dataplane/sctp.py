"""Kernel SCTP transport on the event loop (uvloop or asyncio), stdlib ``socket`` only.

One-to-one (``SOCK_STREAM``) sockets, one per association, driven by ``loop.add_reader`` /
``add_writer`` (no thread per association).  What the kernel gives through socket options is
used directly:

* stream counts with ``SCTP_INITMSG``; per-message stream id and PPID with ``sendmsg`` /
  ``recvmsg`` ancillary data (``SCTP_SNDRCV`` out, ``SCTP_RCVINFO`` in; the PPID travels in
  network byte order, hence ``htonl``/``ntohl``); message boundaries with ``MSG_EOR``;
* association and peer-address change notifications (``SCTP_EVENT``), read as messages
  flagged ``MSG_NOTIFICATION``: path state per peer address is kept for the metrics, path
  failover itself is the kernel's;
* ``SCTP_NODELAY``, heartbeat interval (``SCTP_PEER_ADDR_PARAMS``) and RTO bounds
  (``SCTP_RTOINFO``) from ``SctpParams``;
* multi-homing: several local addresses (bind + ``SCTP_SOCKOPT_BINDX_ADD``) and several peer
  addresses (``SCTP_SOCKOPT_CONNECTX``).

The module knows no NGAP: a message is (bytes, stream, ppid).  Bounded costs: a message larger
than ``max_message`` is discarded whole (counted), the send queue of a slow peer is bounded by
``max_send_queue`` bytes (``send`` returns False beyond it), and one readable event reads at
most ``reads_per_event`` messages.

Kernels without SCTP (errno 93, EPROTONOSUPPORT) are detected by ``sctp_available``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
# socket options (linux/sctp.h)
SCTP_RTOINFO = 0
SCTP_INITMSG = 2
SCTP_NODELAY = 3
SCTP_PEER_ADDR_PARAMS = 9
SCTP_EVENTS = 11
SCTP_STATUS = 14
SCTP_RECVRCVINFO = 32
SCTP_SOCKOPT_BINDX_ADD = 100
SCTP_GET_PEER_ADDRS = 108
SCTP_GET_LOCAL_ADDRS = 109
SCTP_SOCKOPT_CONNECTX = 110
SCTP_EVENT = 127
# cmsg types
SCTP_SNDRCV = 1
SCTP_RCVINFO = 3
MSG_NOTIFICATION = 0x8000
MSG_EOR = getattr(socket, "MSG_EOR", 0x80)
# notification types
SCTP_ASSOC_CHANGE = 0x8001
SCTP_PEER_ADDR_CHANGE = 0x8002
SCTP_SHUTDOWN_EVENT = 0x8005
SPP_HB_ENABLE = 1

ASSOC_STATES = {0: "comm_up", 1: "comm_lost", 2: "restart", 3: "shutdown_comp",
                4: "cant_start"}
PATH_STATES = {0: "available", 1: "unreachable", 2: "removed", 3: "added",
               4: "made_primary", 5: "confirmed", 6: "potentially_failed"}


class SctpUnavailable(OSError):
    """The kernel has no SCTP (errno 93) or it is not permitted here."""


def sctp_available() -> tuple[bool, str]:
    """(True, "") when this kernel opens SCTP sockets, else (False, a plain reason)."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError as exc:
        if exc.errno == errno.EPROTONOSUPPORT:
            return False, ("this kernel has no SCTP (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) "
                           "fails with errno 93, EPROTONOSUPPORT); run N2 in the VM: "
                           "scripts/sctp_vm.py")
        return False, f"cannot open an SCTP socket: {exc}"
    s.close()
    return True, ""


@dataclass(frozen=True, slots=True)
class SctpParams:
    """Per-socket SCTP settings (0 leaves the kernel's default)."""

    out_streams: int = 16
    in_streams: int = 16
    max_init_attempts: int = 0
    nodelay: bool = True
    heartbeat_interval_ms: int = 0
    path_max_retrans: int = 0  # retransmissions before a peer address is marked unreachable
    rto_initial_ms: int = 0
    rto_min_ms: int = 0
    rto_max_ms: int = 0
    max_message: int = 65536  # larger inbound messages are discarded whole
    max_send_queue: int = 4 << 20  # bytes queued toward a slow peer before send() refuses
    reads_per_event: int = 64
    backlog: int = 128


class SctpHandler(Protocol):
    """Receives what happens on one association (set as ``assoc.handler``)."""

    def on_message(self, assoc: SctpAssociation, data: bytes, stream: int, ppid: int) -> None: ...

    def on_event(self, assoc: SctpAssociation, kind: str, detail: dict) -> None:
        """``kind``: "assoc_change" (detail: state, in/out streams) or "path_change"
        (detail: address, state)."""

    def on_closed(self, assoc: SctpAssociation, exc: BaseException | None) -> None: ...


def _sockaddr(host: str, port: int) -> bytes:
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + b"\0" * 8
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + ip.packed
            + struct.pack("=I", 0))


def _parse_sockaddr(raw: bytes) -> tuple[str, int, int]:
    """-> (host, port, size) of one packed sockaddr_in / sockaddr_in6."""
    (family,) = struct.unpack_from("=H", raw, 0)
    (port,) = struct.unpack_from("!H", raw, 2)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port, 16
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, 28
    raise ValueError(f"address family {family}")


def _family(addresses: list[str]) -> int:
    return (socket.AF_INET6 if any(ipaddress.ip_address(a).version == 6 for a in addresses)
            else socket.AF_INET)


def sndrcvinfo(stream: int, ppid: int) -> bytes:
    """struct sctp_sndrcvinfo with the stream id and the PPID (network byte order)."""
    return struct.pack("=HHHxxIIIIIi", stream, 0, 0, socket.htonl(ppid), 0, 0, 0, 0, 0)


def new_socket(addresses: list[str], params: SctpParams) -> socket.socket:
    """An SCTP one-to-one socket with ``params`` applied (non-blocking)."""
    try:
        s = socket.socket(_family(addresses), socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError as exc:
        if exc.errno == errno.EPROTONOSUPPORT:
            raise SctpUnavailable(exc.errno, sctp_available()[1]) from exc
        raise
    try:
        s.setsockopt(IPPROTO_SCTP, SCTP_INITMSG, struct.pack(
            "=HHHH", params.out_streams, params.in_streams, params.max_init_attempts, 0))
        s.setsockopt(IPPROTO_SCTP, SCTP_RECVRCVINFO, 1)
        s.setsockopt(IPPROTO_SCTP, SCTP_NODELAY, 1 if params.nodelay else 0)
        for kind in (SCTP_ASSOC_CHANGE, SCTP_PEER_ADDR_CHANGE, SCTP_SHUTDOWN_EVENT):
            s.setsockopt(IPPROTO_SCTP, SCTP_EVENT, struct.pack("=iHBx", 0, kind, 1))
        if params.rto_initial_ms or params.rto_min_ms or params.rto_max_ms:
            s.setsockopt(IPPROTO_SCTP, SCTP_RTOINFO, struct.pack(
                "=iIII", 0, params.rto_initial_ms, params.rto_max_ms, params.rto_min_ms))
        if params.heartbeat_interval_ms or params.path_max_retrans:
            # struct sctp_paddrparams up to spp_flags (the size the kernel accepts as "old")
            s.setsockopt(IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, struct.pack(
                "=i128sIHIIIxx", 0, b"", params.heartbeat_interval_ms, params.path_max_retrans,
                0, 0, SPP_HB_ENABLE if params.heartbeat_interval_ms else 0))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def bind_all(s: socket.socket, addresses: list[str], port: int) -> None:
    """Bind the first address, add the others with bindx (multi-homing)."""
    s.bind((addresses[0], port))
    if len(addresses) > 1:
        real_port = s.getsockname()[1]
        s.setsockopt(IPPROTO_SCTP, SCTP_SOCKOPT_BINDX_ADD,
                     b"".join(_sockaddr(a, real_port) for a in addresses[1:]))


def _addr_list(s: socket.socket, opt: int) -> list[str]:
    try:
        raw = s.getsockopt(IPPROTO_SCTP, opt, 8 + 28 * 16)
    except OSError:
        return []
    (num,) = struct.unpack_from("=I", raw, 4)
    out, pos = [], 8
    for _ in range(num):
        host, _port, size = _parse_sockaddr(raw[pos:])
        out.append(host)
        pos += size
    return out


class SctpAssociation:
    """One association on a one-to-one socket, registered with the loop."""

    def __init__(self, sock: socket.socket, handler: SctpHandler | None, params: SctpParams,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.handler = handler
        self.params = params
        self.loop = loop or asyncio.get_running_loop()
        self.closed = False
        self.messages_in = self.messages_out = 0
        self.bytes_in = self.bytes_out = 0
        self.discarded_oversize = 0
        self.send_refused = 0
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queued = 0
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._discarding = False
        self.in_streams, self.out_streams = self._status()
        self.peer_addresses: dict[str, str] = {a: "available" for a in
                                               _addr_list(sock, SCTP_GET_PEER_ADDRS)}
        self.local_addresses = _addr_list(sock, SCTP_GET_LOCAL_ADDRS)
        self.loop.add_reader(self.fd, self._on_readable)

    def _status(self) -> tuple[int, int]:
        try:
            st = self.sock.getsockopt(IPPROTO_SCTP, SCTP_STATUS, 256)
            _aid, _state, _rwnd, _unack, _pend, ins, outs = struct.unpack_from("=iiIHHHH", st)
            return ins, outs
        except OSError:
            return self.params.in_streams, self.params.out_streams

    @property
    def queued_bytes(self) -> int:
        return self._queued

    def send(self, data: bytes, stream: int, ppid: int) -> bool:
        """Send one message on ``stream`` with ``ppid``; False if closed or the queue is full."""
        if self.closed:
            return False
        if stream >= self.out_streams:
            stream = stream % max(1, self.out_streams)
        anc = sndrcvinfo(stream, ppid)
        if not self._queue:
            try:
                self.sock.sendmsg([data], [(IPPROTO_SCTP, SCTP_SNDRCV, anc)])
                self.messages_out += 1
                self.bytes_out += len(data)
                return True
            except (BlockingIOError, InterruptedError):
                self.loop.add_writer(self.fd, self._on_writable)
            except OSError as exc:
                self._lost(exc)
                return False
        if self._queued + len(data) > self.params.max_send_queue:
            self.send_refused += 1
            return False
        self._queue.append((data, anc))
        self._queued += len(data)
        return True

    def _on_writable(self) -> None:
        while self._queue:
            data, anc = self._queue[0]
            try:
                self.sock.sendmsg([data], [(IPPROTO_SCTP, SCTP_SNDRCV, anc)])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(exc)
                return
            self._queue.popleft()
            self._queued -= len(data)
            self.messages_out += 1
            self.bytes_out += len(data)
        self.loop.remove_writer(self.fd)

    def _on_readable(self) -> None:
        for _ in range(self.params.reads_per_event):
            if self.closed:
                return
            try:
                data, anc, flags, _addr = self.sock.recvmsg(
                    self.params.max_message + 1, socket.CMSG_SPACE(64))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(exc)
                return
            if not data and not flags:
                self._lost(None)  # orderly SHUTDOWN from the peer
                return
            if flags & MSG_NOTIFICATION:
                self._notification(data)
                continue
            if not flags & MSG_EOR:  # part of a larger message
                self._partial_size += len(data)
                if self._partial_size > self.params.max_message:
                    self._discarding = True
                    self._partial.clear()
                elif not self._discarding:
                    self._partial.append(data)
                continue
            if self._partial or self._discarding:
                discarding = self._discarding or (
                    self._partial_size + len(data) > self.params.max_message)
                self._partial.append(data)
                data = b"".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
                self._discarding = False
                if discarding:
                    self.discarded_oversize += 1
                    continue
            elif len(data) > self.params.max_message:
                self.discarded_oversize += 1
                continue
            stream = ppid = 0
            for level, kind, info in anc:
                if level == IPPROTO_SCTP and kind == SCTP_RCVINFO and len(info) >= 8:
                    stream, _ssn, _flags, raw_ppid = struct.unpack_from("=HHHxxI", info)
                    ppid = socket.ntohl(raw_ppid)
            self.messages_in += 1
            self.bytes_in += len(data)
            if self.handler is not None:
                self.handler.on_message(self, data, stream, ppid)

    def _notification(self, data: bytes) -> None:
        if len(data) < 8:
            return
        kind, _flags, _length = struct.unpack_from("=HHI", data)
        if kind == SCTP_ASSOC_CHANGE and len(data) >= 20:
            _k, _f, _l, state, error, outs, ins, _aid = struct.unpack_from("=HHIHHHHi", data)
            name = ASSOC_STATES.get(state, str(state))
            if state in (0, 2):
                self.in_streams, self.out_streams = ins, outs
            if self.handler is not None:
                self.handler.on_event(self, "assoc_change", {
                    "state": name, "error": error, "in_streams": ins, "out_streams": outs})
            if state in (1, 3):
                self._lost(ConnectionResetError(f"association {name}"))
        elif kind == SCTP_PEER_ADDR_CHANGE and len(data) >= 8 + 128 + 8:
            try:
                host, _port, _size = _parse_sockaddr(data[8:136])
            except ValueError:
                return
            state, error = struct.unpack_from("=ii", data, 136)
            name = PATH_STATES.get(state, str(state))
            if name == "removed":
                self.peer_addresses.pop(host, None)
            else:
                self.peer_addresses[host] = (
                    "available" if name in ("added", "made_primary", "confirmed") else name)
            if self.handler is not None:
                self.handler.on_event(self, "path_change", {"address": host, "state": name,
                                                            "error": error})
        elif kind == SCTP_SHUTDOWN_EVENT:
            if self.handler is not None:
                self.handler.on_event(self, "shutdown", {})

    def _lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self._teardown()
        if self.handler is not None:
            self.handler.on_closed(self, exc)

    def _teardown(self) -> None:
        self.closed = True
        try:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
        except Exception:  # loop already closed
            pass
        self._queue.clear()
        self._queued = 0
        self.sock.close()

    def close(self) -> None:
        """Graceful SHUTDOWN (queued messages are sent by the kernel first); on_closed follows."""
        if self.closed:
            return
        if self._queue:  # flush what we still hold, blocking is not an option: best effort
            self._on_writable()
        self._lost(None)

    def abort(self) -> None:
        """ABORT the association now (SO_LINGER 0)."""
        if self.closed:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._lost(None)

    def info(self) -> dict:
        return {"peer_addresses": dict(self.peer_addresses), "local": list(self.local_addresses),
                "in_streams": self.in_streams, "out_streams": self.out_streams,
                "messages_in": self.messages_in, "messages_out": self.messages_out,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "queued_bytes": self._queued, "discarded_oversize": self.discarded_oversize,
                "send_refused": self.send_refused}


async def connect(addresses: list[str], port: int, handler: SctpHandler | None,
                  params: SctpParams = SctpParams(), local_addresses: list[str] | None = None,
                  timeout: float = 10.0) -> SctpAssociation:
    """Open an association to a (multi-homed) peer; returns once it is up."""
    loop = asyncio.get_running_loop()
    s = new_socket(list(addresses) + list(local_addresses or []), params)
    try:
        if local_addresses:
            bind_all(s, local_addresses, 0)
        waiter: asyncio.Future[None] = loop.create_future()
        try:
            if len(addresses) == 1:
                s.connect((addresses[0], port))
            else:
                s.setsockopt(IPPROTO_SCTP, SCTP_SOCKOPT_CONNECTX,
                             b"".join(_sockaddr(a, port) for a in addresses))
            waiter.set_result(None)
        except (BlockingIOError, InterruptedError):
            loop.add_writer(s.fileno(), lambda: waiter.done() or waiter.set_result(None))
        except OSError as exc:
            if exc.errno != errno.EINPROGRESS:
                raise
            loop.add_writer(s.fileno(), lambda: waiter.done() or waiter.set_result(None))
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            loop.remove_writer(s.fileno())
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"SCTP connect to {addresses}:{port}: {errno.errorcode.get(err)}")
        return SctpAssociation(s, handler, params, loop)
    except BaseException:
        s.close()
        raise


@dataclass(slots=True)
class SctpListener:
    """A listening one-to-one socket; each accepted association gets a handler from
    ``on_accept`` (which may return None to refuse it)."""

    sock: socket.socket
    on_accept: Callable[[SctpAssociation], SctpHandler | None]
    params: SctpParams
    loop: asyncio.AbstractEventLoop
    accepted: int = 0
    closed: bool = False

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _on_readable(self) -> None:
        for _ in range(16):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            assoc = SctpAssociation(conn, None, self.params, self.loop)
            handler = self.on_accept(assoc)
            if handler is None:
                assoc.abort()
                continue
            assoc.handler = handler
            self.accepted += 1

    def close(self) -> None:
        """Stop accepting (established associations stay; close them through their owner)."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def adopt_listener(sock: socket.socket,
                   on_accept: Callable[[SctpAssociation], SctpHandler | None],
                   params: SctpParams = SctpParams()) -> SctpListener:
    """Serve an SCTP socket that is already bound and listening (one made by ``new_socket``
    in another network namespace, say) on the running loop."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    listener = SctpListener(sock, on_accept, params, asyncio.get_running_loop())
    loop.add_reader(sock.fileno(), listener._on_readable)
    return listener


async def listen(addresses: list[str], port: int,
                 on_accept: Callable[[SctpAssociation], SctpHandler | None],
                 params: SctpParams = SctpParams()) -> SctpListener:
    """Listen on ``addresses`` (all bound to one socket: multi-homed) and ``port``."""
    s = new_socket(addresses, params)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind_all(s, addresses, port)
        s.listen(params.backlog)
    except BaseException:
        s.close()
        raise
    return adopt_listener(s, on_accept, params)
