"""ROC curves for reports: from per-row scores (simulation, baselines) or score histograms (deployment)."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

MAX_POINTS = 200


def _thin(fpr: np.ndarray, tpr: np.ndarray) -> dict[str, list[float]]:
    if len(fpr) > MAX_POINTS:
        idx = np.unique(np.linspace(0, len(fpr) - 1, MAX_POINTS).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return {"fpr": [round(float(x), 6) for x in fpr], "tpr": [round(float(x), 6) for x in tpr]}


def roc_from_scores(benign: np.ndarray, attack: np.ndarray) -> dict[str, list[float]] | None:
    if len(benign) == 0 or len(attack) == 0:
        return None
    y = np.concatenate([np.zeros(len(benign)), np.ones(len(attack))])
    fpr, tpr, _ = roc_curve(y, np.concatenate([benign, attack]))
    return _thin(fpr, tpr)


def roc_from_histograms(benign: np.ndarray, attack: np.ndarray) -> dict[str, list[float]] | None:
    """Thresholds at bin edges, from the highest bin down."""
    if benign.sum() == 0 or attack.sum() == 0:
        return None
    fpr = np.concatenate([[0.0], np.cumsum(benign[::-1]) / benign.sum()])
    tpr = np.concatenate([[0.0], np.cumsum(attack[::-1]) / attack.sum()])
    keep = np.concatenate([[True], (np.diff(fpr) > 0) | (np.diff(tpr) > 0)])
    return _thin(fpr[keep], tpr[keep])


def curves_from_scores(scores: list[Any]) -> dict[str, Any]:
    """{device: roc, ..., "all devices": roc} from DeviceScores."""
    out: dict[str, Any] = {}
    for s in scores:
        attack = np.concatenate(list(s.attacks.values())) if s.attacks else np.zeros(0)
        out[s.device] = roc_from_scores(s.test, attack)
    all_b = np.concatenate([s.test for s in scores])
    all_a = np.concatenate([np.concatenate(list(s.attacks.values())) for s in scores if s.attacks] or [np.zeros(0)])
    out["all devices"] = roc_from_scores(all_b, all_a)
    return {"roc": out}
