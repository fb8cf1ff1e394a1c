"""Row-level side of evaluation: score a device's held-out rows, set thresholds, and evaluate.

- one normalisation for every row (the detector's, fitted on training benign rows only);
- thresholds from held-out benign *validation* rows: a global one from merged error statistics
  and one per device (`thresholds_from_stats`, the one threshold rule of every run path; a server
  defending against lying clients bounds each device's share first, `clip_threshold_outliers`);
- FPR on benign *test* rows never trained on, TPR per attack file; both threshold modes, plus
  N-BaIoT's majority-vote window variant.

`evaluate` goes through the client-report protocol (`evaluation.counts`): each device's scores are
turned into the counts a client would send, and combined as the server combines them. So the
numbers of a baseline, a re-evaluation, a simulation and a deployment come from one path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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


def thresholds_from_stats(stats: dict[str, ErrorStats], k: float) -> tuple[float, dict[str, float]]:
    """Global threshold (mean + k*std of the merged validation errors) and each device's own."""
    per_device = {device: s.threshold(k) for device, s in stats.items()}
    return ErrorStats.merge(list(stats.values())).threshold(k), per_device


MIN_BAND_RATIO = 2.0  # the band of plausible thresholds is at least this factor either side of the median


def clip_threshold_outliers(stats: dict[str, ErrorStats], k: float, mads: float | None,
                            limit: int | None = None) -> tuple[dict[str, ErrorStats], dict[str, str]]:
    """Validation statistics for the global threshold with bounded influence. The band of plausible device
    thresholds is the median device's x/÷ exp(mads x MAD of the log thresholds) (at least MIN_BAND_RATIO): it
    follows how different the devices of this federation really are, and a minority cannot move the median or
    the MAD far. A device outside the band counts as if its errors were scaled to the nearest threshold of a
    device inside it, so a client lying about its validation errors counts like the most extreme plausible
    device (and one that stays inside the band moves the global threshold at most to its edge), while an
    honest device that is merely different still counts (leaving it out would set the global threshold below
    its normal errors). At most `limit` devices are bounded (the defenses' byzantine_clients), the farthest
    first: when many clients sit outside the band together (measured: 82 of the 112 honest clients of one
    poorly fit device among 1,008), they are the federation's spread, and bounding them all would set the
    global threshold below that device's normal errors (its FPR 0.34). Returns the statistics to pool and
    device -> what was done."""
    if mads is None or len(stats) < 3:
        return dict(stats), {}
    own = {d: s.threshold(k) for d, s in stats.items()}
    if min(own.values()) <= 0.0:
        return dict(stats), {}
    logs = {d: float(np.log(t)) for d, t in own.items()}
    centre = float(np.median(list(logs.values())))
    mad = float(np.median([abs(v - centre) for v in logs.values()]))
    half = max(mads * mad, float(np.log(MIN_BAND_RATIO)))
    inside = [v for v in logs.values() if abs(v - centre) <= half]
    outside = sorted((d for d, v in logs.items() if abs(v - centre) > half), key=lambda d: -abs(logs[d] - centre))
    bounded = outside if limit is None else outside[:limit]
    note = f"; {len(outside)} outside, at most {limit} bounded" if len(bounded) < len(outside) else ""
    out, clipped = dict(stats), {}
    for d in bounded:
        v = logs[d]
        edge = max(inside) if v > centre else min(inside)
        out[d] = stats[d].scaled(float(np.exp(edge - v)))
        clipped[d] = (f"its threshold {own[d]:.4g} is {np.exp(v - centre):.3g}x the median device threshold "
                      f"{np.exp(centre):.4g}, outside the band of x/÷ {np.exp(half):.3g}; counted at "
                      f"{np.exp(edge):.4g}, the nearest device inside it{note}")
    return out, clipped


def thresholds(scores: list[DeviceScores], k: float) -> tuple[float, dict[str, float]]:
    """`thresholds_from_stats` of scored devices."""
    return thresholds_from_stats({s.device: s.validation_stats for s in scores}, k)


def evaluate(scores: list[DeviceScores], global_threshold: float | None, device_thresholds: dict[str, float],
             window: int, primary: str = "global", device_of: Callable[[str], str] | None = None) -> dict[str, Any]:
    """metrics.json's 'global' and 'devices' parts, through the client-report protocol.

    global_threshold=None (devices judged by different models, e.g. local-only baselines) leaves
    out the global mode, which then has no meaning. `device_of` (client -> device) as in `combine_reports`.
    """
    reports = [client_report(s, global_threshold, device_thresholds[s.device], window) for s in scores]
    return combine_reports(reports, global_threshold, device_thresholds, window, primary, device_of)
