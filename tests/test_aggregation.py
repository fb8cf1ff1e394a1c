"""Aggregation rules (federation/aggregation.py): what a minority of bad updates can do to each, checked against
FedML's own Krum and coordinate-wise median where those work."""
import copy
import types

import pytest
import torch

from federation.aggregation import (
    MEDIAN_NETWORK_MAX, RULES, aggregate, coordinate_median, fedavg, krum, merge_exchange_network,
)
from model.autoencoder import AutoEncoder
from tests.helpers import load_tool

defenses_check = load_tool("check_fedml_defenses")
distance = defenses_check.distance


def base_state():
    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in AutoEncoder(115).state_dict().items()}


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("rule", [r for r in RULES if r != "fedavg"])
def test_robust_rules_land_near_the_honest_centre_wherever_the_bad_updates_are(rule, where):
    base = base_state()
    updates = {f"c{i}": u for i, u in enumerate(defenses_check.updates(base, where))}
    out, rejected = aggregate(updates, base, rule, trim_fraction=0.25, byzantine_clients=2, screen_norm_factor=None)
    assert rejected == {}
    assert distance(out, base) < 3.0, rule                     # honest noise alone is ~1
    plain, _ = aggregate(updates, base, "fedavg", 0.25, 2, None)
    assert distance(plain, base) > 100.0                        # and FedAvg is dragged far away


def test_fedavg_is_sample_weighted_and_rules_keep_shapes_and_dtypes():
    base = base_state()
    a = {k: torch.zeros_like(v) for k, v in base.items()}
    b = {k: torch.ones_like(v) for k, v in base.items()}
    out = fedavg([(1, a), (3, b)])
    assert all(torch.allclose(out[k], torch.full_like(v, 0.75)) for k, v in base.items())
    for rule in RULES:
        out, _ = aggregate({"a": (1, a), "b": (3, b), "c": (2, b)}, base, rule, 0.2, 0, None)
        assert all(out[k].shape == v.shape and out[k].dtype == v.dtype for k, v in base.items())


def test_even_count_median_is_the_mean_of_the_middle_pair():
    s = [(1, {"w": torch.tensor([float(v)])}) for v in (1, 2, 10, 100)]
    assert float(coordinate_median(s)["w"]) == 6.0


def fedml_defender(name, f, m=1):
    from fedml.core.security.fedml_defender import FedMLDefender
    d = FedMLDefender.get_instance()
    d.init(types.SimpleNamespace(enable_defense=True, defense_type=name, byzantine_client_num=f, krum_param_m=m))
    return d


@pytest.mark.parametrize("m", [1, 3])
def test_krum_picks_what_fedmls_krum_picks(m):
    base = base_state()
    ups = defenses_check.updates(base, "middle", seed=3)
    kept = fedml_defender("multikrum" if m > 1 else "krum", 2, m).defend_before_aggregation(copy.deepcopy(ups))
    theirs = fedavg([(1, s) for _, s in kept])
    ours = krum(ups, f=2, m=m)
    assert max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in base) < 1e-6


def test_median_equals_fedmls_wise_median_for_an_odd_count():
    base = base_state()
    ups = defenses_check.updates(base, "last", seed=4)            # 9 updates
    theirs = fedml_defender("wise_median", 2).defend_on_aggregation(copy.deepcopy(ups))
    ours = coordinate_median(ups)
    assert max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in base) < 1e-6


def test_median_network_sorts_every_input_and_matches_torch_for_any_count():
    """The sorting network (up to MEDIAN_NETWORK_MAX updates) and the sort beyond it give torch's median."""
    import itertools

    for n in range(1, 9):  # 0/1 principle: a comparator network sorts everything iff it sorts every 0/1 input
        for bits in itertools.product((0, 1), repeat=n):
            v = list(bits)
            for i, j in merge_exchange_network(n):
                v[i], v[j] = min(v[i], v[j]), max(v[i], v[j])
            assert v == sorted(bits), (n, bits)
    gen = torch.Generator().manual_seed(3)
    for n in (1, 2, 3, 9, 10, 17, MEDIAN_NETWORK_MAX, MEDIAN_NETWORK_MAX + 1, 50):
        ups = [(1, {"w": torch.randn(7, 5, generator=gen).round(decimals=1), "b": torch.randn(5, generator=gen)})
               for _ in range(n)]  # rounded: ties
        ours = coordinate_median(ups)
        for k in ("w", "b"):
            want = torch.quantile(torch.stack([u[k].double() for _, u in ups]), 0.5, dim=0).float()
            assert torch.equal(ours[k], want), (n, k)
