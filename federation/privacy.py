"""Client-level differential privacy for the model updates (privacy_args; DP-FedAvg, McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models"): the server clips each client's update w_i - w_global to L2 norm
clip_norm, averages the clipped updates with equal weights, and adds Gaussian noise of standard deviation
noise_multiplier x clip_norm / m to every weight (m: the updates in the round), so that adding or removing one client
changes the average by at most clip_norm / m whatever its data. The privacy spent after T rounds, epsilon at delta, is
accounted by Opacus' RDP accountant for the subsampled Gaussian mechanism (sample rate: clients per round / clients;
FedML samples without replacement, the accountant assumes Poisson sampling: the usual approximation).

What it does to the robust rules: the guarantee needs each client's influence on the aggregate bounded by clip_norm /
m. A coordinate-wise median (or trimmed mean, Krum) of clipped updates has no such bound (one client moves the median
of every coordinate up to the gap between its neighbours), and screening leaves clients out depending on the others'
updates. With dp on the server therefore uses the clipped, equally weighted mean and no screening, and says so at
start: clipping is itself the bound on how far a lying client can pull (the norm of its update no longer matters, only
its direction). The feature statistics and validation-error statistics a client sends are not privatised: they are
sent once per join / evaluation, and their noise would have to be calibrated to a bound on each client's rows'
features (which N-BaIoT's heavy-tailed features do not have); epsilon covers the model updates only.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from federation.aggregation import State


def clip_updates(updates: dict[str, State], global_state: State, clip_norm: float
                 ) -> tuple[dict[str, State], dict[str, float]]:
    """Each client's update w_i - w_global scaled to L2 norm at most clip_norm; (the clipped deltas, each norm before)."""
    clipped, norms = {}, {}
    for c, state in updates.items():
        delta = {k: state[k].to(torch.float64) - global_state[k].to(torch.float64) for k in global_state}
        norm = math.sqrt(sum(float((d * d).sum()) for d in delta.values()))
        factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
        clipped[c] = {k: d * factor for k, d in delta.items()}
        norms[c] = norm
    return clipped, norms


def noisy_mean(deltas: dict[str, State], global_state: State, clip_norm: float, noise_multiplier: float,
               generator: torch.Generator) -> State:
    """w_global + the equally weighted mean of the clipped deltas + N(0, (noise_multiplier x clip_norm / m)^2)."""
    m = len(deltas)
    if m == 0:
        raise ValueError("no update to average")
    std = noise_multiplier * clip_norm / m
    out = {}
    for k, w in global_state.items():
        mean = sum(d[k] for d in deltas.values()) / m
        noise = torch.normal(0.0, std, size=mean.shape, generator=generator, dtype=torch.float64)
        out[k] = (w.to(torch.float64) + mean + noise).to(w.dtype)
    return out


def epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The privacy spent after `rounds` rounds (Opacus' RDP accountant); inf without noise."""
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    import warnings

    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, rounds)]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound, still a valid one
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta))


def record(norms: dict[str, float], clip_norm: float, noise_multiplier: float, m: int, eps: float, delta: float
           ) -> dict[str, Any]:
    """The round's privacy line for rounds.jsonl."""
    ordered = sorted(norms.values())
    return {"clip_norm": clip_norm, "clipped": sum(n > clip_norm for n in ordered),
            "update_norm_median": ordered[len(ordered) // 2] if ordered else None,
            "noise_std": noise_multiplier * clip_norm / m if m else None, "epsilon": eps, "delta": delta}
