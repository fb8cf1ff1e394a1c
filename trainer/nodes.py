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
    """Waits for clients, runs rounds (with a deadline in deployments), evaluates, writes outputs.

    Clients are names (`cfg.clients`); ranks are processes. Client i's home is worker rank
    client_ranks[i % workers]: it says hello for it and evaluates it. A board is one client on its own
    rank. With `pooled` workers (a simulation with fewer workers than clients) a worker holds and trains
    several clients: each round, the sampled clients that live there."""

    def __init__(self, args, core: RoundCore, client_ranks: list[int], transport: TransportFactory) -> None:
        self.core = core
        self.rules = ServerRules.of(core.cfg)
        self.client_ranks = client_ranks
        self.clients = core.cfg.clients
        self.home = {c: client_ranks[i % len(client_ranks)] for i, c in enumerate(self.clients)}
        self.pooled = core.cfg.is_simulation and len(client_ranks) < len(self.clients)
        self.connected: dict[int, set[str]] = {}  # rank -> the clients it said hello for
        self.joined: dict[str, dict[str, Any]] = {}  # client -> n_train, feature statistics (its hello)
        self.phase = "waiting"
        self.phase_id = 0  # increases with every phase, so stale deadlines are ignored
        self.assigned: dict[str, int] = {}  # client -> the rank asked about it in the open phase
        self.asked: set[str] = set()  # the clients the open phase is for (sent or not)
        self.expected: set[str] = set()
        self.replies: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.last_status = ""
        self.last_status_at = 0.0
        self.bytes_mark = (0, 0)
        super().__init__(args, 0, len(client_ranks) + 1, transport, Expectations.of(core.model, self.clients),
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

    def names(self, clients: list[str] | set[str], limit: int = 12, label: Callable[[str], str] = str) -> str:
        """Client names (as `label` writes them) for a console line, in config order: the first few, then how
        many more."""
        order = {c: i for i, c in enumerate(self.clients)}
        c = [label(x) for x in sorted(clients, key=lambda x: (order.get(x, len(order)), x))]
        return ", ".join(c[:limit]) + (f" and {len(c) - limit} more" if len(c) > limit else "")

    def on_ready(self, _msg: Message) -> None:
        if self.rules.announce:
            say(f"server listening; waiting for {len(self.client_ranks)} client(s): "
                + ", ".join(f"{r}={c}" for c, r in self.home.items()))
        self.post(LOCAL_TICK)

    def _status(self, force: bool = False) -> None:
        if not self.rules.announce:
            return
        names = [f"{self.home[c]}:{c}" for c in sorted(self.joined, key=self.home.get)]
        line = f"waiting for clients: {len(self.joined)}/{len(self.clients)} connected" + \
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
        if len(self.joined) == len(self.clients):
            self.start_training()
        elif waited >= self.rules.wait_for_clients_s:
            if len(self.joined) >= self.rules.min_clients:
                say(f"waited {waited:.0f}s (comm_args.wait_for_clients_s); starting with {len(self.joined)} client(s)")
                self.start_training()
            else:
                self.fail(f"only {len(self.joined)} of {len(self.clients)} client(s) connected within "
                          f"comm_args.wait_for_clients_s = {self.rules.wait_for_clients_s:g}s; "
                          f"train_args.min_clients_per_round = {self.rules.min_clients}")
        else:
            self.post_after(self.rules.retry_interval_s, LOCAL_TICK)

    def on_hello(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        if rank not in self.client_ranks:
            log.info("hello from unexpected rank %d ignored", rank)
            return
        name = msg.get("device")
        if self.home.get(name) != rank:
            homes = sorted(c for c, r in self.home.items() if r == rank)
            say(f"warning: client rank {rank} says it holds {name}, the config maps rank {rank} to "
                f"{self.names(homes)}; ignored")
            return
        self.joined[name] = {"n_train": int(msg.get("n_train")), "stats": FeatureStats.from_dict(msg.get("feature_stats"))}
        self.connected.setdefault(rank, set()).add(name)
        self.core.client_joined(name, int(msg.get("n_train")), msg.get("held_out"))
        self.send(S2C_WELCOME, rank, round=self.core.round)
        if self.phase == "waiting":
            self._status(force=True)
            if len(self.joined) == len(self.clients):
                self.start_training()
        elif self.rules.announce:  # training has started: a new or restarted board joins at the next round
            say(f"client {rank} ({name}) (re)joined; it takes part from the next round")

    # -- phases
    def start_training(self) -> None:
        self.core.fit_normalizer({c: info["stats"] for c, info in self.joined.items()})
        say(f"clients: {len(self.joined)}: "
            + self.names(self.joined, 9, lambda c: f"{c} ({self.joined[c]['n_train']} training rows)")
            + (f" on {len(self.client_ranks)} worker ranks" if self.pooled else ""))
        if self.rules.announce:
            say(f"starting: {len(self.joined)} client(s), rounds {self.core.round + 1}..{self.core.n_rounds}, "
                f"round deadline {self.rules.round_timeout_s:g}s, at least {self.rules.min_clients} client(s) per round")
        if self.core.evaluation_pending:  # resumed before an evaluation finished: do it first
            self.begin_eval()
        else:
            self.begin_round()

    def _reachable(self, clients: list[str]) -> list[str]:
        """The clients whose home rank is connected (and that said hello)."""
        return [c for c in clients if c in self.joined and self.home[c] in self.connected]

    def _open_phase(self, phase: str, msg_type: str, assignments: dict[str, int], common: dict[str, Any],
                    own: Callable[[str], dict[str, Any]], asked: list[str]) -> None:
        """Send one `msg_type` message to each rank with clients in `assignments` (client -> rank): the `common`
        fields once, and `clients` = {client: own(client)} for what differs per client; then wait for one answer
        per client. `asked` are the clients this phase is for (those not sent count as dropped). One message per
        rank, not per client: a worker holding many clients gets one copy of the model (measured at 1,008 clients:
        per-client messages cost the server an encode, the worker a decode and check, and the pair a hand-off
        each, ~40 % of a round of 16-row clients)."""
        self.phase = phase
        self.phase_id += 1
        self.replies = {}
        self.assigned = dict(assignments)
        self.asked = set(asked)
        by_rank: dict[int, list[str]] = {}
        for client, rank in sorted(assignments.items(), key=lambda cr: (cr[1], cr[0])):
            if rank in self.connected:
                by_rank.setdefault(rank, []).append(client)
        self.expected = {c for clients in by_rank.values() for c in clients}
        for rank, clients in sorted(by_rank.items(), key=lambda rc: -len(rc[1])):  # the longest work starts first
            if not self.send(msg_type, rank, round=self.core.round, clients={c: own(c) for c in clients}, **common):
                self._unreachable(rank)
        if not self.expected:
            self.post(LOCAL_DEADLINE, phase_id=self.phase_id)
        elif self.rules.round_timeout_s is not None:
            self.post_after(self.rules.round_timeout_s, LOCAL_DEADLINE, phase_id=self.phase_id)

    def _unreachable(self, rank: int) -> None:
        """A rank a send failed to: its clients are dropped from the phase (and from the federation until it
        says hello again)."""
        say(f"client {rank} ({self.names(self.connected.get(rank, set()))}) unreachable; dropped until it reconnects")
        self.expected -= {c for c, r in self.assigned.items() if r == rank}
        for c in self.connected.pop(rank, set()):
            self.joined.pop(c, None)

    def _phase_answered(self) -> bool:
        return len(self.replies) == len(self.expected)  # replies only ever hold expected clients

    def on_reply(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        expected_type = {"train": C2S_UPDATE, "val": C2S_VAL_STATS, "report": C2S_REPORT}.get(self.phase)
        client = msg.get("report")["device"] if msg.get_type() == C2S_REPORT else msg.get("client")
        if (msg.get_type() != expected_type or msg.get("round") != self.core.round or client not in self.expected
                or client in self.replies):
            log.info("late or unexpected %s from %d ignored", msg.get_type(), rank)
            return
        if self.assigned.get(client) != rank:
            self.reject(f"rank {rank}", f"{msg.get_type()} about {client}, which rank {rank} was not asked about")
            return
        self.replies[client] = msg.get_params()
        if self._phase_answered():
            self.close_phase()

    def on_deadline(self, msg: Message) -> None:
        if msg.get("phase_id") == self.phase_id and self.phase in ("train", "val", "report"):
            missing = sorted(self.expected - set(self.replies))
            if missing:
                say(f"round {self.core.round + 1}: deadline ({self.rules.round_timeout_s:g}s) passed without "
                    + ", ".join(f"{self.assigned[c]}:{c}" for c in missing))
            self.close_phase()

    def close_phase(self) -> None:
        answered = sorted(self.replies)
        dropped = sorted(self.asked - set(answered))
        phase = self.phase
        self.phase = "busy"
        if len(answered) < self.rules.min_clients:
            self.fail(f"round {self.core.round + 1} ({phase}): {len(answered)} client(s) answered, "
                      f"train_args.min_clients_per_round = {self.rules.min_clients}; dropped: "
                      f"{self.names(dropped) or 'none'}. "
                      f"The checkpoint of the last completed round is kept in {self.core.run_dir}")
            return
        if phase == "train":
            self.finish_round(answered, dropped)
        elif phase == "val":
            self.set_thresholds(answered)
        elif phase == "report":
            self.finish_eval(answered)

    # -- training
    def assign(self, clients: list[str]) -> dict[str, int]:
        """Which rank trains each of this round's clients: the rank that holds its rows (its home). A pooled
        worker trains all of its home clients sampled this round, one after the other: measured, loading another
        client's rows for a round costs far more than training it (load_split 0.35 s vs 0.02-0.2 s of training
        at 1,008 synthetic clients; worse with real N-BaIoT attack files), and the workers share the machine's
        cores anyway."""
        return {c: self.home[c] for c in clients}

    def begin_round(self) -> None:
        common = self.core.begin_round()
        sampled = self.core.sampled
        self._open_phase("train", S2C_TRAIN, self.assign(self._reachable(sampled)), common,
                         lambda c: {"plan": self.core.plan(c).to_dict()}, sampled)

    def finish_round(self, answered: list[str], dropped: list[str]) -> None:
        sent, received = self.com_manager.bytes_sent, self.com_manager.bytes_received
        traffic: dict[str, Any] = {"bytes_sent": sent - self.bytes_mark[0], "bytes_received": received - self.bytes_mark[1]}
        if self.pooled:  # which worker rank trained which client
            traffic["workers"] = {c: self.assigned[c] for c in answered}
        self.bytes_mark = (sent, received)
        line = self.core.finish_round({c: self.replies[c] for c in answered}, dropped, traffic)
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
        clients = self._reachable(self.clients)
        self._open_phase("val", S2C_EVAL_STATS, {c: self.home[c] for c in clients}, common, lambda _c: {}, clients)

    def set_thresholds(self, answered: list[str]) -> None:
        self.core.set_thresholds({c: ErrorStats(**self.replies[c]["val_stats"]) for c in answered})
        common, own = self.core.counts_request()
        self._open_phase("report", S2C_EVAL_COUNTS, {c: self.home[c] for c in answered}, common, own, answered)

    def finish_eval(self, answered: list[str]) -> None:
        say(self.core.finish_eval({c: self.replies[c]["report"] for c in answered}))
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
    """A client process: a board holding its one device's rows, or a simulation worker holding its home
    clients' rows. Trains when asked, reports counts, never sends rows."""

    def __init__(self, args, home: dict[str, LocalClient], rank: int, n_ranks: int, rules: ClientRules,
                 transport: TransportFactory) -> None:
        """home: the clients this rank holds (says hello for, trains, evaluates); a message about any other
        client is rejected as not this rank's."""
        self.home = home
        self.label = next(iter(home)) if len(home) == 1 else f"{len(home)} clients"
        self.rules = rules
        self.welcomed = False
        self.first_try = time.monotonic()
        self.last_server_msg = time.monotonic()
        model = next(iter(home.values())).model
        super().__init__(args, rank, n_ranks + 1, transport, Expectations.of(model, list(home)), {0})

    def register_message_receive_handlers(self) -> None:
        for msg_type, handler in (
            (CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.on_ready), (LOCAL_TICK, self.on_tick),
            (S2C_PING, self.on_ping), (S2C_WELCOME, self.on_welcome), (S2C_TRAIN, self.on_train),
            (S2C_EVAL_STATS, self.on_eval_stats), (S2C_EVAL_COUNTS, self.on_eval_counts), (S2C_FINISH, self.on_finish),
        ):
            self.register_message_receive_handler(msg_type, handler)

    def _say(self, line: str) -> None:
        if self.rules.announce:
            say(f"client {self.rank} ({self.label}): {line}")

    def hello(self) -> bool:
        return all([self.send(C2S_HELLO, 0, **local.hello()) for local in self.home.values()])

    def on_ready(self, _msg: Message) -> None:
        self._say(f"{sum(c.n_train for c in self.home.values())} training rows; connecting to the server")
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
        """Train each client the message names, one after the other; each update goes back as soon as it is ready
        (the server checks it while this rank trains the next)."""
        self._seen_server()
        self.welcomed = True
        for client, own in msg.get("clients").items():
            plan = RoundPlan.from_dict(own["plan"])
            update = self.home[client].train(msg.get("model"), msg.get("normalizer"), plan)
            self._say(f"round {plan.round_idx + 1}: trained {update['n']} rows at lr {plan.lr:.6g}, "
                      f"loss {update['loss']:.5f} ({update['train_seconds']:.1f}s)")
            self.reply(C2S_UPDATE, round=plan.round_idx, client=client, **update)

    def on_eval_stats(self, msg: Message) -> None:
        self._seen_server()
        for client in msg.get("clients"):
            self.reply(C2S_VAL_STATS, round=msg.get("round"), client=client,
                       val_stats=self.home[client].validation_stats(msg.get("model"), msg.get("normalizer")))

    def on_eval_counts(self, msg: Message) -> None:
        self._seen_server()
        for client, own in msg.get("clients").items():
            report = self.home[client].report(msg.get("global_threshold"), own["device_threshold"], msg.get("window"))
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
