"""Row-level side of evaluation: score a device's held-out rows, set thresholds, and evaluate.

- one normalisation for every row (the detector's, fitted on training benign rows only);
- thresholds from held-out benign *validation* rows: a global one from merged error statistics
  and one per device (`thresholds_from_stats`, the one threshold rule of every run path; a server
  defending against lying clients pools the global one robustly, `federation.defenses.trimmed_global_threshold`);
- FPR on benign *test* rows never trained on, TPR per attack file; both threshold modes, plus
  N-BaIoT's majority-vote window variant.

`evaluate` goes through the client-report protocol (`evaluation.counts`): each device's scores are
turned into the counts a client would send, and combined as the server combines them. So the
numbers of a baseline, a re-evaluation, a simulation and a deployment come from one path.
"""
from __future__ import annotations

from typing import Any, Callable


from evaluation.counts import client_report, combine_reports
from evaluation.scores import DeviceScores
from model.detector import ErrorStats, thresholds_of
from model.threshold import ThresholdRule


def thresholds_from_stats(stats: dict[str, ErrorStats], rule: ThresholdRule | float,
                          device_of: Callable[[str], str] | None = None) -> tuple[float, dict[str, float]]:
    """Global threshold (of the merged validation statistics) and each client's own (its device's), by the configured
    rule (a bare number: mean + k*std)."""
    return thresholds_of(stats, rule, device_of)


def thresholds(scores: list[DeviceScores], rule: ThresholdRule | float, window: int | None = None
               ) -> tuple[float, dict[str, float]]:
    """`thresholds_from_stats` of scored devices (`window`: the vote window, which the budget rule needs)."""
    r = rule if isinstance(rule, ThresholdRule) else None
    return thresholds_from_stats({s.device: s.validation_stats(window, r) for s in scores}, rule)


def evaluate(scores: list[DeviceScores], global_threshold: float | None, device_thresholds: dict[str, float],
             window: int, primary: str = "global", device_of: Callable[[str], str] | None = None) -> dict[str, Any]:
    """metrics.json's 'global' and 'devices' parts, through the client-report protocol.

    global_threshold=None (devices judged by different models, e.g. local-only baselines) leaves
    out the global mode, which then has no meaning. `device_of` (client -> device) as in `combine_reports`.
    """
    reports = [client_report(s, global_threshold, device_thresholds[s.device], window) for s in scores]
    return combine_reports(reports, global_threshold, device_thresholds, window, primary, device_of)
