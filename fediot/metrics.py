"""Detection metrics: confusion counts, rates, ROC/PR AUC, N-BaIoT majority-vote windows."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def confusion(benign_flags: np.ndarray, attack_flags: np.ndarray) -> dict[str, int]:
    """Counts with attack as the positive class; flags are True where a row is flagged."""
    b = np.asarray(benign_flags, dtype=bool)
    a = np.asarray(attack_flags, dtype=bool)
    return {"tp": int(a.sum()), "fn": int((~a).sum()), "fp": int(b.sum()), "tn": int((~b).sum())}


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def rates(c: dict[str, int]) -> dict[str, float | None]:
    """TPR, FPR, precision, F1, accuracy from counts; None where a denominator is 0."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    precision = _ratio(tp, tp + fp)
    tpr = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"tpr": tpr, "fpr": _ratio(fp, fp + tn), "precision": precision, "f1": f1,
            "accuracy": _ratio(tp + tn, tp + tn + fp + fn)}


def auc_scores(benign_scores: np.ndarray, attack_scores: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC and PR-AUC (average precision), attack = positive; None without both classes."""
    if len(benign_scores) == 0 or len(attack_scores) == 0:
        return {"roc_auc": None, "pr_auc": None}
    y = np.concatenate([np.zeros(len(benign_scores)), np.ones(len(attack_scores))])
    s = np.concatenate([benign_scores, attack_scores])
    return {"roc_auc": float(roc_auc_score(y, s)), "pr_auc": float(average_precision_score(y, s))}


def majority_vote(flags: np.ndarray, window: int) -> np.ndarray:
    """Decisions of every full sliding window of `window` consecutive rows (strict majority).

    A sequence shorter than the window gives one decision over all its rows.
    """
    f = np.asarray(flags, dtype=np.int64)
    if len(f) == 0:
        return np.zeros(0, dtype=bool)
    w = min(window, len(f))
    csum = np.concatenate([[0], np.cumsum(f)])
    votes = csum[w:] - csum[:-w]
    return votes * 2 > w


def detection_metrics(benign_flags: np.ndarray, attack_flags: np.ndarray,
                      benign_scores: np.ndarray | None = None,
                      attack_scores: np.ndarray | None = None) -> dict[str, Any]:
    """Counts + rates (+ AUCs when scores are given) for one set of benign and attack rows."""
    c = confusion(benign_flags, attack_flags)
    out: dict[str, Any] = {**rates(c), **c}
    if benign_scores is not None and attack_scores is not None:
        out.update(auc_scores(benign_scores, attack_scores))
    return out
