"""Sound evaluation of a detector on per-device splits.

- one normalisation for every row (the detector's, fitted on training benign rows only);
- thresholds from held-out benign *validation* rows: a global one from merged error statistics
  and one per device;
- FPR on benign *test* rows never trained on, TPR per attack file; both threshold modes, plus
  N-BaIoT's majority-vote window variant.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.loader import DeviceSplit
from fediot.metrics import detection_metrics, majority_vote
from model.detector import ErrorStats, reconstruction_errors
from model.normalization import Normalizer
from torch import nn


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


def thresholds(scores: list[DeviceScores], k: float) -> tuple[float, dict[str, float]]:
    """Global threshold from merged validation statistics, and each device's own threshold."""
    per_device = {s.device: s.validation_stats.threshold(k) for s in scores}
    global_thr = ErrorStats.merge([s.validation_stats for s in scores]).threshold(k)
    return global_thr, per_device


def _mode(scores: list[DeviceScores], thr: dict[str, float], window: int) -> dict[str, Any]:
    """Metrics pooled over `scores` with threshold thr[device]; per-attack TPR; window variant."""
    benign_scores = np.concatenate([s.test for s in scores])
    benign_flags = np.concatenate([s.test > thr[s.device] for s in scores])
    per_attack: dict[str, list[np.ndarray]] = {}
    per_attack_flags: dict[str, list[np.ndarray]] = {}
    win_benign = [majority_vote(s.test > thr[s.device], window) for s in scores]
    win_attack: list[np.ndarray] = []
    for s in scores:
        for name, sc in s.attacks.items():
            per_attack.setdefault(name, []).append(sc)
            per_attack_flags.setdefault(name, []).append(sc > thr[s.device])
            win_attack.append(majority_vote(sc > thr[s.device], window))
    attack_scores = np.concatenate([np.concatenate(v) for v in per_attack.values()]) if per_attack else np.zeros(0)
    attack_flags = np.concatenate([np.concatenate(v) for v in per_attack_flags.values()]) if per_attack else np.zeros(0, bool)
    out = detection_metrics(benign_flags, attack_flags, benign_scores, attack_scores)
    out["n_benign_test"] = int(len(benign_flags))
    out["n_attack_test"] = int(len(attack_flags))
    out["attacks"] = {
        name: {"tpr": float(np.concatenate(f).mean()), "n": int(sum(len(x) for x in f))}
        for name, f in per_attack_flags.items()
    }
    out["window"] = {"size": window, **detection_metrics(
        np.concatenate(win_benign) if win_benign else np.zeros(0, bool),
        np.concatenate(win_attack) if win_attack else np.zeros(0, bool))}
    return out


def evaluate(scores: list[DeviceScores], global_threshold: float | None, device_thresholds: dict[str, float],
             window: int, primary: str = "global") -> dict[str, Any]:
    """metrics.json's 'global' and 'devices' parts.

    Each entry carries its threshold modes under `modes` ('global': one threshold from merged
    validation statistics; 'device': each device's own threshold); its top-level keys repeat the
    `primary` mode. global_threshold=None (devices judged by different models, e.g. local-only
    baselines) leaves out the global mode, which then has no meaning.
    """
    if primary not in ("global", "device") or (primary == "global" and global_threshold is None):
        raise ValueError(f"primary threshold mode must be 'global' (with a global threshold) or 'device', not {primary!r}")
    glob_thr = {s.device: global_threshold for s in scores}

    def entry(subset: list[DeviceScores]) -> dict[str, Any]:
        modes = {}
        if global_threshold is not None:
            modes["global"] = {"threshold": global_threshold, **_mode(subset, glob_thr, window)}
        modes["device"] = {"thresholds": {s.device: device_thresholds[s.device] for s in subset},
                           **_mode(subset, device_thresholds, window)}
        return {"threshold_mode": primary, **modes[primary], "modes": modes}

    result: dict[str, Any] = {"global": entry(scores), "devices": {}}
    for s in scores:
        e = entry([s])
        e["missing_attacks"] = list(s.missing_attacks)
        e["validation"] = {"n": int(len(s.validation)), "mse_mean": float(s.validation.mean()),
                           "mse_std": float(s.validation.std())}
        result["devices"][s.device] = e
    return result
