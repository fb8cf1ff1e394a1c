"""The robustness rules: what a lying client's numbers may do, each a pure function (no console, no files).

A client's row counts, feature statistics, update, validation statistics and count report are its word. With
`train_args.robust` (README: "Lying clients") the round state applies these rules, each of which returns what it
kept and, per client, why it cut or left something out:

* `capped_counts`: no client weighs more than `count_ratio_limit` x the median client's count (update weights and
  statistics merges);
* `robust_normalizer`: the merged feature statistics, each feature's scale and offset bounded by a trimmed merge
  without the `byzantine_clients` clients farthest from the median client;
* `screen`: an update farther from the global model than `screen_norm_factor` x the median distance is left out
  before the aggregation rule (`federation.aggregation`);
* `validation_count_mismatches`: validation statistics over another number of rows than the client announced;
* `trimmed_global_threshold`: the global threshold (for devices outside the federation) pools the devices'
  validation statistics weighed equally, without the `byzantine_clients` highest and lowest device thresholds, and
  stays below the highest kept one (each device detects with its own threshold, which no other client's numbers
  enter);
* `effective_liars`: how many liars the rules are sized for, at most a minority of the clients;
* `report_problems`: a count report that cannot be true (announced rows, thresholds sent, its own histograms).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from evaluation.counts import HIST_EDGES
from federation.aggregation import State, flat, stack
from model.detector import ErrorStats
from model.threshold import ThresholdRule
from model.normalization import FeatureStats, Normalizer


def capped_counts(counts: dict[str, int], ratio: float | None) -> tuple[dict[str, int], dict[str, str]]:
    """Counts limited to `ratio` x the median count (None = as sent), and the clients whose count was cut (why)."""
    if ratio is None or not counts:
        return dict(counts), {}
    cap = max(1, int(ratio * float(torch.tensor([float(n) for n in counts.values()], dtype=torch.float64).median())))
    cut = {c: f"its row count {n} is above {ratio:g}x the median count; weighed as {cap}" for c, n in counts.items() if n > cap}
    return {c: min(n, cap) for c, n in counts.items()}, cut


def screen(updates: dict[str, tuple[int, State]], global_state: State, factor: float | None) -> dict[str, str]:
    """Clients whose update lies more than factor x the median distance from the global model: client -> reason."""
    if factor is None or len(updates) < 3:
        return {}
    clients = list(updates)
    gaps = stack([updates[c] for c in clients])
    gaps -= flat(global_state)  # in place: a second fresh 3 MB array costs more in page faults than the arithmetic
    dist = dict(zip(clients, np.sqrt(np.einsum("ij,ij->i", gaps, gaps)).tolist()))  # np.linalg.norm(axis=1): 10x slower
    median = float(torch.tensor(list(dist.values()), dtype=torch.float64).median())
    if median <= 0.0:
        return {}
    return {c: f"update {d / median:.1f}x the median distance from the global model (limit {factor:g}x)"
            for c, d in dist.items() if d > factor * median}


def robust_normalizer(stats: dict[str, FeatureStats], counts_ratio: float | None, byzantine: int,
                      scale_ratio_limit: float, transform: str, method: str
                      ) -> tuple[Normalizer, FeatureStats, str, dict[str, str]]:
    """The normaliser from clients' feature statistics, counts capped and each feature's scale and offset bounded by
    `scale_ratio_limit` x a merge without the `byzantine` clients farthest from the median client. Returns the
    normaliser, the (capped) merged statistics, how it was fitted (metrics.json) and the count cuts."""
    counts, cut = capped_counts({c: s.count for c, s in stats.items()}, counts_ratio)
    parts = [stats[c].with_count(counts[c]) for c in sorted(stats)]
    merged = FeatureStats.merge(parts)
    trimmed = Normalizer.from_stats(FeatureStats.trimmed_merge(parts, byzantine), transform, method)
    normalizer = Normalizer.from_stats(merged, transform, method).bounded_by(trimmed, scale_ratio_limit)
    trim = min(byzantine, (len(parts) - 1) // 2)
    how = "training benign rows of all clients (merged statistics, counts capped" + (
        f"; each feature's scale and offset bounded by {scale_ratio_limit:g}x a merge without the {trim} client(s) "
        f"farthest from the median client)" if trim else ")")
    return normalizer, merged, how, cut


def validation_count_mismatches(stats: dict[str, ErrorStats], announced: dict[str, int | None]) -> dict[str, str]:
    """Clients whose validation statistics count other rows than they announced when they joined: client -> why."""
    return {c: f"its validation statistics count {s.count} rows, it announced {announced[c]}"
            for c, s in stats.items() if announced.get(c) is not None and s.count != announced[c]}


def effective_liars(configured: int, n_clients: int) -> int:
    """How many lying clients the rules can be sized for among n clients: the configured number, at most a minority
    ((n - 1) // 2); with fewer clients a rule that assumed more would let the liars be the majority it trusts."""
    return max(0, min(configured, (n_clients - 1) // 2))


def robust_rule_minimum(liars: int) -> int:
    """Clients per round a robust aggregation rule needs to be sized for `liars` (2f + 3, as Krum): with fewer, the
    coordinate-wise median of a few heterogeneous devices follows the similar ones and never learns the odd one
    (issue 22: 3 boards at N-BaIoT's volume, one device's FPR 1.000; 5 synthetic clients, 4 rounds, no attacker: one
    device's TPR 0.80 vs 1.00 with FedAvg: its features, bounded by a merge without it, were squashed and its
    training loss stayed ~150x), so with fewer clients per round `auto` falls back to screened FedAvg and the feature
    statistics are merged without trimming (counts still capped)."""
    return 2 * liars + 3


def trimmed_global_threshold(stats: dict[str, ErrorStats], k: "ThresholdRule | float", leave_out: int
                             ) -> tuple[float, list[str], dict[str, str]]:
    """The global threshold (for devices outside the federation) that up to `leave_out` lying clients cannot steer:
    the `leave_out` devices with the highest and the `leave_out` with the lowest own thresholds (mean + k x std) are
    left out (at most (n - 1) // 2 each side; own thresholds by the configured rule `k`, a `ThresholdRule` or mean +
    k x std), the others' validation statistics pooled with each device weighed
    equally (as the median device's number of rows: announcing many rows gains nothing), and the result is at most
    the highest own threshold among the devices kept. A liar is then either left out or kept with an own threshold
    below that of an honest device left out at the top, so whatever it reports the global threshold stays below the
    highest honest device's own threshold. Returns (threshold, devices pooled, device -> why it was left out)."""
    n = len(stats)
    trim = min(leave_out, (n - 1) // 2)
    own = {d: s.threshold_by(k) for d, s in stats.items()}
    order = sorted(own, key=lambda d: (own[d], d))
    dropped = {d: f"its threshold {own[d]:.4g} is among the {trim} lowest" for d in order[:trim]}
    dropped |= {d: f"its threshold {own[d]:.4g} is among the {trim} highest" for d in order[n - trim:]}
    kept = [d for d in order if d not in dropped]
    weight = max(1, int(np.median([stats[d].count for d in kept])))
    merged = ErrorStats.merge([stats[d].scaled(1.0, weight) for d in kept])
    mean_rate = None if merged.rows_per_day is None else merged.rows_per_day / len(kept)
    pooled = merged.threshold_by(k, mean_rate)
    return min(pooled, max(own[d] for d in kept)), sorted(kept), dropped


def clamped_device_thresholds(stats: dict[str, ErrorStats], rule: "ThresholdRule | float", device_of: Any,
                              pooled: dict[str, float], leave_out: int) -> tuple[dict[str, float], dict[str, str]]:
    """Each device's threshold (`pooled`: client -> its device's threshold of the merged statistics) kept within the
    range of its clients' own thresholds without the `leave_out` highest and lowest (at most (n - 1) // 2 each side):
    a device split over n >= 3 clients (households) whose liars are a minority then detects with a threshold inside its
    honest clients' own. Without it the budget rule is steerable: its quantile at one false alarm a day sits among the
    top few window scores, so one of three clients reporting errors 3 x larger moved it 3.0 x (mean + 5 std: 2.1 x;
    tests/test_threshold_rule.py). Returns (client -> threshold, device -> what was clamped)."""
    by_device: dict[str, list[str]] = {}
    for c in stats:
        by_device.setdefault(device_of(c), []).append(c)
    out, clamped = dict(pooled), {}
    for device, clients in by_device.items():
        trim = min(leave_out, (len(clients) - 1) // 2)
        if trim == 0:
            continue
        own = sorted(stats[c].threshold_by(rule) for c in clients)[trim:len(clients) - trim]
        value = pooled[clients[0]]
        kept = min(max(value, own[0]), own[-1])
        if kept != value:
            clamped[device] = f"{value:.4g} -> {kept:.4g} (its clients' own thresholds without the {trim} highest and lowest)"
        for c in clients:
            out[c] = kept
    return out, clamped


def window_decisions(n_rows: int, window: int) -> int:
    """How many majority-vote decisions `majority_vote` makes over n_rows rows."""
    return 0 if n_rows == 0 else max(n_rows - window + 1, 1)


def flag_bounds(h: dict[Any, int], threshold: float) -> tuple[int, int]:
    """Fewest and most rows of a score histogram that can lie above `threshold` (the bin holding it is unsure)."""
    tbin = int(np.searchsorted(HIST_EDGES, threshold, side="right"))
    sure = sum(c for b, c in h.items() if int(b) > tbin)
    return sure, sure + int(h.get(tbin, h.get(str(tbin), 0)))


def report_problems(r: dict[str, Any], announced: dict[str, Any], validation_count: int | None,
                    thresholds: dict[str, float], window: int) -> list[str]:
    """Why a client's count report cannot be true: counts that differ from the held-out rows it announced
    when it joined or from its own validation statistics, thresholds other than those it was sent, flag
    counts its own score histograms rule out. Empty for an honest report. (A client that fabricates its
    scores consistently still passes: it can lie about its own device only, which its row then shows.)"""
    problems: list[str] = []

    def expect(what: str, got: int, want: int) -> None:
        if got != want:
            problems.append(f"{what} is {got}, expected {want}")

    n_val, n_test, n_attacks = announced["validation"], announced["test"], announced["attacks"]
    expect("validation rows", r["validation"]["n"], n_val)
    if validation_count is not None:
        expect("validation rows (against its validation statistics)", r["validation"]["n"], validation_count)
    if set(r["hist"]["attacks"]) != set(n_attacks):
        problems.append(f"attack files {sorted(r['hist']['attacks'])}, announced {sorted(n_attacks)}")
        return problems
    expect("benign test rows in the histogram", sum(r["hist"]["benign"].values()), n_test)
    for name, n in n_attacks.items():
        expect(f"{name} rows in the histogram", sum(r["hist"]["attacks"][name].values()), n)
    if set(r["modes"]) != set(thresholds):
        problems.append(f"threshold modes {sorted(r['modes'])}, expected {sorted(thresholds)}")
        return problems
    for mode, m in r["modes"].items():
        # float(): a JSON integer of any size passes as a number, and numpy cannot compare one beyond int64
        if not np.isclose(float(m["threshold"]), thresholds[mode], rtol=1e-12, atol=0.0):
            problems.append(f"{mode} threshold {m['threshold']:.6g}, it was sent {thresholds[mode]:.6g}")
        if set(m["attacks"]) != set(n_attacks):
            problems.append(f"{mode}: attack files {sorted(m['attacks'])}, announced {sorted(n_attacks)}")
            continue
        expect(f"{mode}: benign fp + tn", m["benign"]["fp"] + m["benign"]["tn"], n_test)
        lo, hi = flag_bounds(r["hist"]["benign"], thresholds[mode])
        if not lo <= m["benign"]["fp"] <= hi:
            problems.append(f"{mode}: {m['benign']['fp']} benign rows flagged; its histogram allows {lo}..{hi}")
        for name, n in n_attacks.items():
            a = m["attacks"][name]
            expect(f"{mode}: {name} tp + fn", a["tp"] + a["fn"], n)
            lo, hi = flag_bounds(r["hist"]["attacks"][name], thresholds[mode])
            if not lo <= a["tp"] <= hi:
                problems.append(f"{mode}: {a['tp']} {name} rows flagged; its histogram allows {lo}..{hi}")
        w = m["window"]
        expect(f"{mode}: window fp + tn", w["fp"] + w["tn"], window_decisions(n_test, window))
        expect(f"{mode}: window tp + fn", w["tp"] + w["fn"],
               sum(window_decisions(n, window) for n in n_attacks.values()))
    return problems
