"""The server and client nodes of every federated run, on FedML's `FedMLCommManager`.

One protocol for both run paths: `sh run_simulation.sh N` runs these nodes on MPI ranks
(`trainer.transport.MpiTransport`), `run_server.sh` / `run_client.sh` on gRPC
(`deployment.grpc_transport.FedIoTGrpcTransport`). The nodes are thin: the server asks
`federation.core.RoundCore` what to send and how to combine answers; the client asks
`federation.client.LocalClient`. What FedML 0.9.6 lacks is added here: a round deadline and a
minimum number of clients, clients that drop and rejoin, a send to a dead client that never kills
the server, start in any order (bounded retries), a checkpoint after every round and resume, and
evaluation from client-side counts only (no raw row ever reaches the server).

Messages and what each may hold: `federation.protocol`; every message received is validated
against it first, and a rejected one is logged, counted (`rejected` in rounds.jsonl) and dropped.

Every handler runs on the transport's receive thread; timers only post local messages.
"""
from __future__ import annotations

import io
import logging
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from fedml.core.distributed.communication.base_com_manager import BaseCommunicationManager
from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.fedml_comm_manager import FedMLCommManager

from federation.client import LocalClient
from federation.core import RoundCore, RoundPlan
from federation.protocol import (
    C2S_HELLO, C2S_REPORT, C2S_UPDATE, C2S_VAL_STATS, S2C_EVAL_COUNTS, S2C_EVAL_STATS, S2C_FINISH, S2C_PING, S2C_TRAIN,
    S2C_WELCOME, Expectations, ProtocolError, validate,
)
from fediot.console import say
from fediot.rundir import peak_rss_mb, write_atomic_bytes, write_json
from model.detector import ErrorStats
from model.normalization import FeatureStats
from trainer.fedml_glue import fds_to_file
from trainer.transport import HEADER_KEYS, PeerRefused, PeerUnreachable

log = logging.getLogger("fediot.nodes")

LOCAL_TICK = "fediot_tick"
LOCAL_DEADLINE = "fediot_deadline"
LOCAL_TYPES = {LOCAL_TICK, LOCAL_DEADLINE, CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY}
MAX_REJECTIONS_KEPT = 20  # per round record: the count is exact, the detail keeps the first few

STATUS_EVERY_S = 10.0

TransportFactory = Callable[[], BaseCommunicationManager]


class _Node(FedMLCommManager):
    """FedML comm manager on one of our transports, with helpers for sends and timers."""

    def __init__(self, args, rank: int, size: int, transport: TransportFactory, expect: Expectations,
                 peer_ranks: set[int]) -> None:
        self._make_transport = transport
        self.expect = expect
        self.peer_ranks = peer_ranks  # who may send to this node at all
        self.last_send_error = ""
        self.refused = False  # the last failed send was refused by the peer, not lost
        self.exit_code = 0
        self.error: str | None = None
        self.rejections: list[dict[str, str]] = []
        self.rejected_total = 0
        super().__init__(args, None, rank, size, "FEDIOT")

    def _init_manager(self) -> None:
        self.com_manager = self._make_transport()
        self.com_manager.reject = self.reject
        self.com_manager.add_observer(self)

    def reject(self, sender: str, reason: str) -> None:
        """A message that is not what the protocol allows: log it, count it, go on."""
        log.warning("message from %s rejected: %s", sender, reason)
        self.rejected_total += 1
        self.rejections.append({"from": sender, "reason": reason[:300]})

    def receive_message(self, msg_type, msg_params) -> None:
        """Dispatch a message after checking it against the protocol (FedML would raise on an unknown type)."""
        handler = self.message_handler_dict.get(msg_type)
        if msg_type in LOCAL_TYPES:  # only ever posted by this process: the wire refuses these types
            handler(msg_params)
            return
        sender = f"rank {msg_params.get_sender_id()}"
        if msg_params.get_sender_id() not in self.peer_ranks:
            self.reject(sender, f"rank {msg_params.get_sender_id()} does not send to rank {self.rank}")
            return
        fields = {k: v for k, v in msg_params.get_params().items() if k not in HEADER_KEYS}
        try:
            validate(msg_type, fields, self.expect)
        except ProtocolError as exc:
            self.reject(sender, str(exc))
            return
        if handler is None:
            self.reject(sender, f"{msg_type} is not a message for rank {self.rank}")
            return
        handler(msg_params)

    def message(self, msg_type: str, receiver: int, **params: Any) -> Message:
        m = Message(msg_type, self.rank, receiver)
        for k, v in params.items():
            m.add_params(k, v)
        return m

    def send(self, msg_type: str, receiver: int, **params: Any) -> bool:
        """Deliver a message; False (logged) when the peer is unreachable."""
        try:
            self.send_message(self.message(msg_type, receiver, **params))
            return True
        except PeerUnreachable as exc:
            log.info("send %s to %d failed: %s", msg_type, receiver, exc)
            self.last_send_error, self.refused = str(exc), isinstance(exc, PeerRefused)
            return False

    def post(self, msg_type: str, **params: Any) -> None:
        self.com_manager.post_local(self.message(msg_type, self.rank, **params))

    def post_after(self, seconds: float, msg_type: str, **params: Any) -> None:
        t = threading.Timer(seconds, self.post, args=(msg_type,), kwargs=params)
        t.daemon = True
        t.start()

    def stop(self, exit_code: int = 0, error: str | None = None) -> None:
        self.exit_code, self.error = exit_code, error
        self.com_manager.stop_receive_message()

    def finish(self) -> None:  # FedML's finish() finalizes MPI; ours just stops the loop
        self.stop(self.exit_code, self.error)


@dataclass(frozen=True)
class ServerRules:
    """How the server waits: deadlines and minimums (a simulation waits for everyone, forever)."""

    round_timeout_s: float | None
    min_clients: int
    wait_for_clients_s: float
    retry_interval_s: float
    checkpoint: bool
    announce: bool  # status lines while waiting for clients, (re)join notices

    @classmethod
    def of(cls, cfg) -> "ServerRules":
        if cfg.is_simulation:  # MPI ranks cannot drop silently: a crashed rank aborts the job
            return cls(None, cfg.train.client_num_per_round, float("inf"), cfg.comm.retry_interval_s, False, False)
        return cls(float(cfg.train.round_timeout_s), cfg.train.min_clients_per_round, float(cfg.comm.wait_for_clients_s),
                   float(cfg.comm.retry_interval_s), True, True)


# ------------------------------------------------------------------------------------------ server
class ServerNode(_Node):
    """Waits for clients, runs rounds (with a deadline in deployments), evaluates, writes outputs."""

    def __init__(self, args, core: RoundCore, client_ranks: list[int], transport: TransportFactory) -> None:
        self.core = core
        self.rules = ServerRules.of(core.cfg)
        self.client_ranks = client_ranks
        self.devices = core.cfg.devices
        self.connected: dict[int, dict[str, Any]] = {}
        self.phase = "waiting"
        self.phase_id = 0  # increases with every phase, so stale deadlines are ignored
        self.expected: set[int] = set()
        self.asked: set[int] = set()  # the ranks the open phase is for (connected or not)
        self.replies: dict[int, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.last_status = ""
        self.last_status_at = 0.0
        self.bytes_mark = (0, 0)
        super().__init__(args, 0, len(client_ranks) + 1, transport, Expectations.of(core.model, core.cfg.devices),
                         set(client_ranks))

    # -- plumbing
    def register_message_receive_handlers(self) -> None:
        for msg_type, handler in (
            (CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.on_ready),
            (LOCAL_TICK, self.on_tick), (LOCAL_DEADLINE, self.on_deadline),
            (C2S_HELLO, self.on_hello), (C2S_UPDATE, self.on_reply), (C2S_VAL_STATS, self.on_reply),
            (C2S_REPORT, self.on_reply),
        ):
            self.register_message_receive_handler(msg_type, handler)

    def device_of(self, rank: int) -> str:
        return self.devices[rank - 1]

    def on_ready(self, _msg: Message) -> None:
        if self.rules.announce:
            say(f"server listening; waiting for {len(self.client_ranks)} client(s): "
                + ", ".join(f"{r}={self.device_of(r)}" for r in self.client_ranks))
        self.post(LOCAL_TICK)

    def _status(self, force: bool = False) -> None:
        if not self.rules.announce:
            return
        names = [f"{r}:{self.device_of(r)}" for r in sorted(self.connected)]
        line = f"waiting for clients: {len(self.connected)}/{len(self.client_ranks)} connected" + \
               (f" ({', '.join(names)})" if names else "")
        now = time.monotonic()
        if force or line != self.last_status or now - self.last_status_at >= STATUS_EVERY_S:
            say(line)
            self.last_status, self.last_status_at = line, now

    def on_tick(self, _msg: Message) -> None:
        if self.phase != "waiting":
            return
        for r in self.client_ranks:  # ask clients that started before us (or survived a restart)
            if r not in self.connected:
                self.send(S2C_PING, r)
        self._status()
        waited = time.monotonic() - self.started
        if len(self.connected) == len(self.client_ranks):
            self.start_training()
        elif waited >= self.rules.wait_for_clients_s:
            if len(self.connected) >= self.rules.min_clients:
                say(f"waited {waited:.0f}s (comm_args.wait_for_clients_s); starting with {len(self.connected)} client(s)")
                self.start_training()
            else:
                self.fail(f"only {len(self.connected)} of {len(self.client_ranks)} client(s) connected within "
                          f"comm_args.wait_for_clients_s = {self.rules.wait_for_clients_s:g}s; "
                          f"train_args.min_clients_per_round = {self.rules.min_clients}")
        else:
            self.post_after(self.rules.retry_interval_s, LOCAL_TICK)

    def on_hello(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        if rank not in self.client_ranks:
            log.info("hello from unexpected rank %d ignored", rank)
            return
        info = {"device": msg.get("device"), "n_train": int(msg.get("n_train")),
                "stats": FeatureStats.from_dict(msg.get("feature_stats"))}
        if info["device"] != self.device_of(rank):
            say(f"warning: client rank {rank} says it holds {info['device']}, the config maps rank {rank} to "
                f"{self.device_of(rank)}; ignored")
            return
        self.connected[rank] = info
        self.core.client_joined(info["device"], info["n_train"], msg.get("held_out"))
        self.send(S2C_WELCOME, rank, round=self.core.round)
        if self.phase == "waiting":
            self._status(force=True)
            if len(self.connected) == len(self.client_ranks):
                self.start_training()
        elif self.rules.announce:  # training has started: a new or restarted board joins at the next round
            say(f"client {rank} ({info['device']}) (re)joined; it takes part from the next round")

    # -- phases
    def start_training(self) -> None:
        self.core.fit_normalizer({self.device_of(r): c["stats"] for r, c in self.connected.items()})
        say("clients: " + ", ".join(f"{self.device_of(r)} ({c['n_train']} training rows)"
                                    for r, c in sorted(self.connected.items())))
        if self.rules.announce:
            say(f"starting: {len(self.connected)} client(s), rounds {self.core.round + 1}..{self.core.n_rounds}, "
                f"round deadline {self.rules.round_timeout_s:g}s, at least {self.rules.min_clients} client(s) per round")
        if self.core.evaluation_pending:  # resumed before an evaluation finished: do it first
            self.begin_eval()
        else:
            self.begin_round()

    def _open_phase(self, phase: str, msg_type: str, params: Callable[[int], dict[str, Any]],
                    ranks: set[int] | None = None) -> None:
        """Send `msg_type` (with params(rank)) to every connected client (of `ranks`, if given: this round's
        sample) and wait for their answers."""
        self.phase = phase
        self.phase_id += 1
        self.replies = {}
        self.expected = set()
        self.asked = set(self.connected) if ranks is None else set(ranks)
        for rank in sorted(r for r in self.connected if r in self.asked):
            if self.send(msg_type, rank, round=self.core.round, **params(rank)):
                self.expected.add(rank)
            else:
                say(f"client {rank} ({self.device_of(rank)}) unreachable; dropped until it reconnects")
                self.connected.pop(rank, None)
        if not self.expected:
            self.post(LOCAL_DEADLINE, phase_id=self.phase_id)
        elif self.rules.round_timeout_s is not None:
            self.post_after(self.rules.round_timeout_s, LOCAL_DEADLINE, phase_id=self.phase_id)

    def on_reply(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        expected_type = {"train": C2S_UPDATE, "val": C2S_VAL_STATS, "report": C2S_REPORT}.get(self.phase)
        if msg.get_type() != expected_type or msg.get("round") != self.core.round or rank not in self.expected:
            log.info("late or unexpected %s from %d ignored", msg.get_type(), rank)
            return
        if self.phase == "report" and msg.get("report")["device"] != self.device_of(rank):
            self.reject(f"rank {rank}", f"report for {msg.get('report')['device']}, but rank {rank} holds "
                                        f"{self.device_of(rank)}")
            return
        self.replies[rank] = msg.get_params()
        if set(self.replies) == self.expected:
            self.close_phase()

    def on_deadline(self, msg: Message) -> None:
        if msg.get("phase_id") == self.phase_id and self.phase in ("train", "val", "report"):
            missing = sorted(self.expected - set(self.replies))
            if missing:
                say(f"round {self.core.round + 1}: deadline ({self.rules.round_timeout_s:g}s) passed without "
                    + ", ".join(f"{r}:{self.device_of(r)}" for r in missing))
            self.close_phase()

    def close_phase(self) -> None:
        answered = sorted(self.replies)
        dropped = sorted(self.asked - set(answered))
        phase = self.phase
        self.phase = "busy"
        if len(answered) < self.rules.min_clients:
            self.fail(f"round {self.core.round + 1} ({phase}): {len(answered)} client(s) answered, "
                      f"train_args.min_clients_per_round = {self.rules.min_clients}; dropped: "
                      f"{', '.join(self.device_of(r) for r in dropped) or 'none'}. "
                      f"The checkpoint of the last completed round is kept in {self.core.run_dir}")
            return
        if phase == "train":
            self.finish_round(answered, dropped)
        elif phase == "val":
            self.set_thresholds(answered)
        elif phase == "report":
            self.finish_eval(answered)

    # -- training
    def begin_round(self) -> None:
        common = self.core.begin_round()
        sampled = set(self.core.sample())
        self._open_phase("train", S2C_TRAIN, lambda r: {**common, "plan": self.core.plan(self.device_of(r)).to_dict()},
                         {r for r in self.client_ranks if self.device_of(r) in sampled})

    def finish_round(self, answered: list[int], dropped: list[int]) -> None:
        sent, received = self.com_manager.bytes_sent, self.com_manager.bytes_received
        traffic = {"bytes_sent": sent - self.bytes_mark[0], "bytes_received": received - self.bytes_mark[1]}
        self.bytes_mark = (sent, received)
        line = self.core.finish_round({self.device_of(r): self.replies[r] for r in answered},
                                      [self.device_of(r) for r in dropped], traffic)
        # The round's record is on disk before the checkpoint says the round is done: written now, or,
        # when an evaluation follows, carried in the checkpoint until the evaluation completes.
        evaluate_now = self.core.evaluate_now()
        if not evaluate_now:
            self.write_record()
        self.save_checkpoint()
        say(line)
        if evaluate_now:
            self.begin_eval()
        else:
            self.begin_round()

    # -- evaluation (counts only)
    def begin_eval(self) -> None:
        common = self.core.begin_eval()
        self._open_phase("val", S2C_EVAL_STATS, lambda _r: common)

    def set_thresholds(self, answered: list[int]) -> None:
        self.core.set_thresholds({self.device_of(r): ErrorStats(**self.replies[r]["val_stats"]) for r in answered})
        self._open_phase("report", S2C_EVAL_COUNTS, lambda r: self.core.counts_request(self.device_of(r)))

    def finish_eval(self, answered: list[int]) -> None:
        say(self.core.finish_eval({self.device_of(r): self.replies[r]["report"] for r in answered}))
        self.write_record()
        self.save_checkpoint()
        if self.core.done:
            self.core.finish()
            for rank in sorted(self.connected):
                self.send(S2C_FINISH, rank)
            self.stop(0)
        else:
            self.begin_round()

    def write_record(self) -> None:
        """The round's line, with the messages rejected since the last one (also said on the console)."""
        if self.rejected_total:
            first = self.rejections[0]
            say(f"warning: {self.rejected_total} message(s) rejected since the last round record "
                f"(first from {first['from']}: {first['reason'][:120]}); see rounds.jsonl and logs/")
        self.core.write_record(self.rejected_total, self.rejections[:MAX_REJECTIONS_KEPT])
        self.rejections, self.rejected_total = [], 0

    def save_checkpoint(self) -> None:
        if not self.rules.checkpoint:
            return
        buf = io.BytesIO()
        torch.save(self.core.checkpoint(), buf)
        write_atomic_bytes(self.core.run_dir / "checkpoint.pt", buf.getvalue())

    def fail(self, message: str) -> None:
        for rank in sorted(self.connected):
            self.send(S2C_FINISH, rank, error=message)
        self.stop(3, message)


# ------------------------------------------------------------------------------------------ client
@dataclass(frozen=True)
class ClientRules:
    """How long a client keeps trying to reach, or waiting for, the server."""

    connect_timeout_s: float
    retry_interval_s: float
    idle_timeout_s: float
    announce: bool  # "connecting", "connected", per-round lines (deployment boards)

    @classmethod
    def of(cls, cfg) -> "ClientRules":
        c = cfg.comm
        if cfg.is_simulation:  # the server rank is there for the whole job; rounds may be long
            return cls(float(c.connect_timeout_s), float(c.retry_interval_s), float("inf"), False)
        return cls(float(c.connect_timeout_s), float(c.retry_interval_s), float(c.client_idle_timeout_s), True)


class ClientNode(_Node):
    """One client: holds one device's rows, trains when asked, reports counts, never sends rows."""

    def __init__(self, args, local: LocalClient, rank: int, n_clients: int, rules: ClientRules,
                 transport: TransportFactory) -> None:
        self.local = local
        self.device = local.device
        self.rules = rules
        self.welcomed = False
        self.first_try = time.monotonic()
        self.last_server_msg = time.monotonic()
        super().__init__(args, rank, n_clients + 1, transport, Expectations.of(local.model, [local.device]), {0})

    def register_message_receive_handlers(self) -> None:
        for msg_type, handler in (
            (CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.on_ready), (LOCAL_TICK, self.on_tick),
            (S2C_PING, self.on_ping), (S2C_WELCOME, self.on_welcome), (S2C_TRAIN, self.on_train),
            (S2C_EVAL_STATS, self.on_eval_stats), (S2C_EVAL_COUNTS, self.on_eval_counts), (S2C_FINISH, self.on_finish),
        ):
            self.register_message_receive_handler(msg_type, handler)

    def _say(self, line: str) -> None:
        if self.rules.announce:
            say(f"client {self.rank} ({self.device}): {line}")

    def hello(self) -> bool:
        return self.send(C2S_HELLO, 0, **self.local.hello())

    def on_ready(self, _msg: Message) -> None:
        self._say(f"{self.local.n_train} training rows; connecting to the server")
        self.post(LOCAL_TICK)

    def on_tick(self, _msg: Message) -> None:
        now = time.monotonic()
        if not self.welcomed:
            if self.hello():
                self.last_server_msg = now
            elif self.give_up(self.first_try + self.rules.connect_timeout_s):
                return
        elif now - self.last_server_msg >= self.rules.idle_timeout_s:
            self.stop(4, f"no message from the server for comm_args.client_idle_timeout_s = {self.rules.idle_timeout_s:g}s")
            return
        self.post_after(self.rules.retry_interval_s, LOCAL_TICK)

    def give_up(self, deadline: float) -> bool:
        """After a failed send to the server: stop when it refused us or `deadline` has passed."""
        if self.refused:
            self.stop(5, f"the server refused this board: {self.last_send_error}")
        elif time.monotonic() >= deadline:
            self.stop(4, f"server unreachable for comm_args.connect_timeout_s = {self.rules.connect_timeout_s:g}s "
                         f"(last error: {self.last_send_error or 'none'}; with TLS, check that this board's "
                         f"certificate is from the server's CA and not expired)")
        else:
            return False
        return True

    def _seen_server(self) -> None:
        self.last_server_msg = time.monotonic()

    def on_ping(self, _msg: Message) -> None:
        self._seen_server()
        self.hello()

    def on_welcome(self, msg: Message) -> None:
        self._seen_server()
        if not self.welcomed:
            self._say(f"connected; server at round {msg.get('round')}")
        self.welcomed = True

    def reply(self, msg_type: str, **params: Any) -> None:
        """Send to the server, retrying while it is briefly unreachable (bounded)."""
        deadline = time.monotonic() + self.rules.connect_timeout_s
        while not self.send(msg_type, 0, **params):
            if self.give_up(deadline):
                return
            time.sleep(self.rules.retry_interval_s)

    def on_train(self, msg: Message) -> None:
        self._seen_server()
        self.welcomed = True
        plan = RoundPlan.from_dict(msg.get("plan"))
        update = self.local.train(msg.get("model"), msg.get("normalizer"), plan)
        self._say(f"round {plan.round_idx + 1}: trained {update['n']} rows at lr {plan.lr:.6g}, "
                  f"loss {update['loss']:.5f} ({update['train_seconds']:.1f}s)")
        self.reply(C2S_UPDATE, round=plan.round_idx, **update)

    def on_eval_stats(self, msg: Message) -> None:
        self._seen_server()
        self.reply(C2S_VAL_STATS, round=msg.get("round"),
                   val_stats=self.local.validation_stats(msg.get("model"), msg.get("normalizer")))

    def on_eval_counts(self, msg: Message) -> None:
        self._seen_server()
        report = self.local.report(msg.get("global_threshold"), msg.get("device_threshold"), msg.get("window"))
        self.reply(C2S_REPORT, round=msg.get("round"), report=report)

    def on_finish(self, msg: Message) -> None:
        error = msg.get("error")
        if error:
            self.stop(3, f"the server stopped the run: {error}")
        else:
            self._say("run finished")
            self.stop(0)


def run_node(make_node: Callable[[], _Node], fedml_console: bool, log_file: Path, resources_file: Path,
             info: dict[str, Any]) -> _Node:
    """Build and run a node with FedML's output kept in the run's log; record its peak RSS and bytes."""
    with fds_to_file(log_file, not fedml_console):
        node = make_node()
        node.run()
    write_json(resources_file, {**info, "machine": platform.machine(), "peak_rss_mb": round(peak_rss_mb(), 1),
                                "bytes_sent": node.com_manager.bytes_sent,
                                "bytes_received": node.com_manager.bytes_received})
    return node
