"""What our server and client nodes need from a FedML transport, and the MPI one (simulation).

A transport (FedML `BaseCommunicationManager`) used by `trainer.nodes` must also:

* raise `PeerUnreachable` when a message cannot be delivered (never an arbitrary error that kills
  the process);
* accept local events (`post_local`: deadlines, ticks) into the same queue as network messages, so
  every handler runs on one thread;
* block while idle instead of spinning a core;
* count `bytes_sent` / `bytes_received` (recorded per round);
* put messages on the wire with `to_wire` and take them off with `from_wire` (FedIoT's own format,
  `federation.wire`: no pickle), handing what cannot be decoded to `reject(sender, reason)`;
* when it knows who sent the bytes (the peer's TLS certificate, MPI's source rank), queue a `Delivery` with
  that rank: a message whose header claims another sender is rejected (identity is the certificate or the
  MPI source, not the message); a call refused before reading it (e.g. a revoked rank) is queued as a `Refused`, so
  every rejection is counted on the receive thread.

`MpiTransport` does this on top of FedML's `MpiCommunicationManager`, with its own receive thread (raw
bytes, never mpi4py's pickle layer); the gRPC one is `deployment.grpc_transport.FedIoTGrpcTransport`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable

from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.communication.mpi.com_manager import MpiCommunicationManager

from federation.messages import MAX_HEADER_BYTES, decode_message
from federation.wire import WireError, encode, precheck

QUEUE_POLL_S = 0.5
MPI_POLL_S = 0.001  # how long an idle MPI receive thread sleeps between probes (~3 % of a core per rank)
PRUNE_MIN = 64  # completed sends are dropped from the in-flight list when it reaches this size (or twice its last)
FLUSH_TIMEOUT_S = 30.0  # how long a stopping MPI rank waits for its last sends to be received
FLUSH_POLL_S = 0.005
HEADER_KEYS = {Message.MSG_ARG_KEY_TYPE, Message.MSG_ARG_KEY_SENDER, Message.MSG_ARG_KEY_RECEIVER}
INBOX_MESSAGES_PER_PEER = 1  # a peer's bytes waiting to be handled: at most one message of the size limit (an
# honest board sends one message at a time; a simulation worker's answers are each far smaller)


def inbox_bytes(max_bytes: int) -> int:
    """How many bytes of one peer's messages may wait in a node's inbox."""
    return INBOX_MESSAGES_PER_PEER * max_bytes

log = logging.getLogger("fediot.transport")


class PeerUnreachable(Exception):
    """A message could not be delivered to a peer."""


class PeerRefused(PeerUnreachable):
    """The peer answered, and refused us (a revoked rank, or not the rank we claim to be)."""


def to_wire(msg: Message) -> bytes:
    """A FedML message as FedIoT wire bytes (its own fields only; FedML's bookkeeping keys stay home)."""
    fields = {k: v for k, v in msg.get_params().items() if k not in HEADER_KEYS}
    return encode(msg.get_type(), msg.get_sender_id(), msg.get_receiver_id(), fields)


def from_wire(raw: bytes, max_bytes: int) -> Message:
    """Wire bytes as a FedML message; WireError when they are not a well-formed FedIoT message. Local events (ticks,
    deadlines) can never come from a peer: an unknown type is refused before any tensor is read, as is a message
    with more tensors than its type carries."""
    msg_type, sender, receiver, fields = decode_message(raw, max_bytes)
    msg = Message(msg_type, sender, receiver)
    for k, v in fields.items():
        if k in HEADER_KEYS:
            raise WireError(f"field {k!r} is reserved")
        msg.add_params(k, v)
    return msg


def log_reject(sender: str, reason: str, count: int = 1) -> None:
    log.warning("%s from %s rejected: %s", "message" if count == 1 else f"{count} messages", sender, reason)


Reject = Callable[..., None]  # (sender, reason, count=1)


@dataclass(frozen=True)
class Delivery:
    """Bytes from a peer, with the rank its certificate proves (None without TLS), or MPI's source rank, and its
    address ("MPI" for MPI)."""

    raw: bytes
    peer_rank: int | None
    peer: str


@dataclass(frozen=True)
class Refused:
    """Calls the transport refused before queueing them (counted like any rejected message)."""

    sender: str
    reason: str
    count: int = 1
    key: Any = None  # the peer, for the inbox's own bookkeeping


MALFORMED = "malformed"  # Inbox.deliver's verdicts
BUSY = "busy"


class Inbox:
    """A node's receive queue. Its own events (ticks, deadlines, the driver's requests) go first and are never
    bounded or queued behind peer traffic; what peers send is checked from its length and first bytes
    (`wire.precheck`) and bounded per peer (bytes waiting to be handled) before it is queued, so a refused message
    never waits in memory, and one peer can neither fill this node's memory nor push the others' messages far back.
    Refusals reach the receive loop as `Refused` items (to be logged and counted there): the first
    `REFUSALS_LISTED` of a peer one by one, the rest as one count."""

    REFUSALS_LISTED = 20

    def __init__(self, per_peer_bytes: int, max_bytes: int) -> None:
        self.per_peer_bytes = per_peer_bytes
        self.max_bytes = max_bytes
        self._local: deque = deque()
        self._peers: deque = deque()
        self._queued: dict[Any, int] = defaultdict(int)  # peer -> bytes waiting
        self._refusals: deque[Refused] = deque()
        self._listed: dict[Any, int] = defaultdict(int)  # peer -> refusals waiting in `_refusals`
        self._unlisted: dict[Any, Refused] = {}  # peer -> the count of its refusals beyond those
        self._ready = threading.Condition()

    @staticmethod
    def _peer(d: Delivery) -> Any:
        return d.peer_rank if d.peer_rank is not None else d.peer

    def put(self, item: Any) -> bool:
        """Queue an item; False when it is a peer's message that is refused (and counted) here."""
        if isinstance(item, Delivery):
            return self.deliver(item) is None
        with self._ready:
            self._local.append(item)
            self._ready.notify()
        return True

    def deliver(self, item: Delivery) -> str | None:
        """Queue a peer's message: None when queued, else why not (counted here): MALFORMED (it cannot be a
        message of the size limit) or BUSY (its sender already has that many bytes waiting)."""
        with self._ready:
            key = self._peer(item)
            why, verdict = precheck(item.raw, self.max_bytes, MAX_HEADER_BYTES), MALFORMED
            if why is None and self._queued[key] + len(item.raw) > self.per_peer_bytes:
                why = f"more than {self.per_peer_bytes:,} bytes of its messages were waiting to be handled"
                verdict = BUSY
            if why is not None:
                self._refuse(key, _sender(item.peer_rank, item.peer), why)
                return verdict
            self._queued[key] += len(item.raw)
            self._peers.append(item)
            self._ready.notify()
            return None

    def refuse(self, key: Any, sender: str, why: str) -> None:
        """Count a call refused before it was read (bounded per peer like every refusal)."""
        with self._ready:
            self._refuse(key, sender, why)

    def _refuse(self, key: Any, sender: str, why: str) -> None:
        if self._listed[key] < self.REFUSALS_LISTED:
            self._listed[key] += 1
            self._refusals.append(Refused(sender, why, key=key))
        else:
            more = self._unlisted.get(key)
            self._unlisted[key] = Refused(sender, f"refused (the last: {why})", 1 + (more.count if more else 0), key)
        self._ready.notify()

    def get(self, timeout: float) -> Any:
        """The next item: own events first, then refusals, then peer messages in arrival order."""
        with self._ready:
            if not (self._local or self._refusals or self._unlisted or self._peers):
                self._ready.wait(timeout)
            if self._local:
                return self._local.popleft()
            if self._refusals:
                refused = self._refusals.popleft()
                self._listed[refused.key] -= 1
                return refused
            if self._unlisted:
                key = next(iter(self._unlisted))
                return self._unlisted.pop(key)
            if self._peers:
                item = self._peers.popleft()
                self._queued[self._peer(item)] -= len(item.raw)
                return item
            raise queue.Empty


def _sender(peer_rank: int | None, peer: str) -> str:
    if peer_rank is None:
        return f"a peer ({peer})"
    return f"rank {peer_rank} (MPI)" if peer == "MPI" else f"rank {peer_rank} (certificate, {peer})"


MAX_PEER_ADDRESSES = 100_000  # ranks are bounded by the ipconfig / world size; this bounds the map whatever happens


def receive_loop(q: Inbox, running: Callable[[], bool], transport, deliver: Callable[[Message], None]) -> None:
    """The receive loop of both transports: block on the inbox (no spinning); local events go straight
    to `deliver`; wire bytes from a peer are counted, checked against who may send to this node (before any
    decoding), decoded within the header and tensor limits of their type, checked against the rank that sent them
    (its certificate, or MPI's source rank) and our own rank, and rejected when anything is off."""
    while running():
        try:
            item = q.get(timeout=QUEUE_POLL_S)
        except queue.Empty:
            continue
        if isinstance(item, Message):
            deliver(item)
            continue
        if isinstance(item, Refused):
            transport.reject(item.sender, item.reason, item.count)
            continue
        delivery: Delivery = item
        transport.bytes_received += len(delivery.raw)
        sender = _sender(delivery.peer_rank, delivery.peer)
        why = None
        allowed = getattr(transport, "peer_ranks", None)
        if delivery.peer_rank is not None and allowed is not None and delivery.peer_rank not in allowed:
            why = f"rank {delivery.peer_rank} does not send to rank {transport.rank} (not decoded)"
        else:
            try:
                msg = from_wire(delivery.raw, transport.max_bytes)
            except WireError as exc:
                why = str(exc)
            else:
                if delivery.peer_rank is not None and msg.get_sender_id() != delivery.peer_rank:
                    why = f"claims to be rank {msg.get_sender_id()} (rank spoofing)"
                elif msg.get_receiver_id() != transport.rank:
                    why = f"addressed to rank {msg.get_receiver_id()}, this is rank {transport.rank}"
        if why is not None:  # not a message the protocol has: no honest peer sends one
            transport.reject(sender, why)
            strike = getattr(transport, "strike", None)
            if strike is not None:
                strike(Inbox._peer(delivery), sender)
            continue
        peers, rank = getattr(transport, "peer_addresses", None), int(msg.get_sender_id())
        if peers is not None and (rank in peers or len(peers) < MAX_PEER_ADDRESSES):  # where each rank was last heard
            peers[rank] = (delivery.peer, delivery.peer_rank is not None and delivery.peer != "MPI")  # from (status)
        deliver(msg)


class MpiReceiveThread(threading.Thread):
    """Takes messages off MPI as raw bytes and queues them, with the rank MPI says sent them.

    FedML's MPIReceiveThread receives with mpi4py's `comm.recv`, which unpickles (with a host file the simulation's
    messages cross a network), and probes once per 1 ms sleep; measured with a 150 KB message sent by a rank that
    is training: Open MPI's progress engine needs a second pass to see a message that arrived during the sleep, so
    one probe saw it 1.8 ms after the send, two probes per wake-up 0.75 ms (the same sleeps, the same CPU)."""

    def __init__(self, comm, q: Inbox, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.comm, self.q = comm, q
        self._stop_event = threading.Event()

    def run(self) -> None:
        from mpi4py import MPI

        status = MPI.Status()
        try:
            while not self._stop_event.is_set():
                if not (self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status) or
                        self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)):
                    time.sleep(MPI_POLL_S)
                    continue
                buf = bytearray(status.Get_count(MPI.BYTE))  # oversized: refused by the receive loop (decode)
                self.comm.Recv([buf, MPI.BYTE], source=status.Get_source(), tag=status.Get_tag())
                self.q.put(Delivery(bytes(buf), status.Get_source(), "MPI"))
        except Exception:  # an MPI failure: say it (mpirun ends the job when a rank fails) rather than hang silently
            log.exception("MPI receive thread failed")
            raise

    def stop(self) -> None:
        self._stop_event.set()


class MpiTransport(MpiCommunicationManager):
    """FedML's MPI manager with our receive thread, a blocking receive loop, local events, byte counts and
    FedIoT's wire format (the same bytes as over gRPC, so the simulation rehearses the deployment); the sender of
    a message is the rank MPI delivered it from, whatever its header says."""

    def __init__(self, comm, rank: int, size: int, max_bytes: int) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peer_addresses: dict[int, tuple[str, bool]] = {}  # rank -> (address, certified), set by receive_loop
        self.max_bytes = max_bytes
        self.peer_ranks: set[int] | None = None  # who may send to this rank (set by its node)
        self.reject: Reject = log_reject
        self._in_flight: list = []  # (Isend request, its buffer) not yet known to be completed
        self._prune_at = PRUNE_MIN
        super().__init__(comm, rank, size)

    def _start_receiving(self, name: str) -> tuple[queue.Queue, Inbox, MpiReceiveThread]:
        received = Inbox(inbox_bytes(self.max_bytes), self.max_bytes)
        thread = MpiReceiveThread(self.comm, received, name)
        thread.start()
        return queue.Queue(), received, thread

    def init_server_communication(self):  # called by FedML's __init__ (rank 0)
        send_q, receive_q, self._server_receive_thread = self._start_receiving("ServerReceiveThread")
        return send_q, receive_q

    def init_client_communication(self):  # called by FedML's __init__ (worker ranks)
        send_q, receive_q, self._client_receive_thread = self._start_receiving("ClientReceiveThread")
        return send_q, receive_q

    def send_message(self, msg: Message) -> None:
        """Non-blocking send of the wire bytes: a message larger than MPI's eager limit (a model) is a rendezvous,
        and a blocking send waits until the receiver's thread polls for it; with more ranks than cores that wait is
        a scheduling slot per message (measured: ~9 ms a TRAIN message, 10 of them in a row per round)."""
        self.send_bytes(int(msg.get_receiver_id()), to_wire(msg))

    def send_bytes(self, receiver: int, payload: bytes) -> None:
        """Non-blocking send of wire bytes to a rank (see send_message)."""
        from mpi4py import MPI

        try:
            if len(self._in_flight) >= self._prune_at:  # amortised: testing every request is linear in the list
                self._drop_completed()
                self._prune_at = max(PRUNE_MIN, 2 * len(self._in_flight))
            request = self.comm.Isend([payload, MPI.BYTE], dest=receiver)
            self._in_flight.append((request, payload))  # the buffer lives until the send completes
        except Exception as exc:  # noqa: BLE001 - an MPI error surfaces as one kind of failure
            raise PeerUnreachable(f"rank {receiver}: {exc}") from None
        self.bytes_sent += len(payload)

    def _drop_completed(self) -> None:
        self._in_flight = [(r, buf) for r, buf in self._in_flight if not r.Test()]

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait (sleeping, bounded) until the messages sent so far have been taken by their receivers."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._drop_completed()
            if self._in_flight:
                time.sleep(FLUSH_POLL_S)

    def post_local(self, msg: Message) -> None:
        """Queue a message for our own handlers (used for deadlines and ticks)."""
        self.q_receiver.put(msg)

    def handle_receive_message(self) -> None:
        ready = Message(CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.rank, self.rank)
        self.notify(ready)
        receive_loop(self.q_receiver, lambda: not self._stop_running, self, self.notify)

    def stop_receive_message(self) -> None:
        self.flush()  # the last messages (FINISH, a last reply) reach their peers before this rank leaves
        self._stop_running = True
        for thread in (self._server_receive_thread, self._client_receive_thread):
            if thread is not None:
                thread.stop()
                thread.join()
