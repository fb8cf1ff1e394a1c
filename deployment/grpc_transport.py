"""FedML's gRPC transport for the deployment, with four fixes, done by subclassing (site-packages untouched):

* no pickle: messages travel in FedIoT's wire format (`federation.wire`); bytes that do not decode
  are rejected (logged, counted) and the receiver goes on (FedML 0.9.6 unpickles whatever arrives);

* the receive loop blocks on its queue instead of spinning a core (FedML 0.9.6 polls qsize()
  in a tight loop: ~0.8 of a core while idle);
* a failed send (peer dead or unreachable) raises `PeerUnreachable` after `send_timeout_s`
  instead of an arbitrary grpc error that kills the process;
* local events (deadlines, periodic ticks) can be posted into the same queue, so every handler
  runs on one thread.
"""
from __future__ import annotations

import threading

import grpc
from fedml.core.distributed.communication.grpc import grpc_comm_manager_pb2, grpc_comm_manager_pb2_grpc
from fedml.core.distributed.communication.grpc.grpc_comm_manager import GRPCCommManager
from fedml.core.distributed.communication.message import Message

from trainer.transport import PeerUnreachable, Reject, log_reject, receive_loop, to_wire


class FedIoTGrpcTransport(GRPCCommManager):
    """GRPCCommManager with a blocking receive loop, bounded sends and local events."""

    def __init__(self, grpc_ipconfig_path: str, client_rank: int, client_num: int, args, send_timeout_s: float,
                 max_bytes: int) -> None:
        self.send_timeout_s = send_timeout_s
        self.max_bytes = max_bytes
        self.reject: Reject = log_reject
        self.bytes_sent = 0
        self.bytes_received = 0
        self._send_lock = threading.Lock()
        super().__init__(grpc_ipconfig_path, client_rank=client_rank, client_num=max(client_num, 2), args=args)

    def _peer_url(self, receiver_id: int) -> str:
        m = self.grpc_mappings[int(receiver_id)]
        return f"{m.ingress_ip or m.grpc_server_ip}:{m.grpc_server_port}"

    def send_message(self, msg: Message) -> None:
        payload = to_wire(msg)
        url = self._peer_url(msg.get_receiver_id())
        request = grpc_comm_manager_pb2.CommRequest(client_id=self.client_id, message=payload)
        with self._send_lock, grpc.insecure_channel(url, options=self.opts) as channel:
            stub = grpc_comm_manager_pb2_grpc.gRPCCommManagerStub(channel)
            try:
                stub.sendMessage(request, timeout=self.send_timeout_s, wait_for_ready=False)
            except grpc.RpcError as exc:
                code = exc.code().name if hasattr(exc, "code") else "ERROR"
                raise PeerUnreachable(f"{url}: {code}") from None
        self.bytes_sent += len(payload)

    def post_local(self, msg: Message) -> None:
        """Queue a message for our own handlers (used for deadlines and ticks)."""
        self.grpc_servicer.message_q.put(msg)

    def message_handling_subroutine(self) -> None:
        receive_loop(self.grpc_servicer.message_q, lambda: self.is_running, self, self.notify)

    def stop_receive_message(self) -> None:
        self.is_running = False
        self.grpc_server.stop(grace=0.5)
