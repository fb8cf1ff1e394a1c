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
* when it knows who sent the bytes (the peer's TLS certificate), queue a `Delivery` with that rank:
  a message whose header claims another sender is rejected (identity is the certificate, not the
  message); a call refused before reading it (e.g. a revoked rank) is queued as a `Refused`, so
  every rejection is counted on the receive thread.

`MpiTransport` does this on top of FedML's `MpiCommunicationManager` (its receive thread is kept);
the gRPC one is `deployment.grpc_transport.FedIoTGrpcTransport`.
"""
from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import Callable

from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.communication.mpi.com_manager import MpiCommunicationManager

from federation.protocol import SCHEMAS
from federation.wire import WireError, decode, encode

QUEUE_POLL_S = 0.5
PRUNE_MIN = 64  # completed sends are dropped from the in-flight list when it reaches this size (or twice its last)
FLUSH_TIMEOUT_S = 30.0  # how long a stopping MPI rank waits for its last sends to be received
FLUSH_POLL_S = 0.005
HEADER_KEYS = {Message.MSG_ARG_KEY_TYPE, Message.MSG_ARG_KEY_SENDER, Message.MSG_ARG_KEY_RECEIVER}

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
    """Wire bytes as a FedML message; WireError when they are not a well-formed FedIoT message."""
    msg_type, sender, receiver, fields = decode(raw, max_bytes)
    if msg_type not in SCHEMAS:  # local events (ticks, deadlines) can never come from a peer
        raise WireError(f"unknown message type {msg_type[:60]!r}")
    msg = Message(msg_type, sender, receiver)
    for k, v in fields.items():
        if k in HEADER_KEYS:
            raise WireError(f"field {k!r} is reserved")
        msg.add_params(k, v)
    return msg


def log_reject(sender: str, reason: str) -> None:
    log.warning("message from %s rejected: %s", sender, reason)


Reject = Callable[[str, str], None]


@dataclass(frozen=True)
class Delivery:
    """Bytes from a peer, with the rank its certificate proves (None without TLS) and its address."""

    raw: bytes
    peer_rank: int | None
    peer: str


@dataclass(frozen=True)
class Refused:
    """A call the transport refused before reading it (counted like any rejected message)."""

    sender: str
    reason: str


def _sender(peer_rank: int | None, peer: str) -> str:
    return f"rank {peer_rank} (certificate, {peer})" if peer_rank is not None else f"a peer ({peer})"


def receive_loop(q: queue.Queue, running: Callable[[], bool], transport, deliver: Callable[[Message], None]) -> None:
    """The receive loop of both transports: block on the queue (no spinning); local events go straight
    to `deliver`; wire bytes from a peer are counted, decoded, checked against the sender's certificate
    and our own rank, and rejected when anything is off."""
    while running():
        try:
            item = q.get(timeout=QUEUE_POLL_S)
        except queue.Empty:
            continue
        if isinstance(item, Message):
            deliver(item)
            continue
        if isinstance(item, Refused):
            transport.reject(item.sender, item.reason)
            continue
        delivery = item if isinstance(item, Delivery) else Delivery(bytes(item), None, "MPI")
        transport.bytes_received += len(delivery.raw)
        sender = _sender(delivery.peer_rank, delivery.peer)
        try:
            msg = from_wire(delivery.raw, transport.max_bytes)
        except WireError as exc:
            transport.reject(sender, str(exc))
            continue
        if delivery.peer_rank is not None and msg.get_sender_id() != delivery.peer_rank:
            transport.reject(sender, f"claims to be rank {msg.get_sender_id()} (rank spoofing)")
            continue
        if msg.get_receiver_id() != transport.rank:
            transport.reject(sender, f"addressed to rank {msg.get_receiver_id()}, this is rank {transport.rank}")
            continue
        deliver(msg)


class MpiTransport(MpiCommunicationManager):
    """FedML's MPI manager with a blocking receive loop, local events, byte counts and FedIoT's
    wire format (the same bytes as over gRPC, so the simulation rehearses the deployment)."""

    def __init__(self, comm, rank: int, size: int, max_bytes: int) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.max_bytes = max_bytes
        self.reject: Reject = log_reject
        self._in_flight: list = []  # isend requests not yet known to be completed (they own their buffers)
        self._prune_at = PRUNE_MIN
        super().__init__(comm, rank, size)

    def send_message(self, msg: Message) -> None:
        """Non-blocking send: a message larger than MPI's eager limit (a model) is a rendezvous, and a blocking
        send waits until the receiver's thread polls for it; with more ranks than cores that wait is a
        scheduling slot per message (measured: ~9 ms a TRAIN message, 10 of them in a row per round)."""
        payload = to_wire(msg)
        try:
            if len(self._in_flight) >= self._prune_at:  # amortised: testing every request is linear in the list
                self._drop_completed()
                self._prune_at = max(PRUNE_MIN, 2 * len(self._in_flight))
            self._in_flight.append(self.comm.isend(payload, dest=int(msg.get_receiver_id())))
        except Exception as exc:  # noqa: BLE001 - an MPI error surfaces as one kind of failure
            raise PeerUnreachable(f"rank {msg.get_receiver_id()}: {exc}") from None
        self.bytes_sent += len(payload)

    def _drop_completed(self) -> None:
        self._in_flight = [r for r in self._in_flight if not r.Test()]

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
