"""Detection metrics from counts: rates, N-BaIoT majority-vote windows (AUCs: `evaluation.counts`)."""
from __future__ import annotations

from typing import Any

import numpy as np

# The metrics every run records and reports, in this order (rounds.jsonl, tables, comparisons).
METRIC_KEYS = ("tpr", "fpr", "precision", "f1", "accuracy", "roc_auc", "pr_auc")


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


def rate_text(key: str, m: dict[str, Any]) -> str:
    """A rate to 4 decimals; 'n/a' when undefined (e.g. precision when nothing was flagged)."""
    return "n/a" if m.get(key) is None else f"{m[key]:.4f}"
