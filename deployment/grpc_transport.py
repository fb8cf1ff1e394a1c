"""The gRPC transport of the deployment: FedML's gRPC service definition, our own server and channels.

FedML 0.9.6's `GRPCCommManager` unpickles whatever reaches its port, listens on insecure ports only,
takes the sender's rank from inside the message and accepts 1000 MB messages. This transport keeps
FedML's `gRPCCommManager` service (so it plugs into `FedMLCommManager` like FedML's own) and
replaces the rest (site-packages untouched):

* mutual TLS (default): the server side asks every caller for a certificate from our CA and reads
  the caller's rank from it (`fediot-rank-<r>`); a message whose header claims another rank is
  rejected, and a revoked rank is refused before its bytes are read. Sends check that the receiver's
  certificate names the receiver's rank, so neither a rogue server nor one board posing as another
  can take part;
* no pickle: FedIoT's wire format (`federation.wire`), decoded and validated on the receive thread;
* listens on the address the launcher gives it: the ipconfig's `grpc_server_ip` (every interface
  only with `comm_args.bind_all`);
* gRPC refuses messages over twice `comm_args.max_message_mb` before reading them; between one and
  two times the limit they are read, refused by the decoder, logged and counted;
* the receive loop blocks on its queue instead of spinning a core (FedML's polls qsize() in a loop);
* one channel per receiver, kept while sends succeed (one TLS handshake, not one per message) and
  dropped on a failure; a failed send raises `PeerUnreachable` (`PeerRefused` when the peer refused
  us) after `send_timeout_s` instead of an arbitrary grpc error that kills the process;
* local events (deadlines, ticks) are posted into the same queue, so every handler runs on one thread.
"""
from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Any

import grpc
from fedml.core.distributed.communication.base_com_manager import BaseCommunicationManager
from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.grpc import grpc_comm_manager_pb2, grpc_comm_manager_pb2_grpc
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.communication.observer import Observer

from deployment.certs import RANK_NAME, rank_in_names
from deployment.ipconfig import Peer
from deployment.tls import TlsIdentity
from trainer.transport import (
    Delivery, Inbox, PeerRefused, PeerUnreachable, Refused, Reject, inbox_bytes, log_reject, receive_loop, to_wire,
)

log = logging.getLogger("fediot.grpc")

ENVELOPE_SLACK_BYTES = 1 << 20  # the protobuf envelope around our bytes
REFUSED_CODES = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class _Servicer(grpc_comm_manager_pb2_grpc.gRPCCommManagerServicer):
    """Queues what peers send, with the rank their certificate proves; refuses revoked ranks."""

    def __init__(self, q: Inbox, tls: TlsIdentity | None) -> None:
        self.q = q
        self.tls = tls

    def sendMessage(self, request, context):
        peer = context.peer()
        rank = None
        if self.tls is not None:
            rank = rank_in_names(context.auth_context().get("x509_subject_alternative_name", []))
            refusal = None
            if rank is None:
                refusal = f"a peer ({peer})", "its certificate names no FedIoT rank"
            elif rank in self.tls.revoked:
                refusal = f"rank {rank} (certificate, {peer})", f"rank {rank} is revoked (comm_args.revoked_ranks)"
            if refusal is not None:
                self.q.put(Refused(*refusal))
                context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal[1])
        if not self.q.put(Delivery(bytes(request.message), rank, peer)):  # refused before it waits in memory:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,       # not a message, or too many of its messages
                          "refused: not a FedIoT message within the limits, or too many of yours are waiting")
        return grpc_comm_manager_pb2.CommResponse()


class FedIoTGrpcTransport(BaseCommunicationManager):
    """One node's gRPC server (what peers send to it) and its sends to peers."""

    def __init__(self, peers: dict[int, Peer], rank: int, tls: TlsIdentity | None, bind_ip: str,
                 send_timeout_s: float, max_bytes: int) -> None:
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
        self._send_lock = threading.Lock()
        self._stubs: dict[int, tuple[grpc.Channel, Any]] = {}  # one channel per receiver, kept while it works
        self.peer_ranks: set[int] | None = None  # who may send to this node (set by its node)
        self.message_q = Inbox(inbox_bytes(max_bytes), max_bytes)
        limit = 2 * max_bytes + ENVELOPE_SLACK_BYTES
        self.opts: list[tuple[str, Any]] = [("grpc.max_send_message_length", limit),
                                            ("grpc.max_receive_message_length", limit),
                                            ("grpc.enable_http_proxy", 0)]
        self.listen = host_port(bind_ip, peers[rank].port)
        # as many calls in progress as there are peers that may send here (an honest node sends one message at a
        # time and waits for it to be taken): gRPC refuses more before reading them, so a peer flooding on many
        # connections holds at most that many messages' memory (measured: bench/bench_flood.py)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(4, len(peers))), options=self.opts,
                                  maximum_concurrent_rpcs=max(2, len(peers) - 1))
        grpc_comm_manager_pb2_grpc.add_gRPCCommManagerServicer_to_server(_Servicer(self.message_q, tls), self.server)
        if tls is None:
            bound = self.server.add_insecure_port(self.listen)
        else:
            creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca,
                                                require_client_auth=True)
            bound = self.server.add_secure_port(self.listen, creds)
        if not bound:
            raise OSError(f"cannot listen on {self.listen}")
        self.server.start()
        log.info("rank %d listening on %s (%s)", rank, self.listen, "mutual TLS" if tls else "PLAINTEXT")

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
        request = grpc_comm_manager_pb2.CommRequest(client_id=self.rank, message=payload)
        with self._send_lock:
            if receiver not in self._stubs:
                channel = self._channel(receiver)
                self._stubs[receiver] = (channel, grpc_comm_manager_pb2_grpc.gRPCCommManagerStub(channel))
            channel, stub = self._stubs[receiver]
            try:
                stub.sendMessage(request, timeout=self.send_timeout_s, wait_for_ready=False)
            except grpc.RpcError as exc:
                # a fresh channel next time: no reconnect backoff inherited from a peer that restarted
                channel.close()
                del self._stubs[receiver]
                code = exc.code() if hasattr(exc, "code") else None
                detail = f"rank {receiver}: {code.name if code else 'ERROR'} {exc.details() if code else ''}".strip()
                raise (PeerRefused if code in REFUSED_CODES else PeerUnreachable)(detail) from None
        self.bytes_sent += len(payload)

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
        self.is_running = False
        self.server.stop(grace=0.5)
        with self._send_lock:
            for channel, _stub in self._stubs.values():
                channel.close()
            self._stubs.clear()
