"""What our server and client nodes need from a FedML transport, and the MPI one (simulation).

A transport (FedML `BaseCommunicationManager`) used by `trainer.nodes` must also:

* raise `PeerUnreachable` when a message cannot be delivered (never an arbitrary error that kills
  the process);
* accept local events (`post_local`: deadlines, ticks) into the same queue as network messages, so
  every handler runs on one thread;
* block while idle instead of spinning a core;
* count `bytes_sent` / `bytes_received` (recorded per round).

`MpiTransport` does this on top of FedML's `MpiCommunicationManager` (its receive thread is kept);
the gRPC one is `deployment.grpc_transport.FedIoTGrpcTransport`.
"""
from __future__ import annotations

import pickle
import queue

from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.communication.mpi.com_manager import MpiCommunicationManager

QUEUE_POLL_S = 0.5


class PeerUnreachable(Exception):
    """A message could not be delivered to a peer."""


class MpiTransport(MpiCommunicationManager):
    """FedML's MPI manager with a blocking receive loop, local events and byte counts.

    Messages travel as pickled bytes between the ranks of one `mpirun` on one machine (or a
    cluster the user controls): every rank is our own process, so nothing untrusted is unpickled.
    """

    def __init__(self, comm, rank: int, size: int) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        super().__init__(comm, rank, size)

    def send_message(self, msg: Message) -> None:
        payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.comm.send(payload, dest=int(msg.get_receiver_id()))
        except Exception as exc:  # noqa: BLE001 - an MPI error surfaces as one kind of failure
            raise PeerUnreachable(f"rank {msg.get_receiver_id()}: {exc}") from None
        self.bytes_sent += len(payload)

    def post_local(self, msg: Message) -> None:
        """Queue a message for our own handlers (used for deadlines and ticks)."""
        self.q_receiver.put(msg)

    def handle_receive_message(self) -> None:
        ready = Message(CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.rank, self.rank)
        self.notify(ready)
        while not self._stop_running:
            try:
                item = self.q_receiver.get(timeout=QUEUE_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, bytes):
                self.bytes_received += len(item)
                item = pickle.loads(item)
            self.notify(item)

    def stop_receive_message(self) -> None:
        self._stop_running = True
        for thread in (self._server_receive_thread, self._client_receive_thread):
            if thread is not None:
                thread.stop()
                thread.join()
