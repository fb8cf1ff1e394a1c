"""A grid of `LocalClient`s in this process: the driver's rounds without processes or sockets, in seconds.

Every message still goes through the wire format (`federation.wire`: encode, decode with the size limit) and its
type's validator on the receiving side (`federation.messages.validate`), as between real processes, so what a
client sends is checked exactly as a server node checks it. What processes add on top (their transports, TLS,
signals, ports) is tested with real processes.

Faults a test can inject (`faults`): a client that does not answer a request (as one past the round deadline or a
crashed board: it is dropped), a client whose answer is replaced by other bytes (rejected and counted, as a node
does), a client that is gone until a given round and then says hello again (rejoin).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pathlib import Path

from federation.client import ClientFactory, ClientLoader, LocalClient, answers
from federation.driver import quorum, run_federation
from federation.messages import (
    ANSWER_TO, C2S_HELLO, Expectations, Hello, Receiver, Request, answer_client,
)
from federation.outputs import RunOutputs
from federation.state import RoundState
from federation.wire import encode
from fediot.config import FedIoTConfig
from monitor.refusals import MAX_REJECTIONS_KEPT, RefusalTally
from monitor.status import StatusStore

SERVER_RANK = 0


@dataclass
class Faults:
    """What goes wrong, by client. `silent(kind, round, client)`: that answer never comes. `tamper(kind, round,
    client, fields)`: the fields to send instead (or None to send as computed). `absent_until`: client -> the first
    round (0-based) at which it is there (it misses the join and rejoins then)."""

    silent: Callable[[str, int, str], bool] = lambda kind, rnd, client: False
    tamper: Callable[[str, int, str, dict[str, Any]], dict[str, Any] | None] = lambda kind, rnd, client, f: None
    absent_until: dict[str, int] = field(default_factory=dict)


class InProcessGrid:
    """Clients called directly; one client per "rank" (its index in `clients` + 1)."""

    def __init__(self, clients: dict[str, LocalClient], max_bytes: int, faults: Faults | None = None) -> None:
        self.clients = clients
        self.rank = {c: i + 1 for i, c in enumerate(clients)}
        self.max_bytes = max_bytes
        self.faults = faults or Faults()
        model = next(iter(clients.values())).model
        self.server_receives = Receiver(Expectations.of(model, list(clients)), self._reject, self.max_bytes)
        self.client_receives = {c: Receiver(Expectations.of(model, [c]), self._client_refused, self.max_bytes)
                                for c in clients}
        self.joined: dict[str, Hello] = {}
        self.round = 0
        self.bytes_sent = self.bytes_received = 0
        self.bytes_mark = (0, 0)
        self.tally = RefusalTally(MAX_REJECTIONS_KEPT)
        self.finished: str | None = None  # "" when finished without error

    # -- the wire, both ways
    def _to_server(self, client: str, msg_type: str, fields: dict[str, Any]) -> Any:
        """A client's message as the server receives it: bytes, decoded, validated, typed; None when rejected."""
        fields = self.faults.tamper(msg_type, self.round, client, fields) or fields
        raw = encode(msg_type, self.rank[client], SERVER_RANK, fields)
        self.bytes_received += len(raw)
        return self.server_receives.typed(raw, f"rank {self.rank[client]}")

    def _bytes_to_server(self, client: str, raw: bytes) -> None:
        """Bytes a client sends unasked (what attacks/ may add after an answer): decoded as a node decodes them,
        refused and counted; were they ever a well-formed message, it would still be one nobody asked for."""
        self.bytes_received += len(raw)
        sender = f"rank {self.rank[client]}"
        if self.server_receives.decoded(raw, sender) is not None:
            self._reject(sender, "a message nobody asked for")

    def _to_client(self, client: str, msg_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A server request as the client receives it: decoded and validated (a request it refuses is a bug here)."""
        raw = encode(msg_type, SERVER_RANK, self.rank[client], fields)
        self.bytes_sent += len(raw)
        receives = self.client_receives[client]  # its refusals raise (`_client_refused`)
        _, _, _, got = receives.decoded(raw, "rank 0")
        receives.valid(msg_type, got, "rank 0")
        return got

    @staticmethod
    def _client_refused(sender: str, reason: str) -> None:
        raise AssertionError(f"a client refused {sender}'s request: {reason}")

    def _reject(self, sender: str, reason: str) -> None:
        self.tally.add(sender, reason)

    def _present(self, client: str) -> bool:
        return self.faults.absent_until.get(client, 0) <= self.round

    # -- the Grid
    def join(self) -> dict[str, Hello]:
        for client in self.clients:
            if self._present(client):
                self._hello(client)
        return dict(self.joined)

    def _hello(self, client: str) -> None:
        hello = self._to_server(client, C2S_HELLO, self.clients[client].hello().to_fields())
        if hello is not None and hello.device == client:
            self.joined[client] = hello

    def hellos(self) -> dict[str, Hello]:
        return dict(self.joined)

    def ask(self, kind: str, own: dict[str, dict[str, Any]], common: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        self.round = int(common["round"])
        for client in self.clients:  # a client that comes back says hello before it is asked anything
            if client not in self.joined and self._present(client):
                self._hello(client)
        got: dict[str, Any] = {}
        for client in own:
            if client not in self.joined:
                continue
            request = self._to_client(client, kind, {**common, "clients": {client: own[client]}})
            for msg_type, message in answers({client: self.clients[client]}, Request.of(kind, request)):
                if self.faults.silent(kind, self.round, client):
                    continue
                answer = self._to_server(client, msg_type, message.to_fields())
                for extra in self.clients[client].extra_messages(self.rank[client], self.max_bytes):
                    self._bytes_to_server(client, extra)  # none from an honest client (attacks/: flood)
                if answer is None:
                    continue
                if msg_type != ANSWER_TO[kind] or answer_client(msg_type, message.to_fields()) != client:
                    self._reject(f"rank {self.rank[client]}", f"{msg_type} about another client than it was asked")
                    continue
                got[client] = answer
        return got, sorted(set(own) - set(got))

    def traffic(self) -> dict[str, Any]:
        out = {"bytes_sent": self.bytes_sent - self.bytes_mark[0], "bytes_received": self.bytes_received - self.bytes_mark[1]}
        self.bytes_mark = (self.bytes_sent, self.bytes_received)
        return out

    def take_rejections(self) -> tuple[int, list[dict[str, str]], dict[str, dict[str, int]]]:
        return self.tally.take()

    def where(self) -> str:
        return ""

    def finish(self, error: str | None = None) -> None:
        self.finished = error or ""


def run_in_process(cfg: FedIoTConfig, run_dir: Path, data_root: Path, data_info: dict[str, Any],
                   kind: str = "federated", faults: Faults | None = None, console: Callable[[str], None] | None = None,
                   checkpoint: dict[str, Any] | None = None, status: StatusStore | None = None,
                   make_client: ClientFactory | None = None) -> tuple[RoundState, InProcessGrid]:
    """A whole federated run of `cfg` in this process: the same driver, state, outputs and clients as
    `sh run_simulation.sh` (deployment configs: with checkpoints and their quorum), on an `InProcessGrid`; status:
    a status page's store that gets the rounds (bench/bench_status.py); make_client: `attacks.make_client` for
    attack_args (default: honest clients only)."""
    loader = ClientLoader(cfg, data_root, run_dir, make_client=make_client)
    grid = InProcessGrid({c: loader(c) for c in cfg.clients}, int(cfg.comm.max_message_mb * 2**20), faults)
    state = RoundState(cfg, data_info, kind)
    if checkpoint is not None:
        state.restore(checkpoint)
    out = RunOutputs(run_dir, cfg.tracking.tensorboard, checkpoint=not cfg.is_simulation, console=console,
                     status=status)
    run_federation(state, grid, out, quorum(cfg))
    return state, grid
