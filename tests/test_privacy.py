"""Issue 25: client-level differential privacy of the model updates (federation/privacy.py): clipping and noise are
applied as stated, the accountant's epsilon matches a hand-computed case, and a run records the privacy spent."""
from __future__ import annotations

import math

import numpy as np
import torch

from federation.privacy import clip_updates, epsilon, noisy_mean
from model.autoencoder import AutoEncoder, state_of
from tests.rounds import metrics_of, rounds_of, run, sim_values


def zeros_like(state):
    return {k: torch.zeros_like(v) for k, v in state.items()}


def scaled(state, direction, norm):
    """state + a delta of the given L2 norm along `direction`."""
    n = math.sqrt(sum(float((d.double() ** 2).sum()) for d in direction.values()))
    return {k: state[k] + direction[k] * (norm / n) for k in state}


def test_updates_are_clipped_to_the_norm_and_small_ones_kept():
    torch.manual_seed(0)
    g = state_of(AutoEncoder(115))
    direction = state_of(AutoEncoder(115))
    updates = {"small": scaled(g, direction, 0.4), "big": scaled(g, direction, 7.0), "huge": scaled(g, direction, 1e6)}
    clipped, norms = clip_updates(updates, g, clip_norm=1.0)
    assert abs(norms["small"] - 0.4) < 1e-4 and abs(norms["big"] - 7.0) < 1e-3
    after = {c: math.sqrt(sum(float((d ** 2).sum()) for d in clipped[c].values())) for c in clipped}
    assert abs(after["small"] - 0.4) < 1e-4 and abs(after["big"] - 1.0) < 1e-6 and abs(after["huge"] - 1.0) < 1e-6


def test_noise_has_the_stated_standard_deviation():
    """Mean of m = 4 equal clipped deltas + N(0, (z C / m)^2) per weight: the added noise's std over the ~30,000
    weights is z C / m within 2 %, its mean ~0; the mean of the deltas itself is kept."""
    g = state_of(AutoEncoder(115))
    delta = {k: torch.full_like(v, 0.001, dtype=torch.float64) for k, v in g.items()}
    deltas = {f"c{i}": delta for i in range(4)}
    z, clip = 1.3, 0.5
    out = noisy_mean(deltas, g, clip, z, torch.Generator().manual_seed(0))
    noise = np.concatenate([(out[k].double() - g[k].double() - 0.001).numpy().ravel() for k in g])
    assert noise.size > 20_000
    want = z * clip / 4
    assert abs(noise.std() / want - 1) < 0.02 and abs(noise.mean()) < 0.02 * want


def test_epsilon_matches_the_hand_computed_gaussian_mechanism():
    """Every client in every round (sample rate 1): the Gaussian mechanism's RDP is alpha / (2 z^2) per round
    (Mironov 2017), T rounds add up, and epsilon(delta) = min over alpha of T alpha / (2 z^2) - (log delta + log alpha)
    / (alpha - 1) + log((alpha - 1) / alpha) (Balle et al. 2020, the conversion Opacus uses), over Opacus' orders."""
    from opacus.accountants import RDPAccountant

    z, rounds, delta = 1.1, 20, 1e-5
    alphas = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=float)
    by_hand = np.min(rounds * alphas / (2 * z * z) - (np.log(delta) + np.log(alphas)) / (alphas - 1)
                     + np.log((alphas - 1) / alphas))
    assert abs(epsilon(z, 1.0, rounds, delta) - by_hand) < 1e-9
    # subsampling amplifies privacy; more rounds and less noise spend more
    assert epsilon(z, 0.1, rounds, delta) < epsilon(z, 1.0, rounds, delta)
    assert epsilon(z, 1.0, rounds + 10, delta) > epsilon(z, 1.0, rounds, delta) > epsilon(2 * z, 1.0, rounds, delta)
    assert epsilon(0.0, 1.0, rounds, delta) == math.inf and epsilon(z, 1.0, 0, delta) == 0.0


def test_a_run_with_dp_records_the_privacy_spent_each_round(tmp_path):
    said: list[str] = []
    values = sim_values(tmp_path, train_args__comm_round=3, privacy_args__dp=True, privacy_args__clip_norm=0.5,
                        privacy_args__noise_multiplier=0.8)
    _, _, run_dir = run(values, said=said)
    rounds = [r for r in rounds_of(run_dir) if "client_losses" in r]
    eps = [r["privacy"]["epsilon"] for r in rounds]
    assert len(eps) == 3 and 0 < eps[0] < eps[1] < eps[2] < math.inf
    assert eps[2] == epsilon(0.8, 1.0, 3, 1e-5)
    assert all(r["aggregation"] == "dp_mean" and r["privacy"]["noise_std"] == 0.8 * 0.5 / 3 for r in rounds)
    m = metrics_of(run_dir)["privacy"]
    assert m["epsilon"] == eps[2] and m["rounds"] == 3 and m["delta"] == 1e-5
    assert any("privacy_args.dp" in line for line in said)
