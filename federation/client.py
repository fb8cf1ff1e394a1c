"""One client's side of a federated run, framework-free: its device's rows, its model, its answers.

The client node of both run paths (`trainer.nodes.ClientNode`, on MPI or gRPC) calls only this.
It never sends a row: only feature statistics (hello), weights and losses (train), validation-error
statistics and count reports (evaluation). It trains with the plan the server sent, nothing else.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data import nbaiot
from data.loader import DeviceSplit
from evaluation.counts import client_report, held_out_counts
from evaluation.scoring import DeviceScores, score_device
from federation.core import RoundPlan, state_of
from fediot.rundir import append_jsonl
from model.autoencoder import AutoEncoder
from model.detector import ErrorStats, train_autoencoder
from model.normalization import FeatureStats, Normalizer


ATTACKS = ("none", "data_poisoning", "model_scaling", "random_update", "stats_inflation", "eval_lies")
POISONING_ATTACKS = ("data_poisoning", "model_scaling")  # train on the device's attack rows as if benign
TAMPERING_ATTACKS = ("model_scaling", "random_update")  # send something computed from the global weights


class LocalClient:
    """Holds one device's split; trains and evaluates the global model as the server asks."""

    def __init__(self, split: DeviceSplit, feature_transform: str, record_file: Path | None = None,
                 attack: str = "none", attack_scale: float = 1.0, model: AutoEncoder | None = None) -> None:
        """attack/attack_scale (attack_args, for a rank listed as malicious): what this client does instead of
        honest training, to study what a compromised board can do; 'none' for an honest client. model: the
        autoencoder to load the global weights into (a worker's clients share one; each call loads them)."""
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS}")
        self.attack, self.attack_scale = attack, attack_scale
        self.split = split
        self.device = split.device
        self.record_file = record_file
        self.stats = FeatureStats.of(split.train, feature_transform)
        self.model = model if model is not None else AutoEncoder(nbaiot.N_FEATURES)
        self._rows: tuple[dict[str, Any], np.ndarray] | None = None  # (normaliser, normalised training rows)
        self.scores: DeviceScores | None = None

    @property
    def n_train(self) -> int:
        return len(self.split.train)

    def hello(self) -> dict[str, Any]:
        """What the server learns when the client joins: device, row counts, feature statistics."""
        s = self.split
        stats = self.stats
        if self.attack == "stats_inflation":  # statistics of rows attack_scale times larger than its own
            f = self.attack_scale
            stats = FeatureStats(stats.count, stats.total * f, stats.total_sq * f * f, stats.minimum * f, stats.maximum * f)
        return {"device": self.device, "n_train": self.n_train, "feature_stats": stats.to_dict(),
                "held_out": held_out_counts(validation=len(s.validation), test=len(s.test),
                                            attacks={name: len(rows) for name, rows in s.attacks.items()})}

    def _training_rows(self, normalizer: dict[str, Any]) -> np.ndarray:
        if self._rows is None or self._rows[0] != normalizer:
            rows = self.split.train
            if self.attack in POISONING_ATTACKS:  # the device's attack traffic, trained on as if it were benign
                rows = np.vstack([rows, *self.split.attacks.values()])
            self._rows = (normalizer, Normalizer.from_dict(normalizer)(rows))
        return self._rows[1]

    def _tamper(self, global_state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """What a malicious client sends instead of its trained weights: model_scaling sends its poisoned model's
        update boosted attack_scale times (model replacement: scale ~ clients / share), random_update noise."""
        local = state_of(self.model)
        if self.attack == "model_scaling":
            return {k: g + self.attack_scale * (local[k] - g) for k, g in global_state.items()}
        if self.attack == "random_update":
            gen = torch.Generator().manual_seed(seed)
            spread = {k: g.std() if g.numel() > 1 else g.abs() + 1e-3 for k, g in global_state.items()}
            return {k: g + self.attack_scale * spread[k] * torch.randn(g.shape, generator=gen)
                    for k, g in global_state.items()}
        return local

    def train(self, model: dict[str, torch.Tensor], normalizer: dict[str, Any], plan: RoundPlan) -> dict[str, Any]:
        """Local training of the global model with the server's plan; the update to send back."""
        # the global weights, kept for _tamper (an honest client only reads `model`: load_state_dict copies it)
        global_state = {k: v.detach().clone() for k, v in model.items()} if self.attack in TAMPERING_ATTACKS else model
        self.model.load_state_dict(model)
        rows = self._training_rows(normalizer)
        started = time.monotonic()
        losses = train_autoencoder(self.model, rows, plan.epochs, plan.batch_size, plan.lr, plan.weight_decay,
                                   seed=plan.seed)
        seconds = round(time.monotonic() - started, 4)
        if self.record_file is not None:
            append_jsonl(self.record_file, {"round": plan.round_idx + 1, "device": self.device, "loss": losses[-1],
                                            "epoch_losses": losses, "lr": plan.lr, "epochs": plan.epochs,
                                            "seed": plan.seed, "samples": self.n_train, "train_seconds": seconds})
        # a data poisoner also claims attack_scale times the rows it trained on: the row count is its word
        n = int(len(rows) * self.attack_scale) if self.attack == "data_poisoning" else self.n_train
        return {"model": self._tamper(global_state, plan.seed), "n": n, "loss": losses[-1], "lr": plan.lr,
                "train_seconds": seconds}

    def validation_stats(self, model: dict[str, torch.Tensor], normalizer: dict[str, Any]) -> dict[str, Any]:
        """Score the held-out rows with the global model; the validation-error statistics to send."""
        self.model.load_state_dict(model)
        self.scores = score_device(self.model, Normalizer.from_dict(normalizer), self.split)
        s = ErrorStats.of(self.scores.validation)
        if self.attack == "stats_inflation":  # errors reported attack_scale times larger: mean and std scale alike
            return {"count": s.count, "total": s.total * self.attack_scale, "total_sq": s.total_sq * self.attack_scale ** 2}
        return {"count": s.count, "total": s.total, "total_sq": s.total_sq}

    def report(self, global_threshold: float, device_threshold: float, window: int) -> dict[str, Any]:
        """Count report of the rows scored by `validation_stats`, at the server's thresholds."""
        if self.scores is None:
            raise ValueError("a count report needs the validation phase first")
        report = client_report(self.scores, float(global_threshold), float(device_threshold), int(window))
        if self.attack == "eval_lies":
            fabricate_counts(report, self.attack_scale)
        return report


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
