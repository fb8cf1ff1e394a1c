"""How the server combines the clients' model updates: FedAvg or a rule that a minority of lying clients
cannot steer, after screening updates whose size is far from the others'. Framework-free (torch, numpy).

Rules (`train_args.aggregation`):
* fedavg        sample-weighted mean (one client can move it anywhere);
* median        coordinate-wise median (mean of the two middle values for an even count);
* trimmed_mean  coordinate-wise mean after dropping the `trim_fraction` largest and smallest values;
* krum          the update with the smallest sum of squared distances to its n - f - 2 nearest others;
* multikrum     the mean of the m = n - f best-scoring updates by the same score;
* geo_median    geometric median of the whole weight vectors (Weiszfeld), sample-weighted.
f = `train_args.byzantine_clients`. FedML's `fedml.core.security` has these, but inside FedML's
aggregator, which our nodes do not use; its trimmed_mean ranks clients by sample count and its
geo_median/rfa follow the first update (tools/check_fedml_defenses.py, doc/fedml.md), so they are
written here; tests check krum/multikrum and median against FedML's.
Screening (`train_args.screen_norm_factor`): an update whose distance from the current global model
is more than factor x the median distance is left out before any rule, and reported.
Counts (`capped_counts`): a row count is the client's word; with `train_args.robust` no client weighs more
than `count_ratio_limit` x the median client's count, in the update weights and in the statistics merges.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

State = dict[str, torch.Tensor]
RULES = ("fedavg", "median", "trimmed_mean", "krum", "multikrum", "geo_median")
GEO_MEDIAN_ITERATIONS = 100
GEO_MEDIAN_TOLERANCE = 1e-7


def fedavg(updates: list[tuple[int, State]]) -> State:
    """Sample-weighted average of state dicts: sum_i n_i * w_i / sum_i n_i."""
    total = sum(n for n, _ in updates)
    if total <= 0:
        raise ValueError("FedAvg needs at least one update with a positive sample count")
    keys = updates[0][1].keys()
    return {k: sum(p[k].double() * (n / total) for n, p in updates).to(updates[0][1][k].dtype) for k in keys}


def _flat(state: State) -> torch.Tensor:
    return torch.cat([v.reshape(-1).double() for v in state.values()])


def _unflat(vector: torch.Tensor, like: State) -> State:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i:i + v.numel()].reshape(v.shape).to(v.dtype)
        i += v.numel()
    return out


def _stack(updates: list[tuple[int, State]]) -> torch.Tensor:
    """Clients x parameters, float64."""
    return torch.stack([_flat(s) for _, s in updates])


def coordinate_median(updates: list[tuple[int, State]]) -> State:
    """Per coordinate, the median of the clients' values (mean of the two middle ones for an even count).
    numpy's partial sort along the client axis: the same values as torch.quantile(x, 0.5, dim=0) in about half
    the time (it is on every round's critical path: measured 9 vs 5.5 ms for 10 clients x 36,876 weights)."""
    x = _stack(updates).numpy()
    n = len(x)
    middle = np.partition(x, [(n - 1) // 2, n // 2], axis=0)
    return _unflat(torch.from_numpy((middle[(n - 1) // 2] + middle[n // 2]) / 2), updates[0][1])


def trimmed_mean(updates: list[tuple[int, State]], trim_fraction: float) -> State:
    """Per coordinate, the mean after dropping the floor(trim_fraction * n) largest and smallest values."""
    x, _ = torch.sort(_stack(updates), dim=0)
    cut = int(trim_fraction * len(x))
    return _unflat(x[cut:len(x) - cut].mean(dim=0), updates[0][1])


def krum_scores(x: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score per client: sum of squared distances to its n - f - 2 nearest other clients."""
    d2 = torch.cdist(x, x) ** 2
    n = len(x)
    nearest = max(n - f - 2, 1)
    d2.fill_diagonal_(float("inf"))
    return torch.sort(d2, dim=1).values[:, :nearest].sum(dim=1)


def krum(updates: list[tuple[int, State]], f: int, m: int = 1) -> State:
    """The mean of the m updates with the lowest Krum score (m = 1: Krum; m > 1: multi-Krum)."""
    x = _stack(updates)
    best = torch.argsort(krum_scores(x, f))[:max(1, min(m, len(x)))]
    return _unflat(x[best].mean(dim=0), updates[0][1])


def geometric_median(updates: list[tuple[int, State]]) -> State:
    """Sample-weighted geometric median of the whole weight vectors (Weiszfeld's iterations)."""
    x = _stack(updates)
    w = torch.tensor([float(n) for n, _ in updates], dtype=torch.float64)
    z = (w[:, None] * x).sum(dim=0) / w.sum()
    for _ in range(GEO_MEDIAN_ITERATIONS):
        dist = torch.linalg.vector_norm(x - z, dim=1).clamp_min(1e-12)
        coef = w / dist
        z_new = (coef[:, None] * x).sum(dim=0) / coef.sum()
        if torch.linalg.vector_norm(z_new - z) <= GEO_MEDIAN_TOLERANCE * (1.0 + torch.linalg.vector_norm(z)):
            z = z_new
            break
        z = z_new
    return _unflat(z, updates[0][1])


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
    g = _flat(global_state)
    dist = {c: float(torch.linalg.vector_norm(_flat(s) - g)) for c, (_, s) in updates.items()}
    median = float(torch.tensor(list(dist.values()), dtype=torch.float64).median())
    if median <= 0.0:
        return {}
    return {c: f"update {d / median:.1f}x the median distance from the global model (limit {factor:g}x)"
            for c, d in dist.items() if d > factor * median}


def aggregate(updates: dict[str, tuple[int, State]], global_state: State, rule: str, trim_fraction: float,
              byzantine_clients: int, screen_norm_factor: float | None) -> tuple[State, dict[str, str]]:
    """The new global weights from the clients' (samples, weights), and the clients left out (with why)."""
    rejected = screen(updates, global_state, screen_norm_factor)
    kept = [updates[c] for c in sorted(updates) if c not in rejected]
    if not kept:
        raise ValueError("every update was screened out")
    rules: dict[str, Callable[[], State]] = {
        "fedavg": lambda: fedavg(kept),
        "median": lambda: coordinate_median(kept),
        "trimmed_mean": lambda: trimmed_mean(kept, trim_fraction),
        "krum": lambda: krum(kept, byzantine_clients),
        "multikrum": lambda: krum(kept, byzantine_clients, m=len(kept) - byzantine_clients),
        "geo_median": lambda: geometric_median(kept),
    }
    if rule not in rules:
        raise ValueError(f"unknown aggregation rule {rule!r}; expected one of {RULES}")
    return rules[rule](), rejected
