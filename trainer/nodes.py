"""The server and client nodes of every federated run, on FedML's `FedMLCommManager`.

One protocol for both run paths: `sh run_simulation.sh N` runs these nodes on MPI ranks
(`trainer.transport.MpiTransport`), `run_server.sh` / `run_client.sh` on gRPC
(`deployment.grpc_transport.FedIoTGrpcTransport`). The nodes are thin: the server asks
the round order is `federation.driver.run_federation`, for which the server node is a grid
(`ask` one phase, get the answers); the client node answers with `federation.client.answers`. What FedML 0.9.6 lacks is added here: a round deadline and a
minimum number of clients, clients that drop and rejoin, a send to a dead client that never kills
the server, start in any order (bounded retries), a checkpoint after every round and resume, and
evaluation from client-side counts only (no raw row ever reaches the server).

Messages and what each may hold: `federation.messages`; every message received is validated
against it first, and a rejected one is logged, counted (`rejected` in rounds.jsonl) and dropped.

Every handler runs on the transport's receive thread; timers and the server's driver thread only post local
messages. The server keeps what its status page shows in a `monitor.status.StatusStore` (boards, rejections; the run's
outputs add the rounds) and serves it (`status_of`); each client reports its health (`monitor.health`) every
status_args.health_interval_s.
"""
from __future__ import annotations

import logging
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from fedml.core.distributed.communication.base_com_manager import BaseCommunicationManager
from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.fedml_comm_manager import FedMLCommManager

from federation.client import LocalClient, answers, home_clients
from federation.driver import RoundFailed, quorum, run_federation
from federation.outputs import RunOutputs
from federation.state import RoundState
from federation.messages import (
    ANSWER_TO, C2S_HEALTH, C2S_HELLO, C2S_REPORT, C2S_UPDATE, C2S_VAL_STATS, MAX_WARNING_CHARS, S2C_EVAL_COUNTS,
    S2C_EVAL_STATS, S2C_FINISH, S2C_PING, S2C_TRAIN, S2C_WELCOME, TYPED, Expectations, Hello, Receiver, Request,
    answer_client,
)
from trainer.settings import CommArgs
from fediot.console import names_line, say
from fediot.rundir import peak_rss_mb, write_json
from monitor.health import HealthProbe, WarningBuffer
from monitor.http import StatusServer
from monitor.metrics import run_metrics
from monitor.page import render_page
from monitor.refusals import MAX_REJECTIONS_KEPT, RefusalLog, RefusalTally
from monitor.status import StatusStore
from trainer.fedml_glue import fds_to_file
from trainer.transport import HEADER_KEYS, PeerRefused, PeerUnreachable

log = logging.getLogger("fediot.nodes")

LOCAL_TICK = "fediot_tick"
LOCAL_DEADLINE = "fediot_deadline"
LOCAL_ASK = "fediot_ask"  # the driver thread's request, posted to the receive thread
LOCAL_FINISH = "fediot_end"  # the driver thread's end of the run
LOCAL_HEALTH = "fediot_health_due"  # a client's timer: time to report its health
LOCAL_QUARANTINE = "fediot_quarantine"  # the transport refuses a sender for the rest of the run
LOCAL_SEND_FAILED = "fediot_send_failed"  # a message the server queued for a board could not be delivered
LOCAL_TYPES = {LOCAL_TICK, LOCAL_DEADLINE, LOCAL_ASK, LOCAL_FINISH, LOCAL_HEALTH, LOCAL_QUARANTINE, LOCAL_SEND_FAILED,
               CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY}

STATUS_EVERY_S = 10.0
ALLOWANCE_BURST = 4.0  # messages a board may send unasked in a row (a hello and health reports; a retried answer)

TransportFactory = Callable[[], BaseCommunicationManager]


class _Node(FedMLCommManager):
    """FedML comm manager on one of our transports, with helpers for sends and timers."""

    def __init__(self, args, rank: int, size: int, transport: TransportFactory, expect: Expectations,
                 peer_ranks: set[int]) -> None:
        self._make_transport = transport
        # decoded by the transport (its limits, the sender's rank); validated here against what this node knows
        self.receives = Receiver(expect, self.reject)
        self.peer_ranks = peer_ranks  # who may send to this node at all
        self.last_send_error = ""
        self.refused = False  # the last failed send was refused by the peer, not lost
        self.exit_code = 0
        self.error: str | None = None
        self.tally = RefusalTally(MAX_REJECTIONS_KEPT)  # the server's driver thread takes them per round
        # the server sets its configured rate; a board refuses little (messages from anyone but the server)
        self.refusal_log = RefusalLog(log, CommArgs.log_refusals_per_minute)
        self.status: StatusStore | None = None  # the server's, for its status page
        super().__init__(args, None, rank, size, "FEDIOT")

    def _init_manager(self) -> None:
        self.com_manager = self._make_transport()
        self.com_manager.reject = self.reject
        self.com_manager.peer_ranks = self.peer_ranks  # bytes from any other rank are refused before decoding
        admission = getattr(self.com_manager, "admission", None)
        if admission is not None:  # the gRPC transport: its quarantines reach this node's own thread
            admission.on_quarantine = lambda key, why: self.post(LOCAL_QUARANTINE, key=key, why=why)
        self.com_manager.add_observer(self)

    def reject(self, sender: str, reason: str, count: int = 1) -> None:
        """Messages that are not what the protocol allows: log them, count them, go on (the first few reasons are
        kept for the round's record; the count is exact)."""
        self.refusal_log.warn(sender, reason, count)
        if self.status is not None:
            self.status.rejected(sender, reason, count, health=reason.startswith(C2S_HEALTH))
        self.tally.add(sender, reason, count)

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
        if not self.receives.valid(msg_type, fields, sender):
            strike = getattr(self.com_manager, "strike_certified", None)
            if strike is not None and msg_type != C2S_HEALTH:  # fields no honest board of this version sends (not:
                # late, or too often; nor a health report's numbers, which only the page shows: a board whose
                # monitoring misreads keeps training)
                strike(int(msg_params.get_sender_id()), sender)
            self.invalid(msg_type, fields, int(msg_params.get_sender_id()))
            return
        if handler is None:
            self.reject(sender, f"{msg_type} is not a message for rank {self.rank}")
            return
        try:
            handler(msg_params)
        except Exception as exc:  # noqa: BLE001 - no message may stop this node: log it with its sender, count it
            log.exception("handling %s from %s failed", msg_type, sender)
            self.reject(sender, f"{msg_type}: handling it failed ({type(exc).__name__}: {exc})")

    def invalid(self, msg_type: str, fields: dict[str, Any], rank: int) -> None:
        """A message from `rank` that its type's validator refused (already rejected and counted)."""

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

    def shutdown(self) -> None:
        """After the run: release what the node holds beside its transport."""


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
            return cls(None, quorum(cfg), float("inf"), cfg.comm.retry_interval_s, False, False)
        return cls(float(cfg.train.round_timeout_s), quorum(cfg), float(cfg.comm.wait_for_clients_s),
                   float(cfg.comm.retry_interval_s), True, True)


# ------------------------------------------------------------------------------------------ server
class ServerNode(_Node):
    """The server's side of the wire: a `federation.driver.Grid` on FedML's communication manager.

    It carries messages and applies the waiting policies (how long to wait for clients and answers, pings, rejoin,
    unreachable ranks); the round order is `federation.driver.run_federation`, which runs on its own thread (started
    when the transport is ready) and calls `join`/`ask`. Every handler still runs on the transport's receive
    thread: `ask` posts the request there and waits for the phase to close (all answers, or the deadline).

    Clients are names (`cfg.clients`); ranks are processes. Client i's home is worker rank
    client_ranks[i % workers]: it says hello for it, trains it when it is sampled and evaluates it. A board is one
    client on its own rank."""

    def __init__(self, args, cfg, expect_model: torch.nn.Module, client_ranks: list[int], transport: TransportFactory,
                 drive: Callable[["ServerNode"], None], status: StatusStore | None = None,
                 status_server: StatusServer | None = None) -> None:
        """drive: the run, given this node as its grid (`run_federation` with the state and outputs bound);
        status: what the status page shows (boards, rejections; the run's outputs add the rounds), served by
        status_server."""
        self.cfg = cfg
        self.rules = ServerRules.of(cfg)
        self.client_ranks = client_ranks
        self.clients = cfg.clients
        self.home = {c: client_ranks[i % len(client_ranks)] for i, c in enumerate(self.clients)}
        self.pooled = cfg.is_simulation and len(client_ranks) < len(self.clients)
        self.drive = drive
        self.connected: dict[int, set[str]] = {}  # rank -> the clients it said hello for
        self.joined: dict[str, Hello] = {}  # client -> its latest hello
        self.joined_lock = threading.Lock()  # `joined` is read by the driver thread
        self.phase = "waiting"
        self.phase_id = 0  # increases with every phase, so stale deadlines are ignored
        self.request: _Request | None = None  # the open phase's request
        self.assigned: dict[str, int] = {}  # client -> the rank asked about it in the open phase
        self.expected: set[str] = set()
        self.replies: dict[str, Any] = {}
        self.failed: set[str] = set()
        self.refused_hello: set[str] = set()  # clients whose hello was refused (the join does not wait for them)
        self.start_ready = threading.Event()  # the join is complete (or failed: `closed`)
        self.closed = False
        self.started = time.monotonic()
        self.last_status = ""
        self.last_status_at = 0.0
        self.bytes_mark = (0, 0)
        self.last_workers: dict[str, int] = {}
        self.round = 0  # of the open request (for console lines)
        self.health_at: dict[int, float] = {}  # rank -> when its last health report was taken
        revoked = set(cfg.comm.revoked_ranks or []) if not cfg.is_simulation else set()
        self.revoked_clients = {c for c, r in self.home.items() if r in revoked}  # and quarantined ones
        self.quarantined: set[int] = set()  # ranks the transport refuses for the rest of the run
        super().__init__(args, 0, len(client_ranks) + 1, transport, Expectations.of(expect_model, self.clients),
                         set(client_ranks))
        self.refusal_log.per_minute = cfg.comm.log_refusals_per_minute
        self.status, self.status_server = status, status_server
        admission = getattr(self.com_manager, "admission", None)
        if admission is not None:  # beside the answers it asks for: a board's hellos (one per retry interval) and
            # health reports (one per half interval: faster ones are refused anyway), with one of each in reserve
            rate = 1.0 / cfg.comm.retry_interval_s + 2.0 / cfg.status.health_interval_s
            admission.pace = (rate, ALLOWANCE_BURST)

    # -- plumbing
    def register_message_receive_handlers(self) -> None:
        for msg_type, handler in (
            (CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.on_ready),
            (LOCAL_TICK, self.on_tick), (LOCAL_DEADLINE, self.on_deadline), (LOCAL_ASK, self.on_ask),
            (LOCAL_FINISH, self.on_finish), (LOCAL_QUARANTINE, self.on_quarantine),
            (LOCAL_SEND_FAILED, self.on_send_failed),
            (C2S_HELLO, self.on_hello), (C2S_UPDATE, self.on_reply), (C2S_VAL_STATS, self.on_reply),
            (C2S_REPORT, self.on_reply), (C2S_HEALTH, self.on_health),
        ):
            self.register_message_receive_handler(msg_type, handler)

    def names(self, clients: list[str] | set[str]) -> str:
        return names_line(clients, self.clients)

    def send(self, msg_type: str, receiver: int, **params: Any) -> bool:
        """With the gRPC transport, each board's messages go out on its own sender thread (a board that reads slowly
        or not at all cannot hold up this receive thread, nor the other boards' messages); a failure comes back as
        LOCAL_SEND_FAILED. MPI delivers without waiting for the receiver."""
        later = getattr(self.com_manager, "send_later", None)
        if later is None:
            return super().send(msg_type, receiver, **params)
        later(self.message(msg_type, receiver, **params),
              lambda rank, error, _refused: self.post(LOCAL_SEND_FAILED, rank=rank, error=error, kind=msg_type))
        return True

    def on_send_failed(self, msg: Message) -> None:
        """A board a message could not reach: dropped from the open phase and the federation until it says hello
        again (a ping to a board that has not joined failing is the normal case while waiting)."""
        rank = msg.get("rank")
        log.info("send %s to %d failed: %s", msg.get("kind"), rank, msg.get("error"))
        if rank in self.connected and msg.get("kind") != S2C_PING:  # a ping goes to boards not connected (its
            # failure may come back after the board's hello)
            self._unreachable(rank)
            if self.request is not None:
                self._maybe_close()

    def on_ready(self, _msg: Message) -> None:
        if self.rules.announce:
            say(f"server listening; waiting for {len(self.client_ranks)} client(s): "
                + ", ".join(f"{r}={c}" for c, r in self.home.items()))
        threading.Thread(target=self._drive, name="fediot-driver", daemon=True).start()
        self.post(LOCAL_TICK)

    def _drive(self) -> None:
        """The driver thread: the run, then FINISH to the clients; an unexpected error stops the node with it."""
        try:
            self.drive(self)
        except RoundFailed:
            pass  # the driver has told the clients (`finish` with the error): the node stops with exit code 3
        except Exception as exc:  # noqa: BLE001 - a bug must stop this node with a message, not hang it
            log.exception("the run stopped")
            self.post(LOCAL_FINISH, error=f"unexpected failure: {type(exc).__name__}: {exc} (traceback in logs/)",
                      exit_code=1)

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
        pending = getattr(self.com_manager, "pending", lambda _r: 0)
        for r in self.client_ranks:  # ask clients that started before us (or survived a restart); one ping at a time
            if r not in self.connected and r not in self.quarantined and not pending(r):
                self.send(S2C_PING, r)
        self._status()
        waited = time.monotonic() - self.started
        if self._all_heard() and self.joined:
            self.start_training()
        elif waited >= self.rules.wait_for_clients_s:
            if len(self.joined) >= self.rules.min_clients:
                say(f"waited {waited:.0f}s (comm_args.wait_for_clients_s); starting with {len(self.joined)} client(s)")
                self.start_training()
            else:
                self.close(3, f"only {len(self.joined)} of {len(self.clients)} client(s) connected within "
                              f"comm_args.wait_for_clients_s = {self.rules.wait_for_clients_s:g}s; "
                              f"train_args.min_clients_per_round = {self.rules.min_clients}")
        else:
            self.post_after(self.rules.retry_interval_s, LOCAL_TICK)

    def on_hello(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        hello = Hello.of(msg.get_params())
        if self.home.get(hello.device) != rank:  # counted and logged at the refusal rate, not said each time
            homes = sorted(c for c, r in self.home.items() if r == rank)
            self.reject(f"rank {rank}", f"{C2S_HELLO}: says it holds {hello.device[:80]}, the config maps rank {rank} "
                                        f"to {self.names(homes)}")
            return
        with self.joined_lock:
            self.joined[hello.device] = hello
        self.refused_hello.discard(hello.device)
        self.connected.setdefault(rank, set()).add(hello.device)
        if self.status is not None:
            address, certified = self.com_manager.peer_addresses.get(rank, (None, False))
            self.status.board_hello(rank, address, "MPI rank" if address == "MPI" else
                                    f"certificate of rank {rank}" if certified else "none (plaintext)")
        self.send(S2C_WELCOME, rank, round=self.round)
        if self.phase == "waiting":
            self._status(force=True)
            if self._all_heard():
                self.start_training()
        elif self.rules.announce:  # training has started: a new or restarted board joins at the next request
            say(f"client {rank} ({hello.device}) (re)joined; it takes part from the next round")

    def start_training(self) -> None:
        if not self.joined:
            self.close(3, f"no client's hello was accepted (refused: {self.names(self.refused_hello)}; see logs/)")
            return
        self.phase = "busy"
        for device in sorted(self.revoked_clients - set(self.joined)):
            say(f"note: {device} (rank {self.home[device]}) is revoked (comm_args.revoked_ranks); starting without it")
        for device in sorted(self.refused_hello - set(self.joined)):
            say(f"warning: the hello of {device} (rank {self.home[device]}) was refused (see rounds.jsonl and logs/); "
                f"starting without it")
        if self.rules.announce:
            say(f"starting: {len(self.joined)} client(s), round deadline {self.rules.round_timeout_s:g}s, "
                f"at least {self.rules.min_clients} client(s) per round")
        self.start_ready.set()

    # -- the Grid (called on the driver thread)
    def join(self) -> dict[str, Hello]:
        self.start_ready.wait()
        if self.closed:  # the wait for clients failed; the node has said why
            raise RoundFailed(self.error or "the server stopped before the run started")
        return self.hellos()

    def hellos(self) -> dict[str, Hello]:
        with self.joined_lock:
            return dict(self.joined)

    def ask(self, kind: str, own: dict[str, dict[str, Any]], common: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        request = _Request(kind, own, common)
        self.post(LOCAL_ASK, request=request)
        request.done.wait()
        return request.answers, request.dropped

    def traffic(self) -> dict[str, Any]:
        sent, received = self.com_manager.bytes_sent, self.com_manager.bytes_received
        out: dict[str, Any] = {"bytes_sent": sent - self.bytes_mark[0], "bytes_received": received - self.bytes_mark[1]}
        if self.pooled:  # which worker rank trained which client
            out["workers"] = dict(self.last_workers)
        self.bytes_mark = (sent, received)
        return out

    def take_rejections(self) -> tuple[int, list[dict[str, str]], dict[str, dict[str, int]]]:
        return self.tally.take()

    def where(self) -> str:
        return f" on {len(self.client_ranks)} worker ranks" if self.pooled else ""

    def finish(self, error: str | None = None) -> None:
        self.post(LOCAL_FINISH, error=error, exit_code=3 if error else 0)

    # -- phases (receive thread)
    def on_ask(self, msg: Message) -> None:
        """Open a phase: one message per rank with clients in the request (the `common` fields once, `clients` =
        {client: its own fields}), then wait for one answer per client. One message per rank, not per client: a
        worker holding many clients gets one copy of the model (measured at 1,008 clients: per-client messages cost
        the server an encode, the worker a decode and check, and the pair a hand-off each, ~40 % of a round of
        16-row clients). A client that is not connected is not sent anything and counts as dropped."""
        request: _Request = msg.get("request")
        self.request = request
        self.round = int(request.common["round"])
        self.phase_id += 1
        self.phase = request.kind
        self.replies = {}
        self.failed: set[str] = set()  # clients whose answer was refused in this phase
        reachable = [c for c in request.own if c in self.joined and self.home[c] in self.connected]
        self.assigned = {c: self.home[c] for c in reachable}
        by_rank: dict[int, list[str]] = {}
        for client, rank in sorted(self.assigned.items(), key=lambda cr: (cr[1], cr[0])):
            by_rank.setdefault(rank, []).append(client)
        self.expected = {c for clients in by_rank.values() for c in clients}
        admission = getattr(self.com_manager, "admission", None)
        for rank, clients in sorted(by_rank.items(), key=lambda rc: -len(rc[1])):  # the longest work starts first
            if admission is not None:  # the gRPC transport reads from this rank as many answers as asked, no more
                admission.grant(rank, len(clients))
            if not self.send(request.kind, rank, clients={c: request.own[c] for c in clients}, **request.common):
                self._unreachable(rank)
        if request.kind == S2C_TRAIN and self.pooled:
            self.last_workers = dict(self.assigned)
        if not self.expected:
            self.post(LOCAL_DEADLINE, phase_id=self.phase_id)
        elif self.rules.round_timeout_s is not None:
            self.post_after(self.rules.round_timeout_s, LOCAL_DEADLINE, phase_id=self.phase_id)

    def _unreachable(self, rank: int) -> None:
        """A rank a send failed to: its clients are dropped from the phase (and from the federation until it
        says hello again)."""
        say(f"client {rank} ({self.names(self.connected.get(rank, set()))}) unreachable; dropped until it reconnects")
        if self.status is not None:
            self.status.board_dropped(rank)
        self._drop(rank)

    def on_quarantine(self, msg: Message) -> None:
        """The transport refuses a rank for the rest of the run (its certificate sent messages no honest board
        sends): its clients leave the federation like revoked ones, and no phase or join waits for them."""
        rank = msg.get("key")
        if not isinstance(rank, int) or rank not in self.client_ranks or rank in self.quarantined:
            return
        say(f"warning: client {rank} ({self.names([c for c, r in self.home.items() if r == rank])}) "
            f"quarantined: {msg.get('why')}")
        self.send(S2C_FINISH, rank, error=f"this board is quarantined: {msg.get('why')}")  # so it stops now
        self.quarantined.add(rank)
        self.revoked_clients |= {c for c, r in self.home.items() if r == rank}
        if self.status is not None:
            self.status.board_quarantined(rank)
        self._drop(rank)
        if self.request is not None:
            self._maybe_close()
        elif self.phase == "waiting" and self.joined and self._all_heard():
            self.start_training()

    def _drop(self, rank: int) -> None:
        """A rank's clients leave the open phase and the federation (until it says hello again, if it may)."""
        self.expected -= {c for c, r in self.assigned.items() if r == rank}
        with self.joined_lock:
            for c in self.connected.pop(rank, set()):
                self.joined.pop(c, None)

    def invalid(self, msg_type: str, fields: dict[str, Any], rank: int) -> None:
        """A refused answer about a client this rank was asked about counts as that client's answer-that-failed: the
        phase does not wait for it (a simulation has no deadline), and the client is dropped from the phase. A refused
        hello about one of the rank's clients: the join does not wait for that client (it may say hello again)."""
        if msg_type == C2S_HELLO:
            device = fields.get("device")
            if isinstance(device, str) and self.home.get(device) == rank and device not in self.joined:
                self.refused_hello.add(device)
                if self.phase == "waiting" and self._all_heard():
                    self.start_training()
            return
        if self.request is None or msg_type != ANSWER_TO[self.request.kind]:
            return
        report = fields.get("report")
        claimed = report.get("device") if isinstance(report, dict) else fields.get("client")
        if isinstance(claimed, str) and self.assigned.get(claimed) == rank and claimed not in self.replies:
            self.failed.add(claimed)
            self._maybe_close()

    def _all_heard(self) -> bool:
        """Every client has said hello, or said one that was refused, or is on a revoked rank (comm_args.revoked_ranks:
        its certificate is refused, it can never join, so the join does not wait for it)."""
        heard = set(self.joined) | self.refused_hello | self.revoked_clients
        return len(heard) >= len(self.clients)

    def _maybe_close(self) -> None:
        if len(self.replies) + len(self.failed & self.expected) >= len(self.expected):
            self.close_phase()

    def on_health(self, msg: Message) -> None:
        """A board's report about itself (validated): shown on the status page; reports closer together than half
        of status_args.health_interval_s are rejected and counted (a board cannot make the server busy with them)."""
        rank = int(msg.get_sender_id())
        now = time.monotonic()
        if now - self.health_at.get(rank, -1e18) < self.cfg.status.health_interval_s / 2:
            self.reject(f"rank {rank}", f"{C2S_HEALTH}: faster than every "
                                        f"{self.cfg.status.health_interval_s / 2:g}s (status_args.health_interval_s / 2)")
            return
        self.health_at[rank] = now
        if self.status is not None:
            self.status.board_health(rank, msg.get("health"))

    def on_reply(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        fields = msg.get_params()
        if self.status is not None:
            self.status.board_seen(rank)
        client = answer_client(msg.get_type(), fields)
        if (self.request is None or msg.get_type() != ANSWER_TO[self.request.kind] or fields["round"] != self.round
                or client not in self.expected or client in self.replies or client in self.failed):
            self.reject(f"rank {rank}", f"{msg.get_type()}: late or not asked for (round {fields['round']}, "
                                        f"{str(client)[:80]})")
            return
        if self.assigned.get(client) != rank:
            self.reject(f"rank {rank}", f"{msg.get_type()} about {client}, which rank {rank} was not asked about")
            return
        self.replies[client] = TYPED[msg.get_type()].of(fields)
        self._maybe_close()  # replies only ever hold expected clients

    def on_deadline(self, msg: Message) -> None:
        if msg.get("phase_id") == self.phase_id and self.request is not None:
            missing = sorted(self.expected - set(self.replies))
            if missing:
                say(f"round {self.round + 1}: deadline ({self.rules.round_timeout_s:g}s) passed without "
                    + ", ".join(f"{self.assigned[c]}:{c}" for c in missing))
            self.close_phase()

    def close_phase(self) -> None:
        request, self.request = self.request, None
        self.phase = "busy"
        request.answers = dict(self.replies)
        request.dropped = sorted(set(request.own) - set(self.replies))
        request.done.set()

    def on_finish(self, msg: Message) -> None:
        self.close(msg.get("exit_code"), msg.get("error"))

    def close(self, exit_code: int, error: str | None) -> None:
        """FINISH to every connected rank (with the error that stopped the run), then stop; once. In a simulation to
        every rank: a rank whose messages were refused (and so dropped) has no idle timeout to end it, and kept
        saying hello for as long as mpirun waited (issue 34: run_simulation.sh not back 14 minutes later); MPI
        delivers to a live rank at once. A deployment's dropped board ends on its own idle timeout, and a send to a
        board that is gone would wait comm_args.send_timeout_s."""
        if self.closed:
            return
        for rank in sorted(self.peer_ranks if self.cfg.is_simulation else self.connected):
            if error:
                self.send(S2C_FINISH, rank, error=error)
            else:
                self.send(S2C_FINISH, rank)
        if self.status is not None and error:
            self.status.finish(error)
        self.closed = True
        self.stop(exit_code, error)
        if not self.start_ready.is_set():  # the join failed: release the driver thread
            self.start_ready.set()


    def shutdown(self) -> None:
        """When its page was opened during the run, the status server stays up status_args.linger_watched_s after it
        (the final page, the report's links: issue 36, the page vanished as the run ended), and linger_s after any
        run; then stops. Ctrl-C ends the wait. Nobody watching and linger_s 0 (a service, a script): no wait."""
        if self.status_server is None:
            return
        st = self.cfg.status
        linger = max(st.linger_s, st.linger_watched_s if self.status_server.views > 0 else 0.0)
        if linger > 0:
            say(f"status page: {self.status_server.url} stays up {linger:g}s (status_args.linger_s, linger_watched_s; "
                "Ctrl-C ends it now)")
            try:
                time.sleep(linger)
            except KeyboardInterrupt:
                pass
        self.status_server.stop()


@dataclass
class _Request:
    """One `ask`: filled in on the receive thread, read by the driver thread after `done`."""

    kind: str
    own: dict[str, dict[str, Any]]
    common: dict[str, Any]
    answers: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


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
                 transport: TransportFactory, health: HealthProbe | None = None, health_interval_s: float = 10.0) -> None:
        """home: the clients this rank holds (says hello for, trains, evaluates); a message about any other
        client is rejected as not this rank's; health: what this rank reports about itself every health_interval_s
        (None: nothing)."""
        self.home = home
        self.health = health
        self.health_interval_s = health_interval_s
        self.last_round: int | None = None
        self.health_reports = 0  # sent by this process (its clients' health_fields hook sees the count)
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
            (LOCAL_HEALTH, self.on_health_due),
            (S2C_PING, self.on_ping), (S2C_WELCOME, self.on_welcome), (S2C_TRAIN, self.on_request),
            (S2C_EVAL_STATS, self.on_request), (S2C_EVAL_COUNTS, self.on_request), (S2C_FINISH, self.on_finish),
        ):
            self.register_message_receive_handler(msg_type, handler)

    def _say(self, line: str) -> None:
        if self.rules.announce:
            say(f"client {self.rank} ({self.label}): {line}")

    def hello(self) -> bool:
        return all([self.send(C2S_HELLO, 0, **local.hello().to_fields()) for local in self.home.values()])

    def on_ready(self, _msg: Message) -> None:
        self._say(f"{sum(c.n_train for c in self.home.values())} training rows; connecting to the server")
        self.post(LOCAL_TICK)
        if self.health is not None:
            self.post_after(self.health_interval_s, LOCAL_HEALTH)

    def on_health_due(self, _msg: Message) -> None:
        """Report this rank's health (once welcomed; one try: a lost report is replaced by the next)."""
        if self.welcomed:
            self.health_reports += 1
            fields = self.health.fields(self.last_round)
            for client in self.home.values():  # an honest client's hook passes them on (attacks/: health_lies)
                fields = client.health_fields(fields, self.health_reports)
            self.send(C2S_HEALTH, 0, health=fields)
            write_json(self.health.report_file, fields)  # what it said last, for whoever looks on the board
        factor = min(client.health_interval_factor for client in self.home.values())
        self.post_after(self.health_interval_s * factor, LOCAL_HEALTH)

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

    def on_request(self, msg: Message) -> None:
        """Answer a server request about this rank's clients (`federation.client.answers`), one message per client as
        soon as it is ready (the server checks it while this rank computes the next)."""
        self._seen_server()
        self.welcomed = True
        for msg_type, answer in answers(self.home, Request.of(msg.get_type(), msg.get_params())):
            if msg_type == C2S_UPDATE:
                self.last_round = answer.round + 1
                self._say(f"round {answer.round + 1}: trained {answer.n} rows at lr {answer.lr:.6g}, "
                          f"loss {answer.loss:.5f} ({answer.train_seconds:.1f}s)")
            fields = answer.to_fields()
            self.reply(msg_type, **fields)
            for extra in self.home[answer_client(msg_type, fields)].extra_messages(self.rank,
                                                                                 self.com_manager.max_bytes):
                try:  # none from an honest client (attacks/: flood); a refusal is what such a sender expects
                    self.com_manager.send_bytes(0, extra)
                except PeerUnreachable as exc:
                    log.info("extra message: %s", exc)

    def on_finish(self, msg: Message) -> None:
        error = msg.get("error")
        if error:
            self.stop(3, f"the server stopped the run: {error}")
        else:
            self._say("run finished")
            self.stop(0)


def server_node(args, cfg, run_dir: Path, data_info: dict[str, Any], kind: str, client_ranks: list[int],
                transport: TransportFactory, checkpoint: dict[str, Any] | None = None) -> ServerNode:
    """The server of a run: a new round state (or one restored from `checkpoint`), its outputs in `run_dir`, and the
    driver on this node as its grid."""
    state = RoundState(cfg, data_info, kind)
    if checkpoint is not None:
        state.restore(checkpoint)
    rules = ServerRules.of(cfg)
    status, status_server = status_of(cfg, run_dir, kind, client_ranks)
    out = RunOutputs(run_dir, cfg.tracking.tensorboard, rules.checkpoint, status=status)
    return ServerNode(args, cfg, state.model, client_ranks, transport,
                      lambda grid: run_federation(state, grid, out, rules.min_clients), status, status_server)


def status_of(cfg, run_dir: Path, kind: str, client_ranks: list[int]) -> tuple[StatusStore, StatusServer | None]:
    """The run's status store, and its status server when status_args.port is set (started; its URL printed and kept
    in RUN_DIR/status.json). A port in use is a warning: the run goes on without the page."""
    st = cfg.status
    clients = {r: home_clients(cfg, k + 1, len(client_ranks)) for k, r in enumerate(client_ranks)}
    config = {section: dict(keys) for section, keys in cfg.values.items()}
    if config.get("status_args", {}).get("token") is not None:
        config["status_args"]["token"] = "(set)"  # the page never shows the token
    store = StatusStore({"kind": kind, "run_dir": str(run_dir), "rounds": cfg.train.comm_round, "clients": clients,
                         "config": config}, st.keep_rounds)
    if st.port is None:
        return store, None
    try:
        server = StatusServer(st.host, st.port, st.token, store.snapshot, run_metrics(store.snapshot),
                              lambda snap: render_page(snap, st.refresh_s), run_dir, store.page_request).start()
    except OSError as exc:
        say(f"warning: status page not served: {st.host}:{st.port}: {exc.strerror or exc} (status_args.port; "
            f"0 picks a free port)")
        return store, None
    write_json(run_dir / "status.json", {"url": server.url, "host": server.host, "port": server.port,
                                         "token": st.token is not None})
    say(f"status page: {server.url}" + (" (with ?token=..., status_args.token)" if st.token else ""))
    return store, server


def client_health(cfg, run_dir: Path, report_file: Path) -> HealthProbe:
    """What a board (or simulation worker) reports about itself; its warnings and errors are collected from now."""
    buffer = WarningBuffer(cfg.status.health_warnings, MAX_WARNING_CHARS)
    logging.getLogger().addHandler(buffer)
    return HealthProbe(run_dir, buffer, 3 * cfg.status.health_interval_s, report_file)


def run_node(make_node: Callable[[], _Node], fedml_console: bool, log_file: Path, resources_file: Path,
             info: dict[str, Any]) -> _Node:
    """Build and run a node with FedML's output kept in the run's log; record its peak RSS and bytes."""
    with fds_to_file(log_file, not fedml_console):
        node = make_node()
        try:
            node.run()
        finally:
            node.shutdown()
    write_json(resources_file, {**info, "host": platform.node(), "machine": platform.machine(),
                                "peak_rss_mb": round(peak_rss_mb(), 1),
                                "bytes_sent": node.com_manager.bytes_sent,
                                "bytes_received": node.com_manager.bytes_received})
    return node
