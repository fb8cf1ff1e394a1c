"""A connection-level front before a node's gRPC server: what a flooding peer costs is decided before gRPC (and before
TLS) does any work for it.

Issue 34: a certified board opening calls as fast as it could, each refused unread, made honest rounds ~3x slower,
because gRPC's own per-call work (~900 refused calls a second on 4 connections) and the TLS handshakes (~280 a second
with a new connection a call) ran before any of FedIoT's code could refuse. The front is a TCP relay on the node's
address (TLS stays end to end: the gRPC server behind it, on a loopback port, still does the mutual TLS and reads the
rank from the certificate). It limits, per source host:

* connections held at once and new connections (a token bucket), each scaled by the number of ranks the address book
  places on that host (a loopback trial runs every board on 127.0.0.1; a host the book does not name gets one rank's
  share). A connection over the limit is held unread for a while and closed (a tarpit, at most `TARPIT_PER_HOST` a
  host, beyond that closed at once): its TLS handshake never starts;
* how fast a connection is read after a refusal: each call the node refuses pauses reading its connection, twice as
  long as the last time (`pause_first_s` doubling up to `pause_max_s`), until one of its messages is taken. A paused
  connection costs nothing: its bytes wait in the sender's socket. HTTP/2 lets a connection have at most
  `grpc_transport.STREAMS_PER_CONNECTION` calls open, so a flooder gets a couple of refusals per pause and connection.

The front runs its own asyncio loop on a daemon thread; the gRPC servicer tells it about refusals (`penalise`) and
taken messages (`forgive`) by the backend peer string gRPC reports, which names the front's own outgoing port.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("fediot.front")

READ_BYTES = 1 << 16  # one read from a socket; a gRPC chunk is 256 KiB, read in a few of these
TARPIT_PER_HOST = 64  # refused connections a host may have held unread at once; more are closed at once
CLOSE_WAIT_S = 5.0  # how long the relay waits for a half-closed side to finish
HOSTS_KEPT = 4096  # hosts remembered; beyond it, those with nothing open and a full bucket are forgotten


@dataclass(frozen=True)
class FrontLimits:
    """Per host, for each rank the address book places there (comm_args.front_*)."""

    connections: int  # held at once
    new_per_s: float  # new connections a second (the bucket's refill)
    burst: int  # new connections at once (the bucket's size)
    pause_first_s: float  # reading a connection pauses this long after its first refused call
    pause_max_s: float  # ... doubling up to this; also how long a refused connection is held

    @classmethod
    def of(cls, comm: Any) -> "FrontLimits | None":
        """The limits of config's comm_args (None when comm_args.front is off)."""
        if not comm.front:
            return None
        return cls(comm.front_connections, float(comm.front_new_connections_per_s), comm.front_burst,
                   float(comm.front_pause_first_s), float(comm.front_pause_max_s))


class _Connection:
    """One relayed connection: its peer's address, and its read pause."""

    def __init__(self, host: str, client: str) -> None:
        self.host = host
        self.client = client  # "ipv4:10.0.0.5:43210", as gRPC names a peer
        self.strikes = 0
        self.paused_until = 0.0

    def pause_left(self) -> float:
        return self.paused_until - time.monotonic()


class _Host:
    def __init__(self, burst: float) -> None:
        self.open = 0
        self.tarpit = 0
        self.tokens = burst
        self.at = time.monotonic()


def grpc_peer(host: str, port: int) -> str:
    """The peer string gRPC would give for this address (ipv6 in brackets)."""
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class Front:
    """A TCP relay from (listen_host, listen_port) to 127.0.0.1:backend_port with per-host connection limits and
    per-connection read pauses after refusals. `ranks_at` maps a host address to the ranks the address book places
    there; `on_refuse(key, sender, why)` counts a refused connection like any refused message."""

    def __init__(self, listen_host: str, listen_port: int, backend_port: int, ranks_at: dict[str, int],
                 limits: FrontLimits, on_refuse: Callable[[str, str, str], None]) -> None:
        self.backend_port = backend_port
        self.ranks_at = ranks_at
        self.limits = limits
        self.on_refuse = on_refuse
        self._hosts: dict[str, _Host] = {}
        self._by_backend: dict[str, _Connection] = {}  # the backend peer string gRPC reports -> the connection
        self._lock = threading.Lock()
        self.refused_connections = 0
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self._server = self.loop.run_until_complete(asyncio.start_server(
                    self._accepted, None if listen_host in ("", "0.0.0.0", "::") else listen_host, listen_port,
                    reuse_address=True, backlog=256))
            except BaseException as exc:  # noqa: BLE001 - handed to the constructor's thread
                failure.append(exc)
                started.set()
                return
            started.set()
            self.loop.run_forever()
            # stopped: every connection's tasks end here (cancelled, their sockets closed) and the loop is closed, so
            # nothing is left pending for the garbage collector to report later (a pending task's report, formatted
            # while another thread ran ast.parse, raised CPython 3.11's "AST constructor recursion depth mismatch"
            # in a CI run's next test module)
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

        self._thread = threading.Thread(target=run, name="fediot-front", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise OSError(f"cannot listen on {listen_host}:{listen_port}: {failure[0]}")

    # the share of a host -------------------------------------------------------------------------------------------
    def _share(self, host: str) -> int:
        return max(1, self.ranks_at.get(host, 0))

    def _admit(self, host: str) -> str | None:
        """None when a new connection from `host` may be relayed, else why not (and the host's state updated)."""
        share, lim = self._share(host), self.limits
        with self._lock:
            now = time.monotonic()
            if host not in self._hosts and len(self._hosts) >= HOSTS_KEPT:
                self._forget_idle(now)
            h = self._hosts.setdefault(host, _Host(lim.burst * share))
            h.tokens = min(lim.burst * share, h.tokens + (now - h.at) * lim.new_per_s * share)
            h.at = now
            if h.open >= lim.connections * share:
                return (f"more than {lim.connections * share} connections at once from this host "
                        f"(comm_args.front_connections x {share} rank(s) there)")
            if h.tokens < 1.0:
                return (f"more than {lim.burst * share} new connections at once or {lim.new_per_s * share:g} a "
                        f"second from this host (comm_args.front_burst, front_new_connections_per_s)")
            h.tokens -= 1.0
            h.open += 1
            return None

    def _forget_idle(self, now: float) -> None:
        """Forget hosts with nothing open or held whose bucket has refilled (forgetting one earlier would hand a
        host that closes its connections a fresh burst). Called with the lock held."""
        lim = self.limits
        for host in [k for k, h in self._hosts.items() if h.open == 0 and h.tarpit == 0
                     and h.tokens + (now - h.at) * lim.new_per_s * self._share(k) >= lim.burst * self._share(k)]:
            del self._hosts[host]

    # what the gRPC servicer tells the front ------------------------------------------------------------------------
    def client_of(self, backend_peer: str) -> str:
        """The relayed peer's own address for gRPC's peer string of the front's side (unchanged when unknown)."""
        conn = self._by_backend.get(backend_peer)
        return conn.client if conn is not None else backend_peer

    def penalise(self, backend_peer: str) -> None:
        """A call on this connection was refused: pause reading it, twice as long as the last time."""
        conn = self._by_backend.get(backend_peer)
        if conn is None:
            return
        conn.strikes += 1
        pause = min(self.limits.pause_max_s, self.limits.pause_first_s * 2 ** min(conn.strikes - 1, 30))
        conn.paused_until = time.monotonic() + pause

    def forgive(self, backend_peer: str) -> None:
        """A message on this connection was taken: its next refusal pauses it for the shortest time again."""
        conn = self._by_backend.get(backend_peer)
        if conn is not None:
            conn.strikes = 0

    # the relay ---------------------------------------------------------------------------------------------------
    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:  # the front stops: end quietly (3.11's start_server logs a cancelled handler as
            pass  # an error, with a traceback)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One accepted connection: refused (held, then closed) or relayed to the gRPC server until either side ends."""
        addr = writer.get_extra_info("peername") or ("?", 0)
        host, port = str(addr[0]), int(addr[1])
        why = self._admit(host)
        if why is not None:
            await self._refuse(host, writer, why)
            return
        conn = _Connection(host, grpc_peer(host, port))
        backend_writer = None
        key = None
        try:
            try:
                b_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
            except OSError as exc:
                log.warning("front: cannot reach the gRPC server behind it: %s", exc)
                return
            local = backend_writer.get_extra_info("sockname")
            key = grpc_peer("127.0.0.1", int(local[1]))
            self._by_backend[key] = conn
            pumps = (asyncio.ensure_future(self._pump(reader, backend_writer, conn)),
                     asyncio.ensure_future(self._pump(b_reader, writer, None)))
            try:
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                if pending:  # one side ended: give the other a moment to finish what it was sending, then close both
                    await asyncio.wait(pending, timeout=CLOSE_WAIT_S)
            finally:
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            if key is not None:
                self._by_backend.pop(key, None)
            for w in (writer, backend_writer):
                if w is not None:
                    w.close()
            with self._lock:
                self._hosts[host].open -= 1

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Connection | None) -> None:
        """Copy src to dst; with `conn`, hold what was read while the connection is paused."""
        try:
            while True:
                data = await src.read(READ_BYTES)
                if not data:
                    break
                if conn is not None:
                    while (left := conn.pause_left()) > 0:
                        await asyncio.sleep(left)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            pass

    async def _refuse(self, host: str, writer: asyncio.StreamWriter, why: str) -> None:
        self.refused_connections += 1
        self.on_refuse(f"host {host}", f"host {host} (before TLS)", "connection refused: " + why)
        with self._lock:
            h = self._hosts[host]
            held = h.tarpit < TARPIT_PER_HOST
            h.tarpit += held
        if not held:
            writer.transport.abort()
            return
        try:
            await asyncio.sleep(self.limits.pause_max_s)  # unread: the sender waits for a handshake that never comes
        finally:
            writer.transport.abort()
            with self._lock:
                h.tarpit -= 1

    def stop(self) -> None:
        """Stop listening and relaying (the node's transport stops); returns once the loop's thread has ended."""
        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self.loop.stop()
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(shutdown)
            except RuntimeError:  # closed meanwhile
                return
            self._thread.join(timeout=CLOSE_WAIT_S + 5)
