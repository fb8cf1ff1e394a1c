"""The threshold rule, from mergeable statistics of held-out benign errors.

Two forms, chosen by `validation_args.threshold_rule`:

* `mean_std`: mean + k * std of per-row errors (count, sum, sum of squares merge exactly). Fits light tails; on a real
  device's heavy-tailed errors one outlier row sets it (issue 33: a lock hub's validation std 2.65 against a mean of
  0.083, mean + 5 std = 13.3, TPR 0.16 at ROC-AUC 0.9996).
* `budget`: a false-alarm budget in the household's terms, `false_alerts_per_day` false alerts per device per day;
  with `alert_gap_s` > 0, window alerts closer together than it are one false alert (runs declustering: the share
  of the validation's tail exceedances that start a new cluster, the extremal index, turns alerts into windows;
  off by default, doc/benchmarks.md 'Real devices').
  What raises an alert is a window (a strict majority of the last `vote_window` rows over the threshold), so the rule
  is set on *window scores*: the (w//2 + 1)-th largest error of each window of w consecutive rows, which is above a
  threshold exactly when the window's majority is (`window_scores`). The device's rows per day (from its capture's
  time span) turn the budget into a rate q = budget / (windows per day x extremal index); the threshold is the (1 - q) quantile of the
  pooled window-score histogram (4096 log-spaced bins, 0.9 % wide: sums of counts merge exactly), and where q is
  below what the held-out rows can show, a generalised Pareto tail fitted to the excesses over the `tail_level`
  quantile (peaks over threshold, Siffer et al. 2017; probability-weighted moments, Hosking & Wallis 1987)
  extrapolates it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fediot.config import SECONDS_PER_DAY

# Score histogram grid: 4096 log-spaced bins over 1e-8..1e8 (+ under/overflow bins); each bin spans a factor 1.009.
HIST_EDGES = np.logspace(-8, 8, 4097)
N_HIST_BINS = len(HIST_EDGES) + 1
# a bin's value: the geometric middle of its edges (the under- and overflow bins: the edge they touch)
BIN_VALUES = np.concatenate([[HIST_EDGES[0]], np.sqrt(HIST_EDGES[:-1] * HIST_EDGES[1:]), [HIST_EDGES[-1]]])


def histogram(scores: np.ndarray) -> dict[int, int]:
    """Sparse histogram {bin index: count}; bin 0 = below 1e-8, last = at or above 1e8."""
    idx = np.searchsorted(HIST_EDGES, scores, side="right")
    values, counts = np.unique(idx, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def dense(h: Mapping[Any, float], dtype: Any = np.float64) -> np.ndarray:
    """A sparse histogram (keys may be JSON's strings) as N_HIST_BINS counts (int64 for exact sums of reports)."""
    out = np.zeros(N_HIST_BINS, dtype=dtype)
    for b, c in h.items():
        out[int(b)] += c
    return out


def window_scores(errors: np.ndarray, window: int) -> np.ndarray:
    """Per window of `window` consecutive rows, the score that decides its strict-majority vote: the (w//2 + 1)-th
    largest error (the median for odd w). A threshold below it flags a majority of the window, as
    `evaluation.metrics.majority_vote` counts. Fewer rows than the window: one window of them all."""
    e = np.asarray(errors, dtype=np.float64)
    if len(e) == 0:
        return e
    w = min(window, len(e))
    return np.sort(sliding_window_view(e, w), axis=1)[:, w - (w // 2 + 1)]


def tail_clusters(scores: np.ndarray, level: float, gap_rows: int) -> tuple[int, int]:
    """(clusters, exceedances) of the scores above their `level` quantile: exceedances closer than `gap_rows` rows
    are one cluster (runs declustering). clusters / exceedances estimates the extremal index: the share of window
    alerts that start a new false alert."""
    if len(scores) == 0:
        return 0, 0
    above = np.flatnonzero(scores > np.quantile(scores, level))
    if len(above) == 0:
        return 0, 0
    return 1 + int(np.sum(np.diff(above) > gap_rows)), len(above)


def gpd_fit(excesses: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Shape xi and scale sigma of a generalised Pareto distribution fitted to weighted excesses (> 0) by
    probability-weighted moments (closed form; stable with few dozen excesses, unlike maximum likelihood)."""
    order = np.argsort(excesses)
    y, w = excesses[order], weights[order]
    n = w.sum()
    p = (np.cumsum(w) - 0.5 * w) / n  # plotting positions of the sorted, weighted excesses
    a0 = float(np.sum(w * y) / n)
    a1 = float(np.sum(w * y * (1.0 - p)) / n)
    denominator = a0 - 2.0 * a1
    if denominator <= 0.0 or a0 <= 0.0:  # no tail to speak of (all excesses equal): an exponential of their mean
        return 0.0, max(a0, 1e-300)
    k = a0 / denominator - 2.0
    return -k, 2.0 * a0 * a1 / denominator


@dataclass(frozen=True)
class ThresholdRule:
    """validation_args' threshold settings; `threshold` applies them to one set of validation statistics."""

    rule: str = "auto"  # auto: budget where the rows carry their rate (captured traffic), mean_std where not
    k: float = 5.0
    false_alerts_per_day: float = 1.0
    tail_level: float = 0.98
    alert_gap_s: float = 0.0  # window alerts closer than this are one false alert (0: each counts)
    min_tail_rows: int = 20  # validation_args.min_tail_rows (fediot.config documents both)
    max_tail_shape: float = 1.0  # validation_args.max_tail_shape

    def uses_budget(self, rows_per_day: float | None) -> bool:
        return self.rule == "budget" or (self.rule == "auto" and rows_per_day is not None)

    def gap_rows(self, window: int, rows_per_day: float) -> int:
        """Rows between two window alerts that make them two false alerts: alert_gap_s of the device's rows, at
        least the vote window."""
        return max(int(window), int(round(rows_per_day * self.alert_gap_s / SECONDS_PER_DAY)))

    def rate(self, rows_per_day: float, extremal_index: float = 1.0) -> float:
        """Per-window exceedance rate of the budget for a device with this many rows (packets) a day, whose
        exceedances come in clusters of 1 / extremal_index windows on average (one false alert each)."""
        return min(1.0, self.false_alerts_per_day / (rows_per_day * max(extremal_index, 1e-12)))


def threshold_at_rate(hist: Mapping[Any, float], q: float, rule: ThresholdRule) -> tuple[float, bool]:
    """The smallest threshold with at most a share q of the histogram's scores above it: the empirical quantile's bin
    edge where at least `min_tail_rows` scores lie above it, else the peaks-over-threshold extrapolation from the
    `tail_level` quantile; and whether the scores could show it (False: fewer than `min_tail_rows` scores over the
    tail level, the highest score is returned). ValueError on an empty histogram or a non-finite result."""
    counts = dense(hist)
    n = counts.sum()
    if n <= 0:
        raise ValueError("no validation window scores to set a threshold from")
    above = n - np.cumsum(counts)  # scores in bins after each bin
    if q * n >= rule.min_tail_rows:
        i = int(np.argmax(above <= q * n))
        return float(HIST_EDGES[min(i, len(HIST_EDGES) - 1)]), True
    t_bin = int(np.argmax(above <= (1.0 - rule.tail_level) * n))
    t = float(HIST_EDGES[min(t_bin, len(HIST_EDGES) - 1)])
    tail = np.flatnonzero(counts[t_bin + 1:]) + t_bin + 1
    n_t = counts[tail].sum()
    top = float(HIST_EDGES[min(int(np.flatnonzero(counts)[-1]), len(HIST_EDGES) - 1)])
    if n_t < rule.min_tail_rows:
        return top, False
    xi, sigma = gpd_fit(BIN_VALUES[tail] - t, counts[tail])
    xi = min(xi, rule.max_tail_shape)
    r = q * n / n_t
    value = t + (sigma / xi) * (r ** -xi - 1.0) if abs(xi) > 1e-9 else t - sigma * np.log(r)
    if not np.isfinite(value):
        raise ValueError(f"the tail fit of {int(n)} validation window scores gives no finite threshold")
    return float(value), True


def rule_of(validation: Any) -> ThresholdRule:
    """The configured rule (a `fediot.config.ValidationArgs`)."""
    return ThresholdRule(validation.threshold_rule, float(validation.threshold_k), float(validation.false_alerts_per_day),
                         float(validation.tail_level), float(validation.alert_gap_s), int(validation.min_tail_rows),
                         float(validation.max_tail_shape))


def shifted_histogram(hist: Mapping[Any, float] | None, factor: float) -> dict[int, float] | None:
    """The histogram of the same scores times `factor` (> 0), to the bin: what a client claiming errors `factor` times
    larger would send (the stats_inflation attack)."""
    if hist is None:
        return None
    shift = int(round(np.log10(factor) * (len(HIST_EDGES) - 1) / (np.log10(HIST_EDGES[-1]) - np.log10(HIST_EDGES[0]))))
    return {min(max(int(b) + shift, 0), N_HIST_BINS - 1): c for b, c in hist.items()}
