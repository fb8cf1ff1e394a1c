"""FedIoT's federated run on Flower's simulation engine (benchmark only; bench/flower_side_by_side.py runs it).

    .venv-flower/bin/python bench/flower_app.py CONFIG [--actors N]     (venv: bench/requirements-flower.txt)

The same config, data, partition, autoencoder, round driver and state (`federation.driver.run_federation` over
`federation.state.RoundState`: sampling, plans, aggregation with the defenses, thresholds, metrics) and client
answers (`federation.client.answers`) as `sh run_simulation.sh`, with the same message bytes (`federation.wire`,
checked by `federation.messages` on both sides). Only the process model and the transport are Flower's: a
ServerApp runs the driver on `FlowerGrid` (an adapter of Flower's Grid to the driver's `ask`), every client is a
virtual SuperNode (node_config partition-id -> `cfg.clients[partition-id]`), and Ray
actors (N, one CPU each) run the ClientApp for whichever node a message is for. As Flower's own examples do,
each actor keeps the data it has loaded (here: the clients' LocalClients) for later messages; what a client
must remember between the two evaluation messages (its scored rows) goes in Flower's per-node `context.state`.
Writes a run directory like the MPI simulation's (rounds.jsonl, metrics.json, ...) and prints it last.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from fediot import config as config_mod  # noqa: E402
from fediot.console import say  # noqa: E402
from federation import messages  # noqa: E402
from monitor.refusals import add_count, kind_of  # noqa: E402
from federation.wire import encode  # noqa: E402

ENV_CONFIG, ENV_DATA_ROOT, ENV_RUN_DIR = "FEDIOT_FLOWER_CONFIG", "FEDIOT_FLOWER_DATA_ROOT", "FEDIOT_FLOWER_RUN_DIR"
SERVER, CLIENT = 0, 1  # sender/receiver numbers in the wire header (Flower routes by node id, not by these)


def _content(raw: bytes) -> RecordDict:
    return RecordDict({"fediot": ConfigRecord({"wire": raw})})


# ------------------------------------------------------------------------------------------------ client
client_app = ClientApp()
_actor: dict[str, Any] = {}  # per Ray actor: config, loader, the LocalClients it has loaded


def _local(context: Context):
    """This node's client (loaded on the first message this actor gets for it, then kept)."""
    if not _actor:
        import torch

        from attacks.clients import make_client
        from federation.client import ClientLoader

        cfg = config_mod.load(os.environ[ENV_CONFIG])
        torch.set_num_threads(cfg.device.torch_threads)
        _actor.update(cfg=cfg, loader=ClientLoader(cfg, Path(os.environ[ENV_DATA_ROOT]), Path(os.environ[ENV_RUN_DIR]),
                                                         keep_devices=True, make_client=make_client),
                      clients={}, max_bytes=int(cfg.comm.max_message_mb * 2**20))
    name = _actor["cfg"].clients[int(context.node_config["partition-id"])]
    if name not in _actor["clients"]:
        _actor["clients"][name] = _actor["loader"](name)
    return _actor["clients"][name]


def _reply(msg: Message, msg_type: str, fields: dict[str, Any]) -> Message:
    return Message(_content(encode(msg_type, CLIENT, SERVER, fields)), reply_to=msg)


def _answer(msg: Message, context: Context) -> Message:
    """The node's client answers the request in `msg` as every FedIoT client does (`federation.client.answers`)."""
    from federation.client import answers

    local = _local(context)
    def refused(sender: str, why: str) -> None:  # a request this client refuses stops its node, said by Flower
        raise messages.ProtocolError(f"request from the {sender} refused: {why}")

    receives = messages.Receiver(messages.Expectations.of(local.model, [local.device]), refused, _actor["max_bytes"])
    msg_type, _, _, f = receives.decoded(msg.content["fediot"]["wire"], "server")
    receives.valid(msg_type, f, "server")
    if msg_type == messages.S2C_EVAL_COUNTS:  # its scored rows come from the node's state: it may be another actor
        _restore_scores(local, context)
    (answer_type, answer), = answers({local.device: local}, messages.Request.of(msg_type, f))  # a node: one client
    if msg_type == messages.S2C_EVAL_STATS:  # the count report may run on another actor
        _keep_scores(local, context)
    return _reply(msg, answer_type, answer.to_fields())


def _keep_scores(local, context: Context) -> None:
    s = local.scores
    arrays = {"validation": s.validation, "test": s.test, **{f"attack:{k}": v for k, v in s.attacks.items()}}
    context.state["scores"] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
    context.state["scores_meta"] = ConfigRecord({"missing": list(s.missing_attacks) or [""]})


def _restore_scores(local, context: Context) -> None:
    from evaluation.scores import DeviceScores

    arrays = {k: v.numpy() for k, v in context.state["scores"].items()}
    local.scores = DeviceScores(local.device, arrays.pop("validation"), arrays.pop("test"),
                                {k.split(":", 1)[1]: v for k, v in arrays.items()},
                                [m for m in context.state["scores_meta"]["missing"] if m])


@client_app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    return _reply(msg, messages.C2S_HELLO, _local(context).hello().to_fields())


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@client_app.evaluate("val")
def validation(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@client_app.evaluate("report")
def report(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


# ------------------------------------------------------------------------------------------------ server
server_app = ServerApp()


FLOWER_TYPE = {messages.S2C_TRAIN: "train", messages.S2C_EVAL_STATS: "evaluate.val",
               messages.S2C_EVAL_COUNTS: "evaluate.report"}


class FlowerGrid:
    """The driver's grid on Flower's: one Flower message per client (a node is one client), its answer checked like
    a server node checks one (a malformed or unexpected answer is counted and left out)."""

    def __init__(self, grid: Grid, cfg) -> None:
        from federation.messages import Expectations
        from model.autoencoder import AutoEncoder
        from data import nbaiot

        self.grid, self.cfg = grid, cfg
        self.max_bytes = int(cfg.comm.max_message_mb * 2**20)
        self.receives = messages.Receiver(Expectations.of(AutoEncoder(nbaiot.N_FEATURES), cfg.clients), self._refuse,
                                          self.max_bytes)
        self.node_of: dict[str, int] = {}
        self.joined: dict[str, Any] = {}
        self.rejected: list[dict[str, str]] = []

    def _send(self, flower_type: str, msg_type: str, nodes: dict[int, dict[str, Any]], answer: str,
              group: int) -> dict[int, Any]:
        out = [Message(_content(encode(msg_type, SERVER, CLIENT, fields)), dst_node_id=node, message_type=flower_type,
                       group_id=str(group)) for node, fields in nodes.items()]
        got: dict[int, Any] = {}
        for reply in self.grid.send_and_receive(out):
            node = reply.metadata.src_node_id
            if reply.has_error():
                say(f"flower: node {node}: {reply.error.reason}")
                continue
            typed = self.receives.typed(reply.content["fediot"]["wire"], f"node {node}", answer)
            if typed is not None:
                got[node] = typed
        return got

    def _refuse(self, sender: str, why: str) -> None:
        self.rejected.append({"from": sender, "reason": why[:300]})
        say(f"flower: answer of {sender} rejected: {why}")

    def join(self) -> dict[str, Any]:
        deadline = time.monotonic() + 600
        while len(list(self.grid.get_node_ids())) < len(self.cfg.clients) and time.monotonic() < deadline:
            time.sleep(0.1)
        hellos = self._send("query.hello", messages.C2S_HELLO, {n: {} for n in sorted(self.grid.get_node_ids())},
                            messages.C2S_HELLO, 0)
        for node, h in hellos.items():
            self.node_of[h.device] = node
            self.joined[h.device] = h
        return dict(self.joined)

    def hellos(self) -> dict[str, Any]:
        return dict(self.joined)

    def ask(self, kind: str, own: dict[str, dict[str, Any]], common: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        asked = {c: self.node_of[c] for c in own if c in self.node_of}
        got = self._send(FLOWER_TYPE[kind], kind, {n: {**common, "clients": {c: own[c]}} for c, n in asked.items()},
                         messages.ANSWER_TO[kind], int(common["round"]))
        name_of = {n: c for c, n in asked.items()}
        answers = {name_of[n]: a for n, a in got.items() if a.client == name_of[n]}
        return answers, sorted(set(own) - set(answers))

    def traffic(self) -> dict[str, Any]:
        return {}

    def take_rejections(self) -> tuple[int, list[dict[str, str]], dict[str, dict[str, int]]]:
        out, self.rejected = self.rejected, []
        by: dict[str, dict[str, int]] = {}
        for r in out:
            add_count(by, r["from"], kind_of(r["reason"]), 1)
        return len(out), out[:20], by

    def where(self) -> str:
        return " (Flower SuperNodes)"

    def finish(self, error: str | None = None) -> None:
        """Flower ends the run when the ServerApp returns."""


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    import json

    from federation.driver import quorum, run_federation
    from federation.outputs import RunOutputs
    from federation.state import RoundState

    cfg = config_mod.load(os.environ[ENV_CONFIG])
    run_dir = Path(os.environ[ENV_RUN_DIR])
    data_info = json.loads((run_dir / "flower_data_info.json").read_text())
    run_federation(RoundState(cfg, data_info, "federated"), FlowerGrid(grid, cfg),
                   RunOutputs(run_dir, cfg.tracking.tensorboard, checkpoint=False), quorum(cfg))


def main() -> None:
    import json

    from data.sources import prepare_data
    from fediot.rundir import create_run_dir, write_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--actors", type=int, default=2, help="Ray actors running ClientApps (one CPU each)")
    a = p.parse_args()
    cfg = config_mod.load(a.config)
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "flower", cfg.data.dataset)
    write_config(run_dir, cfg)
    (run_dir / "flower_data_info.json").write_text(json.dumps(data_info))
    say(f"FedIoT on Flower {__import__('flwr').__version__}: {len(cfg.clients)} clients, {a.actors} Ray actor(s), "
        f"{cfg.train.comm_round} rounds; run directory {run_dir}")
    os.environ.update({ENV_CONFIG: str(Path(a.config).resolve()), ENV_DATA_ROOT: str(data_root),
                       ENV_RUN_DIR: str(run_dir),
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(cfg.clients),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": a.actors, "include_dashboard": False}})
    if not (run_dir / "metrics.json").exists():
        sys.exit(f"the Flower run did not finish (no metrics.json in {run_dir}); see its log above")
    print(run_dir)


if __name__ == "__main__":
    main()
