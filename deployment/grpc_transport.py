"""The gRPC transport of the deployment: our own service, server and channels (FedML's pieces untouched).

FedML 0.9.6's `GRPCCommManager` unpickles whatever reaches its port, listens on insecure ports only,
takes the sender's rank from inside the message and accepts 1000 MB messages. This transport plugs into
`FedMLCommManager` like FedML's own and replaces the rest (site-packages untouched):

* mutual TLS (default): the server side asks every caller for a certificate from our CA and reads
  the caller's rank from it (`fediot-rank-<r>`); a message whose header claims another rank is
  rejected, and a revoked rank is refused before its bytes are read. Sends check that the receiver's
  certificate names the receiver's rank, so neither a rogue server nor one board posing as another
  can take part;
* one method, `/fediot.Wire/Send`, client-streaming: a message is its bytes in chunks of `CHUNK_BYTES`, so the
  receiver knows the sender (its certificate) before it reads any of them, reads one message per sender at a
  time (`Admission`), stops at the first chunk over `comm_args.max_message_mb`, and cancels a call still being
  sent after `comm_args.send_timeout_s`;
* no pickle: FedIoT's wire format (`federation.wire`), decoded and validated on the receive thread; the server
  refuses a sender for the rest of the run after `comm_args.quarantine_after_malformed` messages that are not
  FedIoT messages or break the protocol's bounds, and reads from a board only the answers it asked for beside an
  allowance for hellos and health reports (`Admission.pace`);
* the server sends to each board on that board's own thread (`send_later`): one that stops reading holds up only
  its own messages;
* listens through a connection-level front (`deployment.front`, `comm_args.front`): per host, connections are
  limited before TLS, and a connection whose call was refused is paused before its next one is read (a certified
  board flooding calls made rounds ~3x slower through gRPC's own per-call work and TLS handshakes);
* listens on the address the launcher gives it: the ipconfig's `grpc_server_ip` (every interface
  only with `comm_args.bind_all`);
* the receive loop blocks on its queue instead of spinning a core (FedML's polls qsize() in a loop);
* one channel per receiver, kept while sends succeed (one TLS handshake, not one per message) and
  dropped on a failure; a failed send raises `PeerUnreachable` (`PeerRefused` when the peer refused
  us) after `send_timeout_s` instead of an arbitrary grpc error that kills the process;
* local events (deadlines, ticks) are posted into the same queue, so every handler runs on one thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterable, Iterator

import grpc
from fedml.core.distributed.communication.base_com_manager import BaseCommunicationManager
from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.communication.observer import Observer

from deployment.certs import RANK_NAME, rank_in_names
from deployment.front import Front, FrontLimits
from deployment.ipconfig import Peer
from deployment.tls import TlsIdentity
from trainer.transport import (
    MALFORMED, Delivery, Inbox, PeerRefused, PeerUnreachable, Reject, inbox_bytes, log_reject, receive_loop, to_wire,
)

log = logging.getLogger("fediot.grpc")

METHOD = "/fediot.Wire/Send"  # client-streaming: the message's bytes in chunks; the answer is empty
CHUNK_BYTES = 1 << 18  # 256 KiB: a message is read chunk by chunk, and refused at the first byte over the limit
ENVELOPE_SLACK_BYTES = 1 << 16  # gRPC's framing around a chunk
STREAMS_PER_CONNECTION = 2  # HTTP/2 streams one connection may have open (an honest node sends one at a time)
EXTRA_WORKERS = 4  # threads beside one per peer: refusals are answered even while every peer is being read
OUTBOX_MESSAGES = 16  # messages waiting for one receiver; more and the receiver counts as unreachable
WATCHDOG_S = 1.0  # how often calls that have been read for too long are cancelled
KEEPALIVE_MS = 10_000  # a peer that stops answering pings for this long loses its connection (and its call)
REFUSED_CODES = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def chunks_of(payload: bytes) -> Iterator[bytes]:
    """A message's bytes as the chunks of one call (one empty chunk for an empty message)."""
    view = memoryview(payload)
    for at in range(0, max(len(payload), 1), CHUNK_BYTES):
        yield bytes(view[at:at + CHUNK_BYTES])


def send_over(channel: grpc.Channel, chunks: Iterable[bytes], timeout_s: float | None) -> None:
    """One message to the node at the other end of `channel` (grpc.RpcError when it is refused or lost)."""
    channel.stream_unary(METHOD)(iter(chunks), timeout=timeout_s, wait_for_ready=False)


class Admission:
    """Who may be read, decided before a byte of the call is: per sender (its certificate's rank; its connection
    without TLS) one message is read at a time, however many calls or connections it opens, so a slow or stalled
    upload holds only its own sender's turn and one thread (issue 34: three slow 8 MB uploads held gRPC's shared
    call limit and stopped the run); a call read for longer than `read_limit_s` is cancelled; a sender whose
    messages were not FedIoT messages or broke the protocol's bounds `quarantine_after` times (bad magic, over the
    size limit, undecodable, spoofed, fields out of bounds: no honest node of this version sends one; late answers
    and health reports do not count) is refused unread for the rest of the run and reported through
    `on_quarantine`.

    With `pace` set (the server's), a certified sender is read only when it has something to say: one message per
    answer the server asked it for (`grant`), beside a small allowance for hellos and health reports that refills
    with time (`pace`: per second, up to `burst`). Without it a board sending well-formed, valid answers nobody asked
    for (refused as late, after they were read and decoded) made honest rounds 3.8x slower (bench/hostile_side_by_side
    .py valid_flood); a call beyond both is refused unread."""

    def __init__(self, read_limit_s: float, quarantine_after: int | None) -> None:
        self.read_limit_s = read_limit_s
        self.quarantine_after = quarantine_after
        self.on_quarantine: Callable[[Any, str], None] | None = None
        self._lock = threading.Lock()
        self._reading: dict[Any, tuple[float, Any]] = {}  # sender -> (started, its call's context)
        self._malformed: dict[Any, int] = {}
        self.quarantined: dict[Any, str] = {}  # sender -> why
        self.pace: tuple[float, float] | None = None  # (messages a second, burst) beside the answers asked for
        self._asked: dict[Any, int] = {}  # sender -> answers asked for and not yet read
        self._allowance: dict[Any, tuple[float, float]] = {}  # sender -> (messages it may send, when that was)

    def grant(self, key: Any, answers: int) -> None:
        """The server asked `key` for this many answers (a new phase replaces what the last one left)."""
        with self._lock:
            self._asked[key] = answers

    def _allowed_now(self, key: Any, now: float) -> float:
        rate, burst = self.pace
        have, at = self._allowance.get(key, (burst, now))
        return min(burst, have + (now - at) * rate)

    def may_send(self, key: Any) -> bool:
        """Whether a call of `key`'s may be read now (always without pace, and for senders without a rank)."""
        if self.pace is None or not isinstance(key, int):
            return True
        with self._lock:
            return self._asked.get(key, 0) > 0 or self._allowed_now(key, time.monotonic()) >= 1.0

    def took(self, key: Any) -> None:
        """A message of `key`'s was read and queued: it used an answer asked for, or its allowance."""
        if self.pace is None or not isinstance(key, int):
            return
        with self._lock:
            if self._asked.get(key, 0) > 0:
                self._asked[key] -= 1
                return
            now = time.monotonic()
            self._allowance[key] = (max(0.0, self._allowed_now(key, now) - 1.0), now)

    def enter(self, key: Any, context: Any) -> bool:
        """Start reading a call of `key`'s; False when one of its calls is being read. The oldest wins: a newer call
        is refused before any of it is read, so a sender cannot make the server read most of a message and then
        replace it (reading without ever completing a message that could be refused); an honest board sends one
        message at a time, and a call it gave up on ends at its RST (or, when the network is gone, at keepalive)."""
        with self._lock:
            if key in self._reading:
                return False
            self._reading[key] = (time.monotonic(), context)
            return True

    def reading(self, key: Any, context: Any) -> bool:
        """Whether this call is still being read (False once the watchdog cancelled it: a cancelled call's chunks can
        end as if the sender had finished, and what it sent must not be taken for a message)."""
        with self._lock:
            entry = self._reading.get(key)
            return entry is not None and entry[1] is context

    def leave(self, key: Any, context: Any) -> None:
        with self._lock:
            if key in self._reading and self._reading[key][1] is context:
                del self._reading[key]

    def overdue(self) -> list[Any]:
        """Cancel the calls read for longer than read_limit_s (a stalled upload ends; its sender may send again)."""
        now = time.monotonic()
        with self._lock:
            late = [(k, ctx) for k, (t, ctx) in self._reading.items() if now - t > self.read_limit_s]
            for key, _ctx in late:
                del self._reading[key]  # its handler must not take what it read: see `reading`
        for _key, ctx in late:
            ctx.cancel()
        return [k for k, _ in late]

    def strike(self, key: Any, sender: str) -> None:
        """One more malformed message from `key`; quarantined (reported once) at `quarantine_after`. Only a
        certificate's rank: without TLS a sender is not known beyond its connection."""
        if self.quarantine_after is None or not isinstance(key, int):
            return
        with self._lock:
            if key in self.quarantined:
                return
            self._malformed[key] = n = self._malformed.get(key, 0) + 1
            if n < self.quarantine_after:
                return
            why = (f"{sender} sent {n} messages that are not FedIoT messages or break the protocol's bounds "
                   f"(comm_args.quarantine_after_malformed = {self.quarantine_after}); refused for the rest of the run")
            self.quarantined[key] = why
        log.warning("quarantined: %s", why)
        if self.on_quarantine is not None:
            self.on_quarantine(key, why)


class _Servicer:
    """Reads what peers send, one message per sender at a time, chunk by chunk within the size limit, and queues it
    with the rank its certificate proves; refuses revoked and quarantined senders before reading a byte."""

    def __init__(self, q: Inbox, tls: TlsIdentity | None, admission: Admission, max_bytes: int) -> None:
        self.allowed: set[int] | None = None  # the ranks that may send to this node (its node's peer_ranks)
        self.front: Front | None = None  # the connection-level front before this server, when there is one
        self.q = q
        self.tls = tls
        self.admission = admission
        self.max_bytes = max_bytes

    def send(self, chunks: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        front, backend_peer = self.front, context.peer()
        try:
            taken = self._read(chunks, context, front.client_of(backend_peer) if front else backend_peer)
        except BaseException:  # context.abort raises: a refused call pauses its connection's reading at the front
            if front is not None:
                front.penalise(backend_peer)
            raise
        if front is not None:
            front.forgive(backend_peer) if taken else front.penalise(backend_peer)
        return b""

    def _read(self, chunks: Iterator[bytes], context: grpc.ServicerContext, peer: str) -> bool:
        """Read and queue one message; True when it was taken (False: a cancelled call), aborts when refused."""
        rank = None
        if self.tls is not None:
            rank = rank_in_names(context.auth_context().get("x509_subject_alternative_name", []))
            if rank is None:
                self.q.refuse(peer, f"a peer ({peer})", "its certificate names no FedIoT rank")
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "its certificate names no FedIoT rank")
            if rank in self.tls.revoked:
                why = f"rank {rank} is revoked (comm_args.revoked_ranks)"
                self.q.refuse(rank, f"rank {rank} (certificate, {peer})", why)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        key = rank if rank is not None else peer  # plaintext: only the connection is known (boards may share a host)
        sender = f"rank {rank} (certificate, {peer})" if rank is not None else f"a peer ({peer})"
        why = self.admission.quarantined.get(key)
        if why is not None:
            self.q.refuse(key, sender, "quarantined: " + why)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "quarantined: " + why)
        if self.allowed is not None and rank is not None and rank not in self.allowed:
            why = f"rank {rank} does not send to this node (not read)"
            self.q.refuse(key, sender, why)
            self.admission.strike(key, sender)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        if not self.admission.may_send(key):
            self.q.refuse(key, sender, "more messages than the server asked for (and than its allowance for hellos "
                                       "and health reports); not read")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "not asked for: wait for the server's request")
        if not self.admission.enter(key, context):
            self.q.refuse(key, sender, "a second call while one of its messages is being read (one at a time)")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "one message at a time: another of yours is being read")
        try:
            received = bytearray()
            for chunk in chunks:
                if len(received) + len(chunk) > self.max_bytes:
                    why = f"over {len(received) + len(chunk):,} bytes, over comm_args.max_message_mb " \
                          f"({self.max_bytes:,} bytes); not read further"
                    self.q.refuse(key, sender, why)
                    self.admission.strike(key, sender)
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "refused: " + why)
                received += chunk
            if not (self.admission.reading(key, context) and context.is_active()):  # cancelled (by the watchdog, or
                return False  # the sender): the chunks may have ended as if the message were complete
        finally:
            self.admission.leave(key, context)
        verdict = self.q.deliver(Delivery(bytes(received), rank, peer))
        if verdict is None:
            self.admission.took(key)
        if verdict == MALFORMED:
            self.admission.strike(key, sender)
        if verdict is not None:  # refused before it waits in memory: not a message, or too many of its messages
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          "refused: not a FedIoT message within the limits, or too many of yours are waiting")
        return True


SendFailed = Callable[[int, str, bool], None]  # (receiver, error, refused by it)


class _Outbox:
    """One receiver's sends on their own thread, in order: a receiver that reads slowly or not at all (a board can
    stop reading: HTTP/2 flow control then holds the send until send_timeout_s) delays only its own messages."""

    def __init__(self, transport: "FedIoTGrpcTransport", receiver: int) -> None:
        self.transport, self.receiver = transport, receiver
        self.q: queue.Queue = queue.Queue(OUTBOX_MESSAGES)
        self.busy = False
        threading.Thread(target=self._run, name=f"fediot-send-{receiver}", daemon=True).start()

    def put(self, payload: bytes, failed: SendFailed) -> None:
        try:
            self.q.put_nowait((payload, failed))
        except queue.Full:
            failed(self.receiver, f"rank {self.receiver}: {OUTBOX_MESSAGES} messages waiting for it", False)

    def _run(self) -> None:
        while True:
            payload, failed = self.q.get()
            self.busy = True
            try:
                self.transport.send_bytes(self.receiver, payload)
            except PeerUnreachable as exc:
                failed(self.receiver, str(exc), isinstance(exc, PeerRefused))
            finally:
                self.busy = False

    def idle(self) -> bool:
        return self.q.empty() and not self.busy

    def pending(self) -> int:
        return self.q.qsize() + self.busy


class FedIoTGrpcTransport(BaseCommunicationManager):
    """One node's gRPC server (what peers send to it) and its sends to peers."""

    def __init__(self, peers: dict[int, Peer], rank: int, tls: TlsIdentity | None, bind_ip: str,
                 send_timeout_s: float, max_bytes: int, quarantine_after: int | None = None,
                 front: FrontLimits | None = None) -> None:
        """quarantine_after: malformed messages after which a sender is refused for the run (None: never; boards
        take messages from the server only). front: listen through a connection-level front with these limits
        (deployment/front.py; the gRPC server then listens on a loopback port behind it)."""
        self.peers = peers
        self.rank = rank
        self.tls = tls
        self.send_timeout_s = send_timeout_s
        self.max_bytes = max_bytes
        self.reject: Reject = log_reject
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peer_addresses: dict[int, tuple[str, bool]] = {}  # rank -> (address, certified), set by receive_loop
        self.is_running = True
        self._observers: list[Observer] = []
        self._locks_lock = threading.Lock()
        self._send_locks: dict[int, threading.Lock] = {}  # one per receiver: a slow one holds up only its own
        self._stubs: dict[int, grpc.Channel] = {}  # one channel per receiver, kept while it works
        self._outboxes: dict[int, _Outbox] = {}
        self.message_q = Inbox(inbox_bytes(max_bytes), max_bytes)
        # a call is read for at most as long as its honest sender waits for it (then it has given up anyway)
        self.admission = Admission(send_timeout_s + WATCHDOG_S, quarantine_after)
        self.opts: list[tuple[str, Any]] = [("grpc.max_send_message_length", CHUNK_BYTES + ENVELOPE_SLACK_BYTES),
                                            ("grpc.max_receive_message_length", CHUNK_BYTES + ENVELOPE_SLACK_BYTES),
                                            ("grpc.enable_http_proxy", 0)]
        self.listen = host_port(bind_ip, peers[rank].port)
        # one thread per peer that may be read plus a few that answer refusals; the call limit is generous (calls
        # beyond a sender's one are refused at once, unread): STREAMS_PER_CONNECTION makes a flood of calls open
        # connections (each a TLS handshake of the flooder's) rather than streams
        server_opts = [*self.opts, ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
                       ("grpc.keepalive_time_ms", KEEPALIVE_MS), ("grpc.keepalive_timeout_ms", KEEPALIVE_MS)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=len(peers) + EXTRA_WORKERS),
                                  options=server_opts, maximum_concurrent_rpcs=4 * len(peers) + 16)
        self.servicer = servicer = _Servicer(self.message_q, tls, self.admission, max_bytes)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            METHOD.split("/")[1], {METHOD.split("/")[2]: grpc.stream_unary_rpc_method_handler(servicer.send)})])
        grpc_listen = "127.0.0.1:0" if front is not None else self.listen  # behind the front: a loopback port
        if tls is None:
            bound = self.server.add_insecure_port(grpc_listen)
        else:
            creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca,
                                                require_client_auth=True)
            bound = self.server.add_secure_port(grpc_listen, creds)
        if not bound:
            raise OSError(f"cannot listen on {grpc_listen}")
        self.server.start()
        self.front: Front | None = None
        if front is not None:
            ranks_at: dict[str, int] = {}
            for peer in peers.values():
                for ip in {peer.bind_ip, peer.dial_ip} - {"", "0.0.0.0", "::"}:
                    ranks_at[ip] = ranks_at.get(ip, 0) + 1
            try:
                self.front = Front(bind_ip, peers[rank].port, bound, ranks_at, front, self.message_q.refuse)
            except OSError:
                self.server.stop(0)
                raise
            servicer.front = self.front
        self._watchdog = threading.Thread(target=self._watch, name="fediot-grpc-watchdog", daemon=True)
        self._watchdog.start()
        log.info("rank %d listening on %s (%s)", rank, self.listen, "mutual TLS" if tls else "PLAINTEXT")

    @property
    def peer_ranks(self) -> set[int] | None:
        """Who may send to this node (set by its node): other certified ranks are refused before they are read."""
        return self.servicer.allowed

    @peer_ranks.setter
    def peer_ranks(self, ranks: set[int] | None) -> None:
        self.servicer.allowed = ranks

    def strike(self, key: Any, sender: str) -> None:
        """A message from `key` that the receive loop found malformed (see Admission)."""
        self.admission.strike(key, sender)

    def strike_certified(self, rank: int, sender: str) -> None:
        """A message its node refused for what it holds (the protocol's bounds), from `rank`: a strike only when a
        certificate proved the rank (without TLS the rank in a message is a claim, and a strike would let anyone
        quarantine any board)."""
        if self.tls is not None:
            self.admission.strike(rank, sender)

    def _watch(self) -> None:
        while self.is_running:
            time.sleep(WATCHDOG_S)
            for key in self.admission.overdue():
                self.message_q.refuse(key, f"rank {key}" if isinstance(key, int) else f"a peer ({key})",
                                      f"a message still being sent after {self.admission.read_limit_s:g}s "
                                      "(comm_args.send_timeout_s): cancelled")

    def _channel(self, receiver: int) -> grpc.Channel:
        peer = self.peers[receiver]
        url = host_port(peer.dial_ip, peer.port)
        if self.tls is None:
            return grpc.insecure_channel(url, options=self.opts)
        creds = grpc.ssl_channel_credentials(root_certificates=self.tls.ca, private_key=self.tls.key,
                                             certificate_chain=self.tls.cert)
        # the receiver must prove its rank, whatever address it answers on
        return grpc.secure_channel(url, creds, options=[*self.opts,
                                                        ("grpc.ssl_target_name_override", RANK_NAME.format(receiver))])

    def send_message(self, msg: Message) -> None:
        self.send_bytes(int(msg.get_receiver_id()), to_wire(msg))

    def send_bytes(self, receiver: int, payload: bytes) -> None:
        """Deliver wire bytes to a peer; PeerUnreachable / PeerRefused when it cannot be done."""
        if receiver not in self.peers:
            raise PeerUnreachable(f"rank {receiver} is not in the ipconfig")
        with self._locks_lock:
            lock = self._send_locks.setdefault(receiver, threading.Lock())
        with lock:
            channel = self._stubs.get(receiver)
            if channel is None:
                channel = self._stubs[receiver] = self._channel(receiver)
            try:
                send_over(channel, chunks_of(payload), self.send_timeout_s)
            except grpc.RpcError as exc:
                # a fresh channel next time: no reconnect backoff inherited from a peer that restarted
                channel.close()
                self._stubs.pop(receiver, None)
                code = exc.code() if hasattr(exc, "code") else None
                detail = f"rank {receiver}: {code.name if code else 'ERROR'} {exc.details() if code else ''}".strip()
                raise (PeerRefused if code in REFUSED_CODES else PeerUnreachable)(detail) from None
        self.bytes_sent += len(payload)

    def send_later(self, msg: Message, failed: SendFailed) -> None:
        """Queue a message for its receiver's own sender thread; `failed` is called from that thread when it cannot
        be delivered (the server's way to send: no board can hold up its receive thread)."""
        receiver = int(msg.get_receiver_id())
        if receiver not in self.peers:
            failed(receiver, f"rank {receiver} is not in the ipconfig", False)
            return
        with self._locks_lock:
            box = self._outboxes.get(receiver)
            if box is None:
                box = self._outboxes[receiver] = _Outbox(self, receiver)
        box.put(to_wire(msg), failed)

    def pending(self, receiver: int) -> int:
        """Messages queued for `receiver` and not yet delivered or failed."""
        box = self._outboxes.get(receiver)
        return box.pending() if box is not None else 0

    def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until the queued messages have been delivered or have failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(b.idle() for b in list(self._outboxes.values())):
            time.sleep(0.01)

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def notify(self, msg: Message) -> None:
        for observer in self._observers:
            observer.receive_message(msg.get_type(), msg)

    def post_local(self, msg: Message) -> None:
        """Queue a message for our own handlers (used for deadlines and ticks)."""
        self.message_q.put(msg)

    def handle_receive_message(self) -> None:
        self.notify(Message(CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.rank, self.rank))
        receive_loop(self.message_q, lambda: self.is_running, self, self.notify)

    def stop_receive_message(self) -> None:
        self.flush(self.send_timeout_s)  # the last messages (FINISH) reach their peers, or time out, first
        self.is_running = False
        if self.front is not None:
            self.front.stop()
        self.server.stop(grace=0.5)
        for channel in list(self._stubs.values()):
            channel.close()
        self._stubs.clear()
