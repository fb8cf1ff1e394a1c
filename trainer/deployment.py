"""Real deployment (cross-silo, FedML gRPC transport on a LAN, no cloud): server and client nodes.

Both subclass FedML's `FedMLCommManager`; training and aggregation go through our FedML adapters
(`FedDetectTrainer`, `FedDetectAggregator`). What FedML 0.9.6 lacks is added here:
round deadline and minimum number of clients, clients that drop and rejoin, a send to a dead client
that never kills the server, start in any order (bounded retries), checkpoint after every round and
resume, and evaluation from client-side counts only (no raw row ever reaches the server).

Every handler runs on the transport's receive thread; timers only post local messages.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch
from fedml.core.distributed.communication.constants import CommunicationConstants
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.fedml_comm_manager import FedMLCommManager

from data import nbaiot
from data.loader import DeviceSplit
from fediot.config import FedIoTConfig
from fediot.console import round_bar, say
from fediot.evaluation import DeviceScores, score_device
from fediot.federated import SERVER_CHECKPOINT_FORMAT as CHECKPOINT_FORMAT, SUMMARY_KEYS, is_eval_round, write_final_outputs
from fediot.client_reports import client_report, combine_reports, curves_from_reports
from fediot.rundir import append_jsonl, write_atomic_bytes
from fediot.tracking import Tracker
from model.autoencoder import AutoEncoder
from model.detector import ErrorStats, learning_rate_for_round
from model.normalization import FeatureStats, Normalizer
from trainer.client_data import ClientRows
from trainer.fed_detect_aggregator import FedDetectAggregator
from trainer.fed_detect_trainer import FedDetectTrainer
from trainer.grpc_transport import FedIoTGrpcTransport, PeerUnreachable

log = logging.getLogger("fediot.deploy")

# message types
C2S_HELLO = "fediot_hello"
S2C_WELCOME = "fediot_welcome"
S2C_PING = "fediot_ping"
S2C_TRAIN = "fediot_train"
C2S_UPDATE = "fediot_update"
S2C_EVAL_STATS = "fediot_eval_stats"
C2S_VAL_STATS = "fediot_val_stats"
S2C_EVAL_COUNTS = "fediot_eval_counts"
C2S_REPORT = "fediot_report"
S2C_FINISH = "fediot_finish"
LOCAL_TICK = "fediot_tick"
LOCAL_DEADLINE = "fediot_deadline"

STATUS_EVERY_S = 10.0


def _state_bytes(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _Node(FedMLCommManager):
    """FedML comm manager on our gRPC transport, with helpers for sends and timers."""

    def __init__(self, args, rank: int, size: int, send_timeout_s: float) -> None:
        self._send_timeout_s = send_timeout_s
        self.exit_code = 0
        self.error: str | None = None
        super().__init__(args, None, rank, size, "GRPC")

    def _init_manager(self) -> None:
        self.com_manager = FedIoTGrpcTransport(self.args.grpc_ipconfig_path, self.rank, self.size, self.args,
                                               self._send_timeout_s)
        self.com_manager.add_observer(self)

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

    def finish(self) -> None:  # FedML's finish() is MPI/MQTT specific; ours just stops
        self.stop(self.exit_code, self.error)


# ------------------------------------------------------------------------------------------ server
class DeploymentServer(_Node):
    """FedAvg server: waits for clients, runs rounds with a deadline, checkpoints, evaluates."""

    def __init__(self, args, cfg: FedIoTConfig, run_dir: Path, client_ranks: list[int],
                 resume: dict[str, Any] | None, data_info: dict[str, Any]) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        t, c = cfg.values["train_args"], cfg.values["comm_args"]
        self.n_rounds = t["comm_round"]
        self.round_timeout_s = float(t["round_timeout_s"])
        self.min_clients = int(t["min_clients_per_round"])
        self.wait_for_clients_s = float(c["wait_for_clients_s"])
        self.retry_interval_s = float(c["retry_interval_s"])
        self.client_ranks = client_ranks
        self.devices = cfg.devices
        self.data_info = data_info
        torch.manual_seed(cfg.get("common_args", "random_seed"))
        self.model = AutoEncoder(nbaiot.N_FEATURES)
        self.aggregator = FedDetectAggregator(self.model, args, lambda *_: None)
        self.normalizer: Normalizer | None = None
        self.feature_stats: dict[str, Any] | None = None
        self.round = 0
        self.thresholds: dict[str, Any] | None = None
        self.record: dict[str, Any] = {}  # the current round's line for rounds.jsonl
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.normalizer = Normalizer.from_dict(resume["normalizer"])
            self.feature_stats = resume.get("feature_stats")
            self.round = int(resume["round_done"])
            self.thresholds = resume.get("thresholds")
            self.record = resume.get("pending_record") or {}
        self.connected: dict[int, dict[str, Any]] = {}
        self.phase = "waiting"
        self.phase_id = 0  # increases with every phase, so stale deadlines are ignored
        self.expected: set[int] = set()
        self.replies: dict[int, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.round_started = self.started
        self.last_status = ""
        self.last_status_at = 0.0
        self.bytes_mark = (0, 0)
        self.tracker = Tracker(run_dir, bool(cfg.get("tracking_args", "tensorboard")))
        super().__init__(args, 0, len(client_ranks) + 1, float(c["send_timeout_s"]))

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
        say(f"server listening; waiting for {len(self.client_ranks)} client(s): "
            + ", ".join(f"{r}={self.device_of(r)}" for r in self.client_ranks))
        self.post(LOCAL_TICK)

    def _status(self, force: bool = False) -> None:
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
        elif waited >= self.wait_for_clients_s:
            if len(self.connected) >= self.min_clients:
                say(f"waited {waited:.0f}s (comm_args.wait_for_clients_s); starting with {len(self.connected)} client(s)")
                self.start_training()
            else:
                self.fail(f"only {len(self.connected)} of {len(self.client_ranks)} client(s) connected within "
                          f"comm_args.wait_for_clients_s = {self.wait_for_clients_s:g}s; "
                          f"train_args.min_clients_per_round = {self.min_clients}")
        else:
            self.post_after(self.retry_interval_s, LOCAL_TICK)

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
        self.send(S2C_WELCOME, rank, round=self.round)
        if self.phase == "waiting":
            self._status(force=True)
            if len(self.connected) == len(self.client_ranks):
                self.start_training()
        else:  # training has started: a new or restarted board joins at the next round
            say(f"client {rank} ({info['device']}) (re)joined; it takes part from the next round")

    # -- training
    def start_training(self) -> None:
        if self.normalizer is None:
            m = self.cfg.values["model_args"]
            stats = FeatureStats.merge([c["stats"] for c in self.connected.values()])
            self.normalizer = Normalizer.from_stats(stats, m["feature_transform"], m["normalization"])
            self.feature_stats = {"clients": sorted(self.device_of(r) for r in self.connected), "rows": stats.count}
        say(f"starting: {len(self.connected)} client(s), rounds {self.round + 1}..{self.n_rounds}, "
            f"round deadline {self.round_timeout_s:g}s, at least {self.min_clients} client(s) per round")
        if self.round >= self.n_rounds or self.record:  # resumed before an evaluation finished: do it first
            self.begin_eval()
        else:
            self.begin_round()

    def _open_phase(self, phase: str, msg_type: str, params: dict[str, Any]) -> None:
        self.phase = phase
        self.phase_id += 1
        self.replies = {}
        self.expected = set()
        for rank in sorted(self.connected):
            if self.send(msg_type, rank, round=self.round, **params):
                self.expected.add(rank)
            else:
                say(f"client {rank} ({self.device_of(rank)}) unreachable; dropped until it reconnects")
                self.connected.pop(rank, None)
        if not self.expected:
            self.post(LOCAL_DEADLINE, phase_id=self.phase_id)
        else:
            self.post_after(self.round_timeout_s, LOCAL_DEADLINE, phase_id=self.phase_id)

    def begin_round(self) -> None:
        t = self.cfg.values["train_args"]
        lr = learning_rate_for_round(t["learning_rate"], t["lr_decay"], t["min_learning_rate"], self.round)
        self.round_started = time.monotonic()
        self.record = {"round": self.round + 1, "data_source": self.data_info["source"], "lr": lr}
        self._open_phase("train", S2C_TRAIN, {"model": _state_bytes(self.model),
                                              "normalizer": self.normalizer.to_dict(), "lr": lr})

    def on_reply(self, msg: Message) -> None:
        rank = int(msg.get_sender_id())
        expected_type = {"train": C2S_UPDATE, "val": C2S_VAL_STATS, "report": C2S_REPORT}.get(self.phase)
        if msg.get_type() != expected_type or msg.get("round") != self.round or rank not in self.expected:
            log.info("late or unexpected %s from %d ignored", msg.get_type(), rank)
            return
        self.replies[rank] = msg.get_params()
        if set(self.replies) == self.expected:
            self.close_phase()

    def on_deadline(self, msg: Message) -> None:
        if msg.get("phase_id") == self.phase_id and self.phase in ("train", "val", "report"):
            missing = sorted(self.expected - set(self.replies))
            if missing:
                say(f"round {self.round + 1}: deadline ({self.round_timeout_s:g}s) passed without "
                    + ", ".join(f"{r}:{self.device_of(r)}" for r in missing))
            self.close_phase()

    def close_phase(self) -> None:
        answered = sorted(self.replies)
        dropped = sorted(set(self.connected) - set(answered))
        phase = self.phase
        self.phase = "busy"
        if len(answered) < self.min_clients:
            self.fail(f"round {self.round + 1} ({phase}): {len(answered)} client(s) answered, "
                      f"train_args.min_clients_per_round = {self.min_clients}; dropped: "
                      f"{', '.join(self.device_of(r) for r in dropped) or 'none'}. "
                      f"The checkpoint of the last completed round is kept in {self.run_dir}")
            return
        if phase == "train":
            self.finish_round(answered, dropped)
        elif phase == "val":
            self.thresholds_from_stats(answered)
        elif phase == "report":
            self.finish_eval(answered)

    def finish_round(self, answered: list[int], dropped: list[int]) -> None:
        updates = [(int(self.replies[r]["n"]), self.replies[r]["model"]) for r in answered]
        self.aggregator.set_model_params(self.aggregator.aggregate(updates))
        self.record.update({
            "wall_time_s": round(time.monotonic() - self.round_started, 4),
            "elapsed_s": round(time.monotonic() - self.started, 4),
            "clients": [self.device_of(r) for r in answered],
            "dropped": [self.device_of(r) for r in dropped],
            "client_losses": {self.device_of(r): self.replies[r]["loss"] for r in answered},
            "client_train_seconds": {self.device_of(r): self.replies[r]["train_seconds"] for r in answered},
            "bytes_sent": self.com_manager.bytes_sent - self.bytes_mark[0],
            "bytes_received": self.com_manager.bytes_received - self.bytes_mark[1],
        })
        self.bytes_mark = (self.com_manager.bytes_sent, self.com_manager.bytes_received)
        self.round += 1
        losses = self.record["client_losses"].values()
        line = (f"{round_bar(self.round, self.n_rounds)}round {self.round}/{self.n_rounds}  clients {len(answered)}  "
                f"mean loss {sum(losses) / len(losses):.5f}  ({self.record['wall_time_s']:.1f}s)")
        if dropped:
            line += f"  dropped: {', '.join(self.record['dropped'])}"
        # The round's record is on disk before the checkpoint says the round is done: written now, or,
        # when an evaluation follows, carried in the checkpoint until the evaluation completes.
        evaluate_now = is_eval_round(self.round - 1, self.n_rounds, self.cfg.get("validation_args", "frequency_of_the_test"))
        if not evaluate_now:
            self.write_round_record()
        self.save_checkpoint()
        say(line)
        if evaluate_now:
            self.begin_eval()
        else:
            self.begin_round()

    # -- evaluation (counts only)
    def begin_eval(self) -> None:
        self.eval_started = time.monotonic()
        self._open_phase("val", S2C_EVAL_STATS, {"model": _state_bytes(self.model),
                                                 "normalizer": self.normalizer.to_dict()})

    def thresholds_from_stats(self, answered: list[int]) -> None:
        k = self.cfg.get("validation_args", "threshold_k")
        stats = {r: ErrorStats(**self.replies[r]["val_stats"]) for r in answered}
        self.thresholds = {"global": ErrorStats.merge(list(stats.values())).threshold(k),
                           "device": {self.device_of(r): s.threshold(k) for r, s in stats.items()}}
        self._open_phase("report", S2C_EVAL_COUNTS, {"global_threshold": self.thresholds["global"],
                                                     "device_thresholds": self.thresholds["device"],
                                                     "window": self.cfg.get("validation_args", "vote_window")})

    def finish_eval(self, answered: list[int]) -> None:
        reports = [self.replies[r]["report"] for r in answered if self.device_of(r) in self.thresholds["device"]]
        metrics = combine_reports(reports, self.thresholds["global"], self.thresholds["device"],
                                  self.cfg.get("validation_args", "vote_window"), "global")
        g = metrics["global"]
        self.record["eval"] = {"global_threshold": {k: g["modes"]["global"][k] for k in SUMMARY_KEYS},
                               "device_threshold": {k: g["modes"]["device"][k] for k in SUMMARY_KEYS},
                               "devices": sorted(metrics["devices"])}
        self.record["eval_seconds"] = round(time.monotonic() - self.eval_started, 4)
        say(f"evaluation after round {self.round}: {len(reports)} device(s)  TPR {g['tpr']:.4f}  FPR {g['fpr']:.4f}  "
            f"F1 {g['f1']:.4f}  (per-device thresholds: TPR {g['modes']['device']['tpr']:.4f} "
            f"FPR {g['modes']['device']['fpr']:.4f})")
        if self.record.get("round"):
            self.write_round_record()
        self.save_checkpoint()
        if self.round >= self.n_rounds:
            self.finish_run(metrics, curves_from_reports(reports))
        else:
            self.begin_round()

    def write_round_record(self) -> None:
        append_jsonl(self.run_dir / "rounds.jsonl", self.record)
        self.tracker.log_round(self.record)
        self.record = {}

    def save_checkpoint(self) -> None:
        t = self.cfg.values["train_args"]
        payload = {"format": CHECKPOINT_FORMAT, "round_done": self.round, "model": _state_bytes(self.model),
                   "normalizer": self.normalizer.to_dict(), "feature_stats": self.feature_stats,
                   "thresholds": self.thresholds,
                   "pending_record": self.record or None,  # a round whose evaluation is still to come
                   "lr_schedule": {"learning_rate": t["learning_rate"], "lr_decay": t["lr_decay"],
                                   "min_learning_rate": t["min_learning_rate"], "next_round": self.round},
                   "config": self.cfg.values}
        buf = io.BytesIO()
        torch.save(payload, buf)
        write_atomic_bytes(self.run_dir / "checkpoint.pt", buf.getvalue())

    def finish_run(self, metrics: dict[str, Any], curves: dict[str, Any]) -> None:
        self.tracker.close()
        write_final_outputs(
            self.run_dir, self.model, self.normalizer, self.cfg.get("validation_args", "threshold_k"),
            self.thresholds["global"], self.thresholds["device"],
            {"kind": "federated-deployment", "devices": sorted(metrics["devices"]), "rounds": self.n_rounds,
             "data": self.data_info},
            {"data": self.data_info, "kind": "federated-deployment", "normalization": self.feature_stats, **metrics},
            curves)
        for rank in sorted(self.connected):
            self.send(S2C_FINISH, rank)
        self.stop(0)

    def fail(self, message: str) -> None:
        for rank in sorted(self.connected):
            self.send(S2C_FINISH, rank, error=message)
        self.stop(3, message)


# ------------------------------------------------------------------------------------------ client
class DeploymentClient(_Node):
    """One board: holds one device's rows, trains when asked, reports counts, never sends rows."""

    def __init__(self, args, cfg: FedIoTConfig, rank: int, n_clients: int, split: DeviceSplit, run_dir: Path) -> None:
        c = cfg.values["comm_args"]
        self.cfg, self.split, self.run_dir = cfg, split, run_dir
        self.device = split.device
        self.connect_timeout_s = float(c["connect_timeout_s"])
        self.retry_interval_s = float(c["retry_interval_s"])
        self.idle_timeout_s = float(c["client_idle_timeout_s"])
        self.stats = FeatureStats.of(split.train, cfg.get("model_args", "feature_transform"))
        torch.manual_seed(cfg.get("common_args", "random_seed"))
        self.model = AutoEncoder(nbaiot.N_FEATURES)
        self.trainer = FedDetectTrainer(self.model, args, record_dir=run_dir)
        self.welcomed = False
        self.first_try = time.monotonic()
        self.last_server_msg = time.monotonic()
        self.scores: DeviceScores | None = None
        self.rows: ClientRows | None = None
        super().__init__(args, rank, n_clients + 1, float(c["send_timeout_s"]))

    def register_message_receive_handlers(self) -> None:
        for msg_type, handler in (
            (CommunicationConstants.MSG_TYPE_CONNECTION_IS_READY, self.on_ready), (LOCAL_TICK, self.on_tick),
            (S2C_PING, self.on_ping), (S2C_WELCOME, self.on_welcome), (S2C_TRAIN, self.on_train),
            (S2C_EVAL_STATS, self.on_eval_stats), (S2C_EVAL_COUNTS, self.on_eval_counts), (S2C_FINISH, self.on_finish),
        ):
            self.register_message_receive_handler(msg_type, handler)

    def hello(self) -> bool:
        return self.send(C2S_HELLO, 0, device=self.device, n_train=len(self.split.train),
                         feature_stats=self.stats.to_dict())

    def on_ready(self, _msg: Message) -> None:
        say(f"client {self.rank} ({self.device}): {len(self.split.train)} training rows; connecting to the server")
        self.post(LOCAL_TICK)

    def on_tick(self, _msg: Message) -> None:
        now = time.monotonic()
        if not self.welcomed:
            if self.hello():
                self.last_server_msg = now
            elif now - self.first_try >= self.connect_timeout_s:
                self.stop(4, f"server unreachable for comm_args.connect_timeout_s = {self.connect_timeout_s:g}s")
                return
        elif now - self.last_server_msg >= self.idle_timeout_s:
            self.stop(4, f"no message from the server for comm_args.client_idle_timeout_s = {self.idle_timeout_s:g}s")
            return
        self.post_after(self.retry_interval_s, LOCAL_TICK)

    def _seen_server(self) -> None:
        self.last_server_msg = time.monotonic()

    def on_ping(self, _msg: Message) -> None:
        self._seen_server()
        self.hello()

    def on_welcome(self, msg: Message) -> None:
        self._seen_server()
        if not self.welcomed:
            say(f"client {self.rank} ({self.device}): connected; server at round {msg.get('round')}")
        self.welcomed = True

    def reply(self, msg_type: str, **params: Any) -> None:
        """Send to the server, retrying while it is briefly unreachable (bounded)."""
        deadline = time.monotonic() + self.connect_timeout_s
        while not self.send(msg_type, 0, **params):
            if time.monotonic() >= deadline:
                self.stop(4, f"server unreachable for comm_args.connect_timeout_s = {self.connect_timeout_s:g}s")
                return
            time.sleep(self.retry_interval_s)

    def _load_global(self, msg: Message) -> Normalizer:
        self.trainer.set_model_params(msg.get("model"))
        return Normalizer.from_dict(msg.get("normalizer"))

    def on_train(self, msg: Message) -> None:
        self._seen_server()
        self.welcomed = True
        normalizer = self._load_global(msg)
        rnd = int(msg.get("round"))
        if self.rows is None or self.rows.normalizer.to_dict() != normalizer.to_dict():
            split = self.split
            self.rows = ClientRows(self.device, len(split.train), lambda: split, normalizer)
        self.args.round_idx = rnd
        start = time.monotonic()
        self.trainer.train(self.rows, torch.device("cpu"), self.args)
        seconds = time.monotonic() - start
        loss = self.trainer.last_losses[-1]
        say(f"round {rnd + 1}: trained {len(self.split.train)} rows, loss {loss:.5f} ({seconds:.1f}s)")
        self.reply(C2S_UPDATE, round=rnd, model=self.trainer.get_model_params(), n=len(self.split.train),
                   loss=loss, train_seconds=round(seconds, 4))

    def on_eval_stats(self, msg: Message) -> None:
        self._seen_server()
        normalizer = self._load_global(msg)
        self.scores = score_device(self.model, normalizer, self.split)
        s = ErrorStats.of(self.scores.validation)
        self.reply(C2S_VAL_STATS, round=msg.get("round"),
                   val_stats={"count": s.count, "total": s.total, "total_sq": s.total_sq})

    def on_eval_counts(self, msg: Message) -> None:
        self._seen_server()
        report = client_report(self.scores, float(msg.get("global_threshold")),
                               float(msg.get("device_thresholds")[self.device]), int(msg.get("window")))
        self.reply(C2S_REPORT, round=msg.get("round"), report=report)

    def on_finish(self, msg: Message) -> None:
        error = msg.get("error")
        if error:
            self.stop(3, f"the server stopped the run: {error}")
        else:
            say(f"client {self.rank} ({self.device}): run finished")
            self.stop(0)
