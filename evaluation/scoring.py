"""Row-level side of evaluation: score a device's held-out rows, set thresholds, and evaluate.

- one normalisation for every row (the detector's, fitted on training benign rows only);
- thresholds from held-out benign *validation* rows: a global one from merged error statistics
  and one per device (`thresholds_from_stats`, the one threshold rule of every run path);
- FPR on benign *test* rows never trained on, TPR per attack file; both threshold modes, plus
  N-BaIoT's majority-vote window variant.

`evaluate` goes through the client-report protocol (`evaluation.counts`): each device's scores are
turned into the counts a client would send, and combined as the server combines them. So the
numbers of a baseline, a re-evaluation, a simulation and a deployment come from one path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from data.loader import DeviceSplit
from evaluation.counts import client_report, combine_reports
from model.detector import ErrorStats, reconstruction_errors
from model.normalization import Normalizer


@dataclass
class DeviceScores:
    """Per-row reconstruction errors of one device's held-out rows."""

    device: str
    validation: np.ndarray
    test: np.ndarray
    attacks: dict[str, np.ndarray] = field(default_factory=dict)
    missing_attacks: list[str] = field(default_factory=list)

    @property
    def validation_stats(self) -> ErrorStats:
        return ErrorStats.of(self.validation)


def score_device(model: nn.Module, normalizer: Normalizer, split: DeviceSplit) -> DeviceScores:
    """Score a device's validation, benign test and attack rows with the same normalisation."""

    def s(rows: np.ndarray) -> np.ndarray:
        return reconstruction_errors(model, normalizer(rows))

    return DeviceScores(split.device, s(split.validation), s(split.test),
                        {name: s(rows) for name, rows in split.attacks.items()}, list(split.missing_attacks))


def thresholds_from_stats(stats: dict[str, ErrorStats], k: float,
                          exclude: frozenset[str] | set[str] = frozenset()) -> tuple[float, dict[str, float]]:
    """Global threshold (mean + k*std of the merged validation errors of the devices not in `exclude`) and
    each device's own."""
    per_device = {device: s.threshold(k) for device, s in stats.items()}
    pooled = [s for device, s in stats.items() if device not in exclude]
    return ErrorStats.merge(pooled).threshold(k), per_device


def threshold_outliers(per_device: dict[str, float], ratio: float | None) -> dict[str, str]:
    """Devices whose own threshold is more than `ratio` times above or below the median device threshold:
    left out of the global threshold, so one client's inflated (or deflated) validation statistics cannot
    move every device's threshold. device -> reason."""
    if ratio is None or len(per_device) < 3:
        return {}
    median = float(np.median(list(per_device.values())))
    if median <= 0.0:
        return {}
    return {d: f"its threshold {t:.4g} is {t / median:.3g}x the median device threshold {median:.4g} (limit {ratio:g}x)"
            for d, t in per_device.items() if t > ratio * median or t * ratio < median}


def thresholds(scores: list[DeviceScores], k: float) -> tuple[float, dict[str, float]]:
    """`thresholds_from_stats` of scored devices."""
    return thresholds_from_stats({s.device: s.validation_stats for s in scores}, k)


def evaluate(scores: list[DeviceScores], global_threshold: float | None, device_thresholds: dict[str, float],
             window: int, primary: str = "global") -> dict[str, Any]:
    """metrics.json's 'global' and 'devices' parts, through the client-report protocol.

    global_threshold=None (devices judged by different models, e.g. local-only baselines) leaves
    out the global mode, which then has no meaning.
    """
    reports = [client_report(s, global_threshold, device_thresholds[s.device], window) for s in scores]
    return combine_reports(reports, global_threshold, device_thresholds, window, primary)
