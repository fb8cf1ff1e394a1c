"""One client's side of a federated run, framework-free: its device's rows, its model, its answers.

Every client process (`trainer.nodes.ClientNode` on MPI or gRPC, the in-process grid, Flower's ClientApp) answers
the server's requests through `answers`. A client never sends a row: only feature statistics (hello), weights and
losses (train), validation-error statistics and count reports (evaluation), as the typed messages of
`federation.messages`. It trains with the plan the server sent, nothing else.
"""
from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from data import nbaiot
from data.loader import DeviceSplit
from data.sources import load_client_splits
from evaluation.counts import client_report, held_out_counts, personal_report
from evaluation.scores import DeviceScores, score_device
from federation.messages import (
    C2S_REPORT, C2S_UPDATE, C2S_VAL_STATS, S2C_EVAL_COUNTS, S2C_EVAL_STATS, S2C_TRAIN, Hello, Report, Request,
    RoundPlan, Update, ValStats, own_normalizer,
)
from fediot.config import FedIoTConfig, device_of_client
from evaluation.settings import ValidationArgs
from fediot.errors import ConfigError
from fediot.rundir import append_jsonl
from model.autoencoder import AutoEncoder, state_of
from model.detector import ErrorStats, train_autoencoder
from model.threshold import ThresholdRule, rule_of
from model.normalization import FeatureStats, Normalizer


log = logging.getLogger("fediot.client")


LIVE_DETECTOR = Path("detector") / "model.npz"  # in a client process's run directory: what `detect --follow` reads
THRESHOLD_CHECKS_FILE = "threshold_checks.jsonl"  # beside it: the server's thresholds the board checked


class LiveDetector:
    """The newest evaluated global model with this process's devices' thresholds, kept (atomically) for `python -m
    detect --follow RUN_DIR` on the same board: written after every evaluation, when the server has sent the
    thresholds. One per client process; its clients share it (each adds its device's threshold)."""

    def __init__(self, path: Path, threshold_k: float, meta: dict[str, Any], threshold_ratio: float = 4.0) -> None:
        self.path, self.threshold_k, self.meta = path, threshold_k, meta
        self.threshold_ratio = threshold_ratio  # validation_args.board_threshold_ratio
        self.thresholds_refused = 0
        self.round: int | None = None
        self.device_thresholds: dict[str, float] = {}
        self.device_scales: dict[str, np.ndarray] = {}

    def publish(self, model: AutoEncoder, normalizer: dict[str, Any], scale: list[float] | None, rounds_done: int,
                global_threshold: float, device: str, device_threshold: float) -> Path:
        """Write the model evaluated after `rounds_done` rounds with this device's threshold and widened scales (and
        those the process's other clients added for the same evaluation)."""
        from model.detector import Detector

        if rounds_done != self.round:
            self.round, self.device_thresholds, self.device_scales = rounds_done, {}, {}
        self.device_thresholds[device] = float(device_threshold)
        if scale is not None:
            self.device_scales[device] = np.asarray(scale, dtype=np.float64)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "round": rounds_done, "written_at": time.time()}
        return Detector(model, Normalizer.from_dict(normalizer), self.threshold_k, float(global_threshold),
                        dict(self.device_thresholds), meta, dict(self.device_scales)).export_lean(self.path)


def live_detector(cfg: FedIoTConfig, run_dir: Path) -> LiveDetector | None:
    """Where a deployment board keeps its newest evaluated model for detect --follow (None in a simulation: its
    ranks share one run directory and are not boards)."""
    if cfg.is_simulation:
        return None
    d = cfg.data
    return LiveDetector(run_dir / LIVE_DETECTOR, cfg.validation.threshold_k,
                        {"kind": "federated-live", "data": {"source": d.dataset, "synthetic": d.dataset == "synthetic",
                                                            **({"generator": d.synthetic_generator}
                                                               if d.dataset == "synthetic" else {})}},
                        cfg.validation.board_threshold_ratio)


class LocalClient:
    """Holds one device's split; trains and evaluates the global model as the server asks."""

    # what a client process may send besides its answers, and how often it reports its health: nothing, and at the
    # configured interval (the attacks package's clients change these; an honest client never does)
    health_interval_factor = 1.0

    def __init__(self, split: DeviceSplit, feature_transform: str, record_file: Path | None = None,
                 model: AutoEncoder | None = None,
                 rule: ThresholdRule = ThresholdRule(), window: int = ValidationArgs.vote_window,
                 live: LiveDetector | None = None, personalise: tuple[int, float, int] = (0, 0.001, 64)) -> None:
        """model: the autoencoder to load the global weights into (a worker's clients share one; each call loads
        them)."""
        self.rule = rule  # the federation's threshold rule (a personalised model's own threshold; threshold_edge)
        self.window = window  # the vote window whose window scores the validation statistics histogram
        self.live = live  # where the newest evaluated model is kept for detect --follow (None: nowhere)
        # the normaliser (and its device's widened scales) of the model scored by validation_stats
        self._evaluated: tuple[dict[str, Any], list[float] | None] | None = None
        self.split = split
        self.device = split.device
        self.record_file = record_file
        self.stats = FeatureStats.of(split.train, feature_transform)
        self.model = model if model is not None else AutoEncoder(split.train.shape[1])
        self._rows: tuple[dict[str, Any], np.ndarray] | None = None  # (normaliser, normalised training rows)
        self.scores: DeviceScores | None = None
        # validation_args.personalise_epochs / personalise_lr and train_args.batch_size: fine-tune the evaluated
        # model on this client's rows
        self.personalise_epochs, self.personalise_lr, self.personalise_batch = personalise
        self.personal: AutoEncoder | None = None  # the personalised model of the last evaluation
        self.personal_scores: DeviceScores | None = None
        self.personal_threshold = 0.0  # its own threshold: the federation's rule on its validation errors

    @property
    def n_train(self) -> int:
        return len(self.split.train)

    def hello(self) -> Hello:
        """What the server learns when the client joins: device, row counts, feature statistics."""
        s = self.split
        return Hello(self.device, self.n_train, self.claimed_stats(),
                     held_out_counts(validation=self.validation_rows, test=len(s.test),
                                     attacks={name: len(rows) for name, rows in s.attacks.items()}))

    # -- what it says: the hooks an attack (attacks/) overrides; an honest client says what it has
    def claimed_stats(self) -> FeatureStats:
        """The feature statistics its hello carries."""
        return self.stats

    @property
    def validation_rows(self) -> int:
        """The validation rows it claims."""
        return len(self.split.validation)

    def rows_to_train(self) -> np.ndarray:
        """The rows it trains on (unnormalised)."""
        return self.split.train

    def claimed_rows(self, trained: np.ndarray) -> int:
        """The row count its update carries (its weight in the average)."""
        return self.n_train

    keeps_global_weights = False  # whether `sent_weights` needs the global weights it trained from

    def sent_weights(self, global_state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """The weights its update carries: the ones it trained."""
        return state_of(self.model)

    def sent_validation_stats(self, own: ErrorStats) -> ErrorStats:
        """The validation-error statistics it sends."""
        return own

    def sent_report(self, report: dict[str, Any]) -> dict[str, Any]:
        """The count report it sends."""
        return report

    def extra_messages(self, sender: int, max_bytes: int) -> list[bytes]:
        """Wire bytes its process sends to the server after each of its answers: none."""
        return []

    def health_fields(self, fields: dict[str, Any], nth: int) -> dict[str, Any]:
        """The health report its process sends (the nth of the process): the process's own."""
        return fields

    def _training_rows(self, normalizer: dict[str, Any]) -> np.ndarray:
        if self._rows is None or self._rows[0] != normalizer:
            self._rows = (normalizer, Normalizer.from_dict(normalizer)(self.rows_to_train()))
        return self._rows[1]

    def train(self, model: dict[str, torch.Tensor], normalizer: dict[str, Any], plan: RoundPlan,
              scale: list[float] | None = None) -> Update:
        """Local training of the global model with the server's plan (and its device's widened scales, when the
        server sent them); the update to send back."""
        # the global weights, kept for sent_weights when it needs them (load_state_dict copies `model` otherwise)
        global_state = {k: v.detach().clone() for k, v in model.items()} if self.keeps_global_weights else model
        self.model.load_state_dict(model)
        rows = self._training_rows(own_normalizer(normalizer, scale))
        started = time.monotonic()
        losses = train_autoencoder(self.model, rows, plan.epochs, plan.batch_size, plan.lr, plan.weight_decay,
                                   seed=plan.seed, prox_mu=plan.prox_mu)
        seconds = round(time.monotonic() - started, 4)
        if self.record_file is not None:
            append_jsonl(self.record_file, {"round": plan.round_idx + 1, "device": self.device, "loss": losses[-1],
                                            "epoch_losses": losses, "lr": plan.lr, "epochs": plan.epochs,
                                            "seed": plan.seed, "samples": self.n_train, "train_seconds": seconds,
                                            **({"prox_mu": plan.prox_mu} if plan.prox_mu > 0 else {})})
        return Update(plan.round_idx, self.device, self.sent_weights(global_state, plan.seed), self.claimed_rows(rows),
                      losses[-1], plan.lr, seconds)

    def validation_stats(self, model: dict[str, torch.Tensor], normalizer: dict[str, Any],
                         scale: list[float] | None = None) -> ErrorStats:
        """Score the held-out rows with the global model (and its device's widened scales, when sent); the
        validation-error statistics to send."""
        self.model.load_state_dict(model)
        norm = own_normalizer(normalizer, scale)
        self.scores = score_device(self.model, Normalizer.from_dict(norm), self.split)
        self._evaluated = (normalizer, scale)
        if self.personalise_epochs > 0:
            self._personalise(model, norm)
        return self.sent_validation_stats(self.scores.validation_stats(self.window, self.rule))

    def _personalise(self, model: dict[str, torch.Tensor], normalizer: dict[str, Any]) -> None:
        """Fine-tune a copy of the evaluated global model on this client's training rows and score the held-out rows
        with it (the global model's scores stay what the federation's thresholds are set on)."""
        if self.personal is None:
            self.personal = AutoEncoder(self.split.train.shape[1])
        self.personal.load_state_dict(model)
        train_autoencoder(self.personal, self._training_rows(normalizer), self.personalise_epochs,
                          self.personalise_batch, self.personalise_lr, seed=zlib.crc32(self.device.encode()))
        self.personal_scores = score_device(self.personal, Normalizer.from_dict(normalizer), self.split)
        self.personal_threshold = self.personal_scores.validation_stats(self.window, self.rule).threshold_by(self.rule)

    def report(self, global_threshold: float, device_threshold: float, window: int) -> dict[str, Any]:
        """Count report of the rows scored by `validation_stats`, at the server's thresholds (and, personalised, of
        the personalised model's scores at this client's own threshold: `personal`)."""
        if self.scores is None:
            raise ValueError("a count report needs the validation phase first")
        report = client_report(self.scores, float(global_threshold), float(device_threshold), int(window))
        if self.personal_scores is not None:
            report["personal"] = personal_report(self.personal_scores, self.personal_threshold, int(window))
        return self.sent_report(report)

    def checked_threshold(self, rounds_done: int, device_threshold: float) -> float:
        """The server's threshold for this device if it lies within validation_args.board_threshold_ratio of the
        threshold this board's own validation rows give (the same rule, the same model), else that own threshold:
        a server (or anyone who can speak for it) cannot blind this board's detector with a threshold of 1e300 or
        make it alert on everything with a tiny one. Recorded either way (RUN_DIR/threshold_checks.jsonl)."""
        assert self.scores is not None and self.live is not None
        own = self.scores.validation_stats(self.window, self.rule).threshold_by(self.rule)
        ratio = self.live.threshold_ratio
        kept = bool(np.isfinite(device_threshold) and own / ratio <= device_threshold <= own * ratio)
        if self.record_file is not None:  # beside the device's training records, in the board's run directory
            append_jsonl(self.record_file.parent / THRESHOLD_CHECKS_FILE, {
                "round": rounds_done, "device": self.device, "server": float(device_threshold), "own": float(own),
                "kept": kept})
        if kept:
            return float(device_threshold)
        self.live.thresholds_refused += 1
        log.warning("round %d: the server's threshold %.4g for %s is not within %gx of this board's own %.4g; "
                    "detect --follow gets the board's own", rounds_done, device_threshold, self.device, ratio, own)
        return float(own)

    def publish_live(self, rounds_done: int, global_threshold: float, device_threshold: float) -> None:
        """Keep the model just evaluated, with this device's threshold, for detect --follow (when configured)."""
        if self.live is not None and self._evaluated is not None:
            # personalised, the board detects with its personalised model at that model's own threshold
            model, threshold = ((self.personal, self.personal_threshold) if self.personal_scores is not None
                                else (self.model, self.checked_threshold(rounds_done, device_threshold)))
            self.live.publish(model, *self._evaluated, rounds_done, global_threshold, device_of_client(self.device),
                              threshold)


class ClientLoader:
    """A client's LocalClient from the data: its device's split cut as configured. The last device's parts are
    kept, so a worker's home clients, consecutive in config order, load each device once; `keep_devices` keeps
    every device's parts (for a process asked about clients in any order: bench/flower_app.py's Ray actors)."""

    def __init__(self, cfg: FedIoTConfig, data_root: Path, run_dir: Path, keep_devices: bool = False,
                 make_client: "ClientFactory | None" = None) -> None:
        """make_client: how a client is made from its split and what attack_args say of its rank (default: honest
        clients only; the simulation, the in-process grid and bench pass `attacks.make_client`)."""
        self.cfg, self.data_root, self.run_dir = cfg, data_root, run_dir
        self.make_client = make_client or honest_client
        self.index = {c: i for i, c in enumerate(cfg.clients)}
        self.keep_devices = keep_devices
        self._parts: dict[str, dict[str, DeviceSplit]] = {}  # device -> client -> its part of the device's split
        self._model: AutoEncoder | None = None  # one autoencoder for all of this worker's clients (each use loads the weights)
        self._live = live_detector(cfg, run_dir)

    def split(self, client: str) -> DeviceSplit:
        device = device_of_client(client)
        if device not in self._parts:
            if not self.keep_devices:
                self._parts.clear()
            self._parts[device] = {p.device: p for p in load_client_splits(self.cfg, self.data_root, device)}
        return self._parts[device][client]

    def __call__(self, client: str) -> LocalClient:
        if self._model is None:
            self._model = AutoEncoder(len(nbaiot.feature_columns(self.cfg.data.dataset)))
        v = self.cfg.validation
        return self.make_client(self.split(client), self.cfg.model.feature_transform,
                                self.run_dir / "clients" / f"{client}.jsonl",
                                *self.cfg.attack_of(self.index[client] + 1), model=self._model, rule=rule_of(v), window=v.vote_window, live=self._live,
                                personalise=(v.personalise_epochs, v.personalise_lr, self.cfg.train.batch_size))


ClientFactory = Callable[..., LocalClient]  # (split, feature_transform, record_file, *cfg.attack_of(rank), **kw)


def honest_client(split: DeviceSplit, feature_transform: str, record_file: Path | None, attack: str,
                  _strength: float, **kw: Any) -> LocalClient:
    """An honest client; attack_args naming its rank is a configuration error here (attacks live in `attacks/`, which
    only the simulation, the in-process grid and bench load)."""
    if attack != "none":
        raise ConfigError(f"attack_args make {split.device} malicious ({attack}), and this run loads no attacks "
                          "(only the simulation, the in-process grid and bench do; a deployment needs "
                          "attack_args.red_team: true)")
    return LocalClient(split, feature_transform, record_file, **kw)


def home_clients(cfg: FedIoTConfig, rank: int, workers: int) -> list[str]:
    """The clients whose home is worker `rank` (1-based): client i lives at rank 1 + i % workers."""
    return [c for i, c in enumerate(cfg.clients) if i % workers == rank - 1]


def answers(home: dict[str, LocalClient], request: Request) -> Iterator[tuple[str, Any]]:
    """What a client process answers to a (validated, typed) server request about its `home` clients: one typed
    message per client named, each yielded as soon as it is ready (the server checks it while the next one is
    computed)."""
    for client, order in request.clients.items():
        if request.kind == S2C_TRAIN:
            yield C2S_UPDATE, home[client].train(request.model, request.normalizer, order.plan, order.scale)
        elif request.kind == S2C_EVAL_STATS:
            yield C2S_VAL_STATS, ValStats(request.round, client, home[client].validation_stats(
                request.model, request.normalizer, order.scale))
        elif request.kind == S2C_EVAL_COUNTS:
            yield C2S_REPORT, Report(request.round, home[client].report(request.global_threshold,
                                                                        order.device_threshold, request.window))
            home[client].publish_live(request.round, request.global_threshold, order.device_threshold)
        else:
            raise ValueError(f"{request.kind} is not a request a client answers")
