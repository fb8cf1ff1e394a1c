"""FedIoT's federated run on Flower's simulation engine (benchmark only; bench/flower_side_by_side.py runs it).

    .venv-flower/bin/python bench/flower_app.py CONFIG [--actors N]     (venv: bench/requirements-flower.txt)

The same config, data, partition, autoencoder, round core (`federation.core.RoundCore`: sampling, plans,
aggregation with the defenses, thresholds, metrics) and client (`federation.client.LocalClient`) as
`sh run_simulation.sh`, with the same message bytes (`federation.wire`, checked by `federation.protocol` on the
server). Only the process model and the transport are Flower's: a ServerApp drives RoundCore through Flower's
Grid, every client is a virtual SuperNode (node_config partition-id -> `cfg.clients[partition-id]`), and Ray
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
from federation import protocol  # noqa: E402
from federation.wire import decode, encode  # noqa: E402

ENV_CONFIG, ENV_DATA_ROOT, ENV_RUN_DIR = "FEDIOT_FLOWER_CONFIG", "FEDIOT_FLOWER_DATA_ROOT", "FEDIOT_FLOWER_RUN_DIR"
SERVER, CLIENT = 0, 1  # sender/receiver numbers in the wire header (Flower routes by node id, not by these)


def _content(raw: bytes) -> RecordDict:
    return RecordDict({"fediot": ConfigRecord({"wire": raw})})


def _fields(msg: Message, max_bytes: int) -> tuple[str, dict[str, Any]]:
    msg_type, _, _, fields = decode(msg.content["fediot"]["wire"], max_bytes)
    return msg_type, fields


# ------------------------------------------------------------------------------------------------ client
client_app = ClientApp()
_actor: dict[str, Any] = {}  # per Ray actor: config, loader, the LocalClients it has loaded


def _local(context: Context):
    """This node's client (loaded on the first message this actor gets for it, then kept)."""
    if not _actor:
        import torch

        from trainer.simulation import ClientLoader

        cfg = config_mod.load(os.environ[ENV_CONFIG])
        torch.set_num_threads(cfg.device.torch_threads)
        _actor.update(cfg=cfg, loader=ClientLoader(cfg, Path(os.environ[ENV_DATA_ROOT]), Path(os.environ[ENV_RUN_DIR]),
                                                         keep_devices=True),
                      clients={}, max_bytes=int(cfg.comm.max_message_mb * 2**20))
    name = _actor["cfg"].clients[int(context.node_config["partition-id"])]
    if name not in _actor["clients"]:
        _actor["clients"][name] = _actor["loader"](name)
    return _actor["clients"][name]


def _reply(msg: Message, msg_type: str, **fields: Any) -> Message:
    return Message(_content(encode(msg_type, CLIENT, SERVER, fields)), reply_to=msg)


@client_app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    return _reply(msg, protocol.C2S_HELLO, **_local(context).hello())


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    from federation.core import RoundPlan

    local = _local(context)
    _, f = _fields(msg, _actor["max_bytes"])
    plan = RoundPlan.from_dict(f["clients"][local.device]["plan"])  # a node is one client
    return _reply(msg, protocol.C2S_UPDATE, round=plan.round_idx, client=local.device,
                  **local.train(f["model"], f["normalizer"], plan))


@client_app.evaluate("val")
def validation(msg: Message, context: Context) -> Message:
    local = _local(context)
    _, f = _fields(msg, _actor["max_bytes"])
    val_stats = local.validation_stats(f["model"], f["normalizer"])
    s = local.scores  # kept in the node's state: the count report may run on another actor
    arrays = {"validation": s.validation, "test": s.test, **{f"attack:{k}": v for k, v in s.attacks.items()}}
    context.state["scores"] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
    context.state["scores_meta"] = ConfigRecord({"missing": list(s.missing_attacks) or [""]})
    return _reply(msg, protocol.C2S_VAL_STATS, round=f["round"], client=local.device, val_stats=val_stats)


@client_app.evaluate("report")
def report(msg: Message, context: Context) -> Message:
    from evaluation.scoring import DeviceScores

    local = _local(context)
    _, f = _fields(msg, _actor["max_bytes"])
    arrays = {k: v.numpy() for k, v in context.state["scores"].items()}
    local.scores = DeviceScores(local.device, arrays.pop("validation"), arrays.pop("test"),
                                {k.split(":", 1)[1]: v for k, v in arrays.items()},
                                [m for m in context.state["scores_meta"]["missing"] if m])
    return _reply(msg, protocol.C2S_REPORT, round=f["round"],
                  report=local.report(f["global_threshold"], f["clients"][local.device]["device_threshold"],
                                      f["window"]))


# ------------------------------------------------------------------------------------------------ server
server_app = ServerApp()


class FlowerRun:
    """RoundCore driven through Flower's Grid: ask a set of clients, get their (checked) answers."""

    def __init__(self, grid: Grid, core) -> None:
        self.grid, self.core, self.cfg = grid, core, core.cfg
        self.max_bytes = int(self.cfg.comm.max_message_mb * 2**20)
        self.expect = protocol.Expectations.of(core.model, self.cfg.clients)
        self.node_of: dict[str, int] = {}
        self.rejected = 0

    def ask(self, flower_type: str, msg_type: str, nodes: dict[int, dict[str, Any]], answer: str,
            round_idx: int) -> dict[int, dict[str, Any]]:
        """Send `msg_type` with fields to each node; the nodes' answers of type `answer`, checked like the MPI
        server checks them (a malformed or unexpected answer is counted and left out)."""
        out = [Message(_content(encode(msg_type, SERVER, CLIENT, fields)), dst_node_id=node, message_type=flower_type,
                       group_id=str(round_idx)) for node, fields in nodes.items()]
        answers: dict[int, dict[str, Any]] = {}
        for reply in self.grid.send_and_receive(out):
            node = reply.metadata.src_node_id
            if reply.has_error():
                say(f"flower: node {node}: {reply.error.reason}")
                continue
            try:
                got, fields = _fields(reply, self.max_bytes)
                if got != answer:
                    raise protocol.ProtocolError(f"{got} where {answer} was expected")
                protocol.validate(got, fields, self.expect)
            except ValueError as exc:  # WireError and ProtocolError are ValueErrors
                self.rejected += 1
                say(f"flower: answer of node {node} rejected: {exc}")
                continue
            answers[node] = fields
        return answers

    def run(self) -> None:
        from model.detector import ErrorStats
        from model.normalization import FeatureStats

        core, cfg = self.core, self.cfg
        deadline = time.monotonic() + 600
        while len(list(self.grid.get_node_ids())) < len(cfg.clients) and time.monotonic() < deadline:
            time.sleep(0.1)
        nodes = sorted(self.grid.get_node_ids())
        hellos = self.ask("query.hello", protocol.C2S_HELLO, {n: {} for n in nodes}, protocol.C2S_HELLO, 0)
        stats = {}
        for node, h in hellos.items():
            self.node_of[h["device"]] = node
            core.client_joined(h["device"], int(h["n_train"]), h["held_out"])
            stats[h["device"]] = FeatureStats.from_dict(h["feature_stats"])
        core.fit_normalizer(stats)
        say(f"clients: {len(stats)} (Flower SuperNodes)")
        name_of = {n: c for c, n in self.node_of.items()}
        while not core.done:
            common = core.begin_round()
            sampled = [c for c in core.sampled if c in self.node_of]
            updates = self.ask("train", protocol.S2C_TRAIN,
                               {self.node_of[c]: {**common, "round": core.round,
                                                  "clients": {c: {"plan": core.plan(c).to_dict()}}} for c in sampled},
                               protocol.C2S_UPDATE, core.round)
            answered = {f["client"]: f for n, f in updates.items() if f["client"] == name_of[n]}
            say(core.finish_round(answered, sorted(set(sampled) - set(answered))))
            if core.evaluate_now():
                common = core.begin_eval()
                val = self.ask("evaluate.val", protocol.S2C_EVAL_STATS,
                               {n: {**common, "round": core.round, "clients": {c: {}}} for c, n in self.node_of.items()},
                               protocol.C2S_VAL_STATS, core.round)
                core.set_thresholds({name_of[n]: ErrorStats(**f["val_stats"]) for n, f in val.items()})
                counted = [name_of[n] for n in val]
                common, own = core.counts_request()
                reports = self.ask("evaluate.report", protocol.S2C_EVAL_COUNTS,
                                   {self.node_of[c]: {**common, "round": core.round, "clients": {c: own(c)}}
                                    for c in counted}, protocol.C2S_REPORT, core.round)
                say(core.finish_eval({name_of[n]: f["report"] for n, f in reports.items()}))
            core.write_record(self.rejected)
            self.rejected = 0
        core.finish()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    import json

    from federation.core import RoundCore

    cfg = config_mod.load(os.environ[ENV_CONFIG])
    run_dir = Path(os.environ[ENV_RUN_DIR])
    data_info = json.loads((run_dir / "flower_data_info.json").read_text())
    FlowerRun(grid, RoundCore(cfg, run_dir, data_info, "federated")).run()


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
    write_config(run_dir, cfg.values)
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
