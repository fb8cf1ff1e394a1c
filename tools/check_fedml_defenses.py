"""Do FedML 0.9.6's defenses (fedml.core.security) work on FedIoT's model updates? A check, not a feature.

    .venv/bin/python tools/check_fedml_defenses.py

Nine updates of FedIoT's autoencoder: 7 honest (the same weights + noise of std 0.01) and 2 malicious
(noise of std 10, a boosted/random update), the malicious ones placed first, in the middle and last. Each
defense runs through FedML's own `FedMLDefender` (enable_defense, defense_type, byzantine_client_num=2),
and the result is compared with the honest centre: a working defense lands near it (distance ~1) whatever
the order; plain FedAvg lands ~300 away. Also reported: whether a defense changed the caller's updates
in place. Findings are in doc/fedml.md ("FedML's defenses, checked").
"""
from __future__ import annotations

import copy
import logging
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation.aggregation import fedavg  # noqa: E402
from model.autoencoder import AutoEncoder  # noqa: E402

DEFENSES = ("krum", "multikrum", "wise_median", "trimmed_mean", "geo_median", "rfa", "norm_diff_clipping", "3sigma",
            "3sigma_geo", "foolsgold", "cclip", "slsgd", "robust_learning_rate")
ORDERS = ("first", "middle", "last")
N_HONEST, N_MALICIOUS, SAMPLES = 7, 2, 100.0


def updates(base: dict[str, torch.Tensor], order: str, seed: int = 1) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """N_HONEST updates near `base` and N_MALICIOUS far from it, the malicious ones first, in the middle or last
    (also the fixture of tests/test_aggregation.py)."""
    gen = torch.Generator().manual_seed(seed)

    def noisy(std: float) -> dict[str, torch.Tensor]:
        return {k: v + std * torch.randn(v.shape, generator=gen) for k, v in base.items()}

    honest = [(SAMPLES, noisy(0.01)) for _ in range(N_HONEST)]
    bad = [(SAMPLES, noisy(10.0)) for _ in range(N_MALICIOUS)]
    return {"first": bad + honest, "middle": honest[:3] + bad + honest[3:], "last": honest + bad}[order]


def distance(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> float:
    return float(sum(((state[k].float() - base[k]) ** 2).sum() for k in base) ** 0.5)


def defender_args(name: str) -> types.SimpleNamespace:
    """The settings FedML's defenses read (byzantine count, Krum's m, trimmed fraction, buckets, bounds)."""
    return types.SimpleNamespace(
        enable_defense=True, defense_type=name, byzantine_client_num=N_MALICIOUS, client_num_per_round=9,
        krum_param_m=3 if name == "multikrum" else 1, beta=0.25, batch_num=9, norm_bound=5.0, tau=10,
        bucket_size=3, alpha=0.5, option_type=1, robust_threshold=4, comm_round=10, trim_param_b=2,
        use_memory=False, aggregate_method="geo_median", mode="median", pretraining_round_num=0,
        lazy_worker_num=0, training_type="simulation", backend="MPI", random_seed=0, process_id=0, rank=0, worker_num=9, client_num_in_total=9, using_gpu=False, gpu_id=0, gpu_mapping_file=None, gpu_mapping_key=None)


def run(name: str, base: dict[str, torch.Tensor], order: str) -> tuple[str, float, bool]:
    """(stage, distance from the honest centre, inputs changed in place) of one defense on one order."""
    from fedml.core.security.fedml_defender import FedMLDefender

    defender = FedMLDefender.get_instance()
    defender.init(defender_args(name))
    given, pristine = updates(base, order), updates(base, order)
    global_model = copy.deepcopy(base)
    if defender.is_defense_before_aggregation():
        kept = defender.defend_before_aggregation(given, extra_auxiliary_info=global_model)
        out, stage = fedavg(kept), f"before ({len(kept)} kept)"
    elif defender.is_defense_on_aggregation():
        out = defender.defend_on_aggregation(given, base_aggregation_func=lambda _args, lst: fedavg(lst),
                                             extra_auxiliary_info=global_model)
        stage = "on"
    else:
        out, stage = defender.defend_after_aggregation(fedavg(given)), "after"
    mutated = any(not torch.equal(p[k], q[k]) for (_, p), (_, q) in zip(given, pristine) for k in base)
    return stage, distance(out, base), mutated


def main() -> None:
    logging.disable(logging.CRITICAL)
    torch.manual_seed(0)
    base = {k: v.detach().clone() for k, v in AutoEncoder(115).state_dict().items()}
    print(f"{N_HONEST} honest + {N_MALICIOUS} malicious updates; distance of the result from the honest centre "
          f"(FedAvg: {distance(fedavg(updates(base, 'last')), base):.0f})")
    print("| defense | stage | malicious first | in the middle | last | changes inputs in place |")
    print("|---|---|---|---|---|---|")
    for name in DEFENSES:
        cells, stage, mutated = [], "", False
        for order in ORDERS:
            try:
                stage, dist, m = run(name, base, order)
                cells.append(f"{dist:,.2f}")
                mutated |= m
            except Exception as exc:  # noqa: BLE001 - a defense that crashes is a finding, reported as such
                cells.append(f"fails: {type(exc).__name__}: {str(exc)[:60]}")
        print(f"| {name} | {stage} | {' | '.join(cells)} | {'yes' if mutated else 'no'} |")


if __name__ == "__main__":
    main()
