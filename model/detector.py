"""Framework-free anomaly detector: train the autoencoder, score rows, set thresholds, save/load.

Plain functions and small dataclasses; FedML's trainer/aggregator classes only call these.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fediot.rundir import write_atomic_bytes
from model.adam import FusedAdam
from model.autoencoder import AutoEncoder
from model.interface import DetectorInterface
from model.lean import Layer, lean_path, normalizer_for, write_lean
from model.normalization import FeatureStats, Normalizer
from model.threshold import ThresholdRule, histogram, tail_clusters, threshold_at_rate, window_scores

CHECKPOINT_FORMAT = "fediot-detector-v1"
SCORE_BATCH_ROWS = 8192


def proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's mu / 2 * ||w - w_anchor||^2 over every parameter (the term FedML's FedProxModelTrainer adds to its
    loss; its trainer itself is for classifiers: cross-entropy on labels)."""
    return (mu / 2) * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))


def train_autoencoder(model: nn.Module, rows: np.ndarray, epochs: int, batch_size: int, lr: float,
                      weight_decay: float = 0.0, seed: int = 0,
                      on_epoch: Callable[[int, float], None] | None = None, prox_mu: float = 0.0) -> list[float]:
    """Train on normalised rows (float32) with MSE + Adam; returns the mean loss (the reconstruction error, without
    FedProx's proximal term) of each epoch. prox_mu > 0: FedProx, the model is kept near its starting weights."""
    if len(rows) == 0:
        raise ValueError("no training rows")
    x = torch.as_tensor(rows, dtype=torch.float32)
    model.train()
    anchor = [p.detach().clone() for p in model.parameters()] if prox_mu > 0 else []
    # fused: one C++ kernel per step for all 16 tensors instead of Python over them. Measured on x86_64, one thread,
    # 115-wide autoencoder, batch 64: 1.15 vs 1.8 ms per step; weights within 2e-7 of the unfused step's. FusedAdam:
    # torch.optim.Adam(fused=True)'s arithmetic without torch._dynamo's import (model/adam.py)
    optimizer = FusedAdam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.MSELoss()
    gen = torch.Generator().manual_seed(seed)
    epoch_losses: list[float] = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(x), batch_size):
            batch = x[order[start:start + batch_size]]
            optimizer.zero_grad()
            loss = loss_fn(model(batch), batch)
            (loss + proximal_term(model, anchor, prox_mu) if prox_mu > 0 else loss).backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        epoch_losses.append(total / seen)
        if on_epoch is not None:
            on_epoch(epoch, epoch_losses[-1])
    return epoch_losses


@torch.no_grad()
def reconstruction_errors(model: nn.Module, rows: np.ndarray) -> np.ndarray:
    """Per-row mean squared reconstruction error of normalised rows."""
    model.eval()
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), SCORE_BATCH_ROWS):
        x = torch.as_tensor(rows[start:start + SCORE_BATCH_ROWS], dtype=torch.float32)
        # squares summed in float64: the float32 forward pass is the only rounding, as in model/lean.py
        out[start:start + len(x)] = ((model(x) - x).double() ** 2).mean(dim=1).numpy()
    return out


@dataclass
class ErrorStats:
    """Statistics of per-row validation errors that merge exactly: count, sum and sum of squares (for mean + k*std)
    and, for the budget rule (`model.threshold`), the histogram of window scores and the rows per day they stand for
    (None: rows without time, e.g. N-BaIoT's)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    window_hist: dict[int, float] | None = None
    rows_per_day: float | None = None
    tail_clusters: float | None = None  # clusters of window scores over the tail level (`model.threshold.tail_clusters`)
    tail_exceedances: float | None = None  # and the window scores over it

    @classmethod
    def of(cls, errors: np.ndarray, window: int | None = None, rows_per_day: float | None = None,
           rule: ThresholdRule | None = None) -> "ErrorStats":
        """window: the vote window whose window scores are histogrammed (None: no histogram); with the rows per day and
        the `rule`, their tail's clusters too (the budget rule's extremal index)."""
        e = np.asarray(errors, dtype=np.float64)
        scores = window_scores(e, window) if window is not None else None
        hist = histogram(scores) if scores is not None else None
        clusters = exceedances = None
        if scores is not None and rows_per_day is not None and rule is not None and rule.alert_gap_s > 0:
            clusters, exceedances = tail_clusters(scores, rule.tail_level, rule.gap_rows(window, rows_per_day))
        return cls(len(e), float(e.sum()), float((e ** 2).sum()), hist, rows_per_day, clusters, exceedances)

    @classmethod
    def merge(cls, parts: list["ErrorStats"]) -> "ErrorStats":
        """The statistics of all parts' rows (float sums: an overflow is inf, which `threshold` refuses). Histograms
        and rows per day add up where every part has them."""
        hist: dict[int, float] | None = None
        if parts and all(p.window_hist is not None for p in parts):
            hist = {}
            for p in parts:
                for b, c in p.window_hist.items():  # type: ignore[union-attr]
                    hist[int(b)] = hist.get(int(b), 0) + c
        def summed(values: list[float | None]) -> float | None:
            return float(sum(values)) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]

        return cls(sum(p.count for p in parts), sum(float(p.total) for p in parts),
                   sum(float(p.total_sq) for p in parts), hist, summed([p.rows_per_day for p in parts]),
                   summed([p.tail_clusters for p in parts]), summed([p.tail_exceedances for p in parts]))

    def scaled(self, factor: float, count: int | None = None) -> "ErrorStats":
        """The statistics of these errors times `factor` (mean and std scale alike), weighed as `count` rows (the
        histogram's counts weighed alike; its scores are not multiplied: `factor` is 1 wherever a histogram is used)."""
        n = self.count if count is None else count
        hist = None if self.window_hist is None else {b: c * n / self.count for b, c in self.window_hist.items()}
        w = n / self.count
        return ErrorStats(n, self.total * factor * w, self.total_sq * factor * factor * w, hist, self.rows_per_day,
                          None if self.tail_clusters is None else self.tail_clusters * w,
                          None if self.tail_exceedances is None else self.tail_exceedances * w)

    @property
    def extremal_index(self) -> float:
        """Share of the tail's window alerts that start a new false alert (1 when unknown)."""
        if not self.tail_clusters or not self.tail_exceedances:
            return 1.0
        return min(1.0, float(self.tail_clusters) / float(self.tail_exceedances))

    @property
    def mean(self) -> float:
        return self.total / self.count

    @property
    def std(self) -> float:
        """Population standard deviation (float64: never an OverflowError, at worst inf, which `threshold` refuses)."""
        mean = np.float64(self.total) / self.count
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.sqrt(max(np.float64(self.total_sq) / self.count - mean * mean, 0.0)))

    def threshold(self, k: float) -> float:
        """mean + k * std; ValueError when there are no rows or the result is not a finite number."""
        if self.count == 0:
            raise ValueError("no validation errors to set a threshold from")
        with np.errstate(over="ignore", invalid="ignore"):
            value = float(np.float64(self.mean) + np.float64(k) * np.float64(self.std))
        if not np.isfinite(value):
            raise ValueError(f"the threshold of {self.count} validation errors is not finite")
        return value

    def threshold_by(self, rule: "ThresholdRule | float", rows_per_day: float | None = None) -> float:
        """The configured rule's threshold: the false-alarm budget at `rows_per_day` (default: these rows' own) where
        the rule asks for it and the rate is known, else mean + k * std. A bare number is k (mean + k * std). Where
        the held-out window scores are too few to show the budget's tail (fewer than `min_tail_rows` over the tail
        level), the higher of the highest score and mean + k * std: a 40 s capture's 600 validation rows cannot
        certify one false alarm a day (bench/lan_capture_study.py: the highest score alone let 5-9 % of later rows
        through)."""
        if not isinstance(rule, ThresholdRule):
            return self.threshold(float(rule))
        rate = self.rows_per_day if rows_per_day is None else rows_per_day
        if not rule.uses_budget(rate):
            return self.threshold(rule.k)
        if self.window_hist is None or rate is None:
            raise ValueError("the budget threshold rule needs the window-score histogram and the rows per day "
                             "(validation_args.threshold_rule: budget on rows without time; use auto or mean_std)")
        theta = self.extremal_index if rule.alert_gap_s > 0 else 1.0  # alert_gap_s 0: every window alert counts
        value, shown = threshold_at_rate(self.window_hist, rule.rate(rate, theta), rule)
        # too few held-out rows to show the budget's tail (a capture of minutes): never below mean + k * std
        return value if shown else max(value, self.threshold(rule.k))


def thresholds_of(stats: dict[str, ErrorStats], rule: "ThresholdRule | float",
                  device_of: Callable[[str], str] | None = None) -> tuple[float, dict[str, float]]:
    """The one threshold rule (`ErrorStats.threshold_by`; a bare number is k of mean + k*std): global = of every
    client's merged statistics (the budget at the mean device's rows per day: a device outside the federation is
    held to the same budget); each client's own = of its device's (`device_of`: client -> device; the clients of one
    device merged, so a device split over several clients detects with one threshold from all its validation rows).
    `evaluation.scoring.thresholds_from_stats` and `Detector.fit` both use this."""
    by_device: dict[str, list[ErrorStats]] = {}
    for c, s in stats.items():
        by_device.setdefault(device_of(c) if device_of else c, []).append(s)
    merged = {d: (parts[0] if len(parts) == 1 else ErrorStats.merge(parts)) for d, parts in by_device.items()}
    own = {d: m.threshold_by(rule) for d, m in merged.items()}
    pooled = ErrorStats.merge(list(stats.values()))
    mean_rate = None if pooled.rows_per_day is None else pooled.rows_per_day / len(merged)
    return pooled.threshold_by(rule, mean_rate), {c: own[device_of(c) if device_of else c] for c in stats}


@dataclass
class Detector(DetectorInterface):
    """A trained detector: normalisation + autoencoder + thresholds. Scores raw 115-column rows.

    `fit` (train on benign rows, threshold on held-out benign rows; `model.estimator.AutoencoderDetector` is the
    scikit-learn-style estimator around it), `score` / `decision_function`, `threshold_` / `threshold_for`, `predict`
    (model.interface: the names both backends share)."""

    model: AutoEncoder
    normalizer: Normalizer
    threshold_k: float
    global_threshold: float
    device_thresholds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # device -> its own feature scales where the federation widened them (`Normalizer.widened_for`)
    device_scales: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: dict[str, np.ndarray], validation: dict[str, np.ndarray], *, transform: str,
            normalization: str, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0, seed: int = 0,
            k: float = 3.0, meta: dict[str, Any] | None = None,
            on_epoch: Callable[[int, float], None] | None = None) -> tuple["Detector", list[float]]:
        """A detector of the devices' benign traffic: normalisation fitted on the training rows only (merged
        per-device statistics, equal to pooling the rows), one autoencoder trained on all of them, thresholds from
        the held-out validation rows (`thresholds_of`). Returns it and the loss of each epoch. The baselines and
        `traffic.train_device` fit through here."""
        stats = FeatureStats.merge([FeatureStats.of(rows, transform) for rows in train.values()])
        normalizer = Normalizer.from_stats(stats, transform, normalization)
        torch.manual_seed(seed)
        model = AutoEncoder(next(iter(train.values())).shape[1])
        losses = train_autoencoder(model, normalizer(np.concatenate(list(train.values()))), epochs, batch_size, lr,
                                   weight_decay, seed, on_epoch)
        glob, per_device = thresholds_of(
            {d: ErrorStats.of(reconstruction_errors(model, normalizer(rows))) for d, rows in validation.items()}, k)
        return cls(model, normalizer, k, glob, per_device, dict(meta or {})), losses

    def normalizer_for(self, device: str | None = None) -> Normalizer:
        """The device's normalisation: the federation's, with the device's own scales where they were widened."""
        return normalizer_for(self.normalizer, self.device_scales, device)

    def score(self, raw_rows: np.ndarray, device: str | None = None) -> np.ndarray:
        """Per-row reconstruction MSE of raw (un-normalised) rows of `device` (None: a device outside the federation)."""
        return reconstruction_errors(self.model, self.normalizer_for(device)(raw_rows))

    def lean_layers(self) -> list[Layer]:
        """The autoencoder as numpy layers, in order, each with the activation that follows it."""
        layers: list[Layer] = []
        for module in [*self.model.enc, *self.model.dec]:
            if isinstance(module, nn.Linear):
                layers.append(Layer(module.weight.detach().cpu().numpy().copy(),
                                    module.bias.detach().cpu().numpy().copy(), "linear"))
            elif isinstance(module, nn.Tanh) and layers:
                layers[-1].activation = "tanh"
            else:
                raise TypeError(f"no numpy form for {type(module).__name__}")
        return layers

    def export_lean(self, path: str | Path) -> Path:
        """Write the numpy detector (model.npz) that detect.py runs without torch."""
        return write_lean(lean_path(path), self.lean_layers(), self.normalizer, self.threshold_k,
                          self.global_threshold, dict(self.device_thresholds), self.meta, self.device_scales)

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (temp file + rename), and its numpy export beside it."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "input_dim": self.model.input_dim,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "normalizer": self.normalizer.to_dict(),
            "threshold_k": self.threshold_k,
            "global_threshold": self.global_threshold,
            "device_thresholds": dict(self.device_thresholds),
            "meta": self.meta,
            "device_scales": {d: np.asarray(v, dtype=np.float64).tolist() for d, v in self.device_scales.items()},
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        write_atomic_bytes(p, buf.getvalue())
        self.export_lean(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Detector":
        """Load a checkpoint written by `save` (a file, or a run directory holding model.pt)."""
        p = Path(path)
        if p.is_dir():
            p = p / "model.pt"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: checkpoint not found")
        payload = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{p}: not a FedIoT detector checkpoint (expected format {CHECKPOINT_FORMAT})")
        model = AutoEncoder(payload["input_dim"])
        model.load_state_dict(payload["state_dict"])
        model.eval()
        return cls(model, Normalizer.from_dict(payload["normalizer"]), payload["threshold_k"],
                   payload["global_threshold"], dict(payload["device_thresholds"]), payload.get("meta", {}),
                   {d: np.asarray(v, dtype=np.float64) for d, v in (payload.get("device_scales") or {}).items()})
