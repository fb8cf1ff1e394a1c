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
from typing import Any, Iterator

import numpy as np
import torch

from data import nbaiot
from data.loader import DeviceSplit
from data.sources import load_client_splits
from evaluation.counts import client_report, held_out_counts, personal_report
from evaluation.scores import DeviceScores, score_device
from federation.messages import (
    C2S_REPORT, C2S_UPDATE, C2S_VAL_STATS, MAX_HEADER_BYTES, S2C_EVAL_COUNTS, S2C_EVAL_STATS, S2C_TRAIN, Hello, Report,
    RoundPlan, Update, ValStats, own_normalizer,
)
from federation.wire import MAGIC, header_length_bytes
from fediot.config import ATTACKS, DEFAULTS, FedIoTConfig, device_of_client
from fediot.rundir import append_jsonl
from model.autoencoder import AutoEncoder, state_of
from model.detector import ErrorStats, train_autoencoder
from model.threshold import ThresholdRule, histogram, rule_of, shifted_histogram
from model.normalization import FeatureStats, Normalizer


log = logging.getLogger("fediot.client")

OVERFLOW = 1e308  # stats_overflow's total and total_sq of the first feature (issue 22: two such boards crashed a run)
POISONING_ATTACKS = ("data_poisoning", "model_scaling")  # train on the device's attack rows as if benign
TAMPERING_ATTACKS = ("model_scaling", "random_update", "alie", "ipm")  # send something computed from the global weights


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


def decoding_bomb(sender: int, max_bytes: int) -> bytes:
    """What the `flood` attack sends besides its honest answers (issue 22, reproduction 3): the costliest message a
    certified peer can send inside the limits — just under `max_bytes`, its header just under the header limit and
    holding nothing but empty tensor entries (~90,000), so a receiver must parse the header before it can refuse the
    tensor count (the issue's had 1.9 M entries in a 63 MiB header: the header limit now refuses that unread)."""
    entry = b'"t%07d":{"__tensor__":["float32",[0],0,0]}'
    start = b'{"type":"%s","sender":%d,"receiver":0,"fields":{' % (C2S_UPDATE.encode(), sender)
    end = b"}}"
    n = (MAX_HEADER_BYTES - len(start) - len(end)) // (len(entry % 0) + 1)
    header = start + b",".join(entry % i for i in range(n)) + end
    message = MAGIC + header_length_bytes(len(header)) + header
    return message + bytes(max(0, max_bytes - 1 - len(message)))


class LocalClient:
    """Holds one device's split; trains and evaluates the global model as the server asks."""

    def __init__(self, split: DeviceSplit, feature_transform: str, record_file: Path | None = None,
                 attack: str = "none", attack_scale: float = 1.0, model: AutoEncoder | None = None,
                 rule: ThresholdRule = ThresholdRule(), window: int = DEFAULTS["validation_args"]["vote_window"][0],
                 live: LiveDetector | None = None, personalise: tuple[int, float, int] = (0, 0.001, 64)) -> None:
        """attack/attack_scale (attack_args, for a rank listed as malicious): what this client does instead of
        honest training, to study what a compromised board can do; 'none' for an honest client. model: the
        autoencoder to load the global weights into (a worker's clients share one; each call loads them)."""
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS}")
        self.attack, self.attack_scale = attack, attack_scale
        # flood: trains and answers honestly, and sends this many decoding bombs after each answer
        self.bombs_per_answer = max(1, round(attack_scale)) if attack == "flood" else 0
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
        stats = self.stats
        if self.attack == "stats_inflation":  # statistics of rows attack_scale times larger than its own
            f = self.attack_scale
            stats = FeatureStats(stats.count, stats.total * f, stats.total_sq * f * f, stats.minimum * f, stats.maximum * f)
        if self.attack == "stats_overflow":  # finite numbers whose sums overflow when merged with one more such client
            total, total_sq = stats.total.copy(), stats.total_sq.copy()
            total[0] = total_sq[0] = OVERFLOW
            stats = FeatureStats(stats.count, total, total_sq, stats.minimum, stats.maximum)
        return Hello(self.device, self.n_train, stats,
                     held_out_counts(validation=self.validation_rows, test=len(s.test),
                                     attacks={name: len(rows) for name, rows in s.attacks.items()}))

    @property
    def validation_rows(self) -> int:
        """The validation rows it claims: its own, or (threshold_edge) attack_scale times as many."""
        n = len(self.split.validation)
        return int(n * self.attack_scale) if self.attack == "threshold_edge" else n

    def _training_rows(self, normalizer: dict[str, Any]) -> np.ndarray:
        if self._rows is None or self._rows[0] != normalizer:
            rows = self.split.train
            if self.attack in POISONING_ATTACKS:  # the device's attack traffic, trained on as if it were benign
                rows = np.vstack([rows, *self.split.attacks.values()])
            self._rows = (normalizer, Normalizer.from_dict(normalizer)(rows))
        return self._rows[1]

    def _tamper(self, global_state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """What a malicious client sends instead of its trained weights: model_scaling sends its poisoned model's
        update boosted attack_scale times (model replacement: scale ~ clients / share), random_update noise, ipm and
        alie the untargeted attacks sized against robust rules (inner-product manipulation; a little is enough)."""
        local = state_of(self.model)
        if self.attack == "model_scaling":
            return {k: g + self.attack_scale * (local[k] - g) for k, g in global_state.items()}
        if self.attack == "ipm":  # inner-product manipulation: -attack_scale x the honest update (its own, as the
            # estimate of the honest clients' mean a colluding attacker has)
            return {k: g - self.attack_scale * (local[k] - g) for k, g in global_state.items()}
        if self.attack == "alie":  # "a little is enough": the honest mean minus attack_scale honest spreads per
            # coordinate, both estimated from its own update (mean ~ its update, spread ~ its magnitude): a step against
            # learning that stays within the honest updates' spread
            return {k: g + (local[k] - g) - self.attack_scale * (local[k] - g).abs() for k, g in global_state.items()}
        if self.attack == "random_update":
            gen = torch.Generator().manual_seed(seed)
            spread = {k: g.std() if g.numel() > 1 else g.abs() + 1e-3 for k, g in global_state.items()}
            return {k: g + self.attack_scale * spread[k] * torch.randn(g.shape, generator=gen)
                    for k, g in global_state.items()}
        return local

    def train(self, model: dict[str, torch.Tensor], normalizer: dict[str, Any], plan: RoundPlan,
              scale: list[float] | None = None) -> Update:
        """Local training of the global model with the server's plan (and its device's widened scales, when the
        server sent them); the update to send back."""
        # the global weights, kept for _tamper (an honest client only reads `model`: load_state_dict copies it)
        global_state = {k: v.detach().clone() for k, v in model.items()} if self.attack in TAMPERING_ATTACKS else model
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
        # a data poisoner also claims attack_scale times the rows it trained on: the row count is its word
        n = int(len(rows) * self.attack_scale) if self.attack == "data_poisoning" else self.n_train
        return Update(plan.round_idx, self.device, self._tamper(global_state, plan.seed), n, losses[-1], plan.lr,
                      seconds)

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
        s = self.scores.validation_stats(self.window, self.rule)
        if self.attack == "stats_inflation":  # errors reported attack_scale times larger: mean and std scale alike
            return ErrorStats(s.count, s.total * self.attack_scale, s.total_sq * self.attack_scale ** 2,
                              shifted_histogram(s.window_hist, self.attack_scale), s.rows_per_day, s.tail_clusters,
                              s.tail_exceedances)
        if self.attack == "val_overflow":  # finite, and the square of their mean overflows a float
            return ErrorStats(s.count, 1e200, 1e300, s.window_hist, s.rows_per_day, s.tail_clusters, s.tail_exceedances)
        if self.attack == "threshold_edge":  # attack_scale x its rows, every error attack_scale x its own threshold
            t, n = s.threshold_by(self.rule) * self.attack_scale, self.validation_rows
            return ErrorStats(n, t * n, t * t * n, histogram(np.full(max(1, n - self.window + 1), t)),
                              None if s.rows_per_day is None else s.rows_per_day * n / max(1, s.count))
        return s

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
        if self.attack == "eval_lies":
            fabricate_counts(report, self.attack_scale)
        if self.attack == "threshold_edge":  # consistent with the validation rows it claimed
            report["validation"]["n"] = self.validation_rows
        return report

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

    def __init__(self, cfg: FedIoTConfig, data_root: Path, run_dir: Path, keep_devices: bool = False) -> None:
        self.cfg, self.data_root, self.run_dir = cfg, data_root, run_dir
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
        return LocalClient(self.split(client), self.cfg.model.feature_transform,
                           self.run_dir / "clients" / f"{client}.jsonl", *self.cfg.attack_of(self.index[client] + 1),
                           model=self._model, rule=rule_of(v), window=v.vote_window, live=self._live,
                           personalise=(v.personalise_epochs, v.personalise_lr, self.cfg.train.batch_size))


def home_clients(cfg: FedIoTConfig, rank: int, workers: int) -> list[str]:
    """The clients whose home is worker `rank` (1-based): client i lives at rank 1 + i % workers."""
    return [c for i, c in enumerate(cfg.clients) if i % workers == rank - 1]


def answers(home: dict[str, LocalClient], msg_type: str, fields: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """What a client process answers to a (validated) server request about its `home` clients: one typed message per
    client named, each yielded as soon as it is ready (the server checks it while the next one is computed)."""
    if msg_type == S2C_TRAIN:
        for client, own in fields["clients"].items():
            yield C2S_UPDATE, home[client].train(fields["model"], fields["normalizer"], RoundPlan.from_dict(own["plan"]),
                                                own.get("scale"))
    elif msg_type == S2C_EVAL_STATS:
        for client, own in fields["clients"].items():
            yield C2S_VAL_STATS, ValStats(fields["round"], client, home[client].validation_stats(
                fields["model"], fields["normalizer"], own.get("scale")))
    elif msg_type == S2C_EVAL_COUNTS:
        for client, own in fields["clients"].items():
            yield C2S_REPORT, Report(fields["round"], home[client].report(fields["global_threshold"],
                                                                          own["device_threshold"], fields["window"]))
            home[client].publish_live(fields["round"], fields["global_threshold"], own["device_threshold"])
    else:
        raise ValueError(f"{msg_type} is not a request a client answers")


def fabricate_counts(report: dict[str, Any], scale: float) -> None:
    """eval_lies: every attack row caught, no benign row flagged, attack_scale times the benign rows it holds
    (a board that hides its own infection and flatters the federation's numbers)."""
    for m in report["modes"].values():
        n_benign = int((m["benign"]["fp"] + m["benign"]["tn"]) * scale)
        m["benign"] = {"fp": 0, "tn": n_benign}
        for a in m["attacks"].values():
            a["tp"], a["fn"] = a["tp"] + a["fn"], 0
        w = m["window"]
        m["window"] = {"tp": w["tp"] + w["fn"], "fn": 0, "fp": 0, "tn": int((w["fp"] + w["tn"]) * scale)}
