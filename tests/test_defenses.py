"""The robustness rules (federation/defenses.py), each on its own: what a lying client's numbers may do."""
import numpy as np
import pytest
import torch

from attacks.clients import AttackingClient, fabricate_counts
from evaluation.counts import HIST_EDGES, client_report, held_out_counts, histogram
from evaluation.scoring import thresholds_from_stats
from federation.aggregation import aggregate
from federation.defenses import (
    capped_counts, effective_liars, flag_bounds, report_problems, robust_normalizer, screen, trimmed_global_threshold,
    validation_count_mismatches,
)
from model.detector import ErrorStats
from model.normalization import FeatureStats, Normalizer
from tests.helpers import load_tool
from tests.test_client_reports import make_scores

defenses_check = load_tool("check_fedml_defenses")
distance = defenses_check.distance


def base_state():
    torch.manual_seed(0)
    from model.autoencoder import AutoEncoder, state_of
    return state_of(AutoEncoder(115))


def test_screening_leaves_out_far_updates_and_names_them():
    base = base_state()
    updates = {f"c{i}": u for i, u in enumerate(defenses_check.updates(base, "first"))}
    rejected = screen(updates, base, factor=10.0)
    assert set(rejected) == {"c0", "c1"} and "median distance" in rejected["c0"]
    out, rejected2 = aggregate(updates, base, "fedavg", 0.2, 1, 10.0)  # the aggregation screens first
    assert rejected2 == rejected and distance(out, base) < 3.0
    assert screen(updates, base, None) == {}


def test_counts_are_capped_against_the_median_and_the_cut_is_named():
    counts = {"a": 100, "b": 120, "c": 90, "liar": 10**9}
    capped, cut = capped_counts(counts, 10.0)
    assert capped == {"a": 100, "b": 120, "c": 90, "liar": 1000} and set(cut) == {"liar"}
    assert "weighed as 1000" in cut["liar"]
    assert capped_counts(counts, None) == (counts, {})


def _announced(s):
    return held_out_counts(s)


def test_an_honest_report_has_no_problems_and_fabricated_counts_do():
    """report_problems: what the server checks a count report against (announced rows, its own validation
    statistics, the thresholds it sent, the client's own histograms); eval_lies' fabrication fails it."""

    s = make_scores(6, "A")
    sent = {"global": 0.3, "device": 0.25}
    honest = client_report(s, sent["global"], sent["device"], 5)
    assert report_problems(honest, _announced(s), len(s.validation), sent, 5) == []
    lie = client_report(s, sent["global"], sent["device"], 5)
    fabricate_counts(lie, 10.0)
    problems = report_problems(lie, _announced(s), len(s.validation), sent, 5)
    assert any("benign fp + tn is 1500, expected 150" in p for p in problems), problems
    # a subtler lie: same totals, fewer attack rows flagged than its own histogram puts above the threshold
    subtle = client_report(s, sent["global"], sent["device"], 5)
    a = subtle["modes"]["global"]["attacks"]["mirai_udp"]
    a["tp"], a["fn"] = a["tp"] - 5, a["fn"] + 5
    assert any("mirai_udp rows flagged; its histogram allows" in p for p in report_problems(
        subtle, _announced(s), len(s.validation), sent, 5))
    # counts at another threshold than the one it was sent; validation rows other than its statistics said
    assert any("it was sent" in p for p in report_problems(honest, _announced(s), len(s.validation),
                                                           {"global": 0.5, "device": 0.25}, 5))
    assert any("against its validation statistics" in p for p in report_problems(
        honest, _announced(s), len(s.validation) + 1, sent, 5))


def testflag_bounds_bracket_the_true_count_at_any_threshold():
    rng = np.random.default_rng(7)
    scores = rng.lognormal(-1, 2, 5000)
    h = histogram(scores)
    for thr in (*rng.lognormal(-1, 2, 50), HIST_EDGES[2000], 0.0):
        lo, hi = flag_bounds(h, float(thr))
        assert lo <= int((scores > thr).sum()) <= hi
        lo_s, hi_s = flag_bounds({str(k): v for k, v in h.items()}, float(thr))  # keys as they come off the wire
        assert (lo_s, hi_s) == (lo, hi)


def test_the_global_threshold_stays_below_the_highest_honest_device_whatever_liars_report():
    rng = np.random.default_rng(9)
    honest = {f"d{i}": ErrorStats.of(rng.lognormal(np.log(0.05 * (i + 1)), 0.4, 300)) for i in range(7)}
    own = {d: s.threshold(3.0) for d, s in honest.items()}
    clean, kept, dropped = trimmed_global_threshold(honest, 3.0, 2)
    assert set(dropped) == {"d0", "d1", "d5", "d6"} and kept == ["d2", "d3", "d4"]
    assert own["d2"] <= clean <= own["d4"]
    # two liars at the top, far out or just below the highest honest device, with many rows and no spread
    for t in (1e6 * own["d6"], 0.999 * own["d6"], own["d4"]):
        liar = ErrorStats(300 * 10, t * 300 * 10, t * t * 300 * 10)
        got, kept, _ = trimmed_global_threshold(dict(honest, liar1=liar, liar2=liar), 3.0, 2)
        assert got <= own["d6"], t  # never above every honest device's own threshold
        plain, _ = thresholds_from_stats(dict(honest, liar1=liar, liar2=liar), 3.0)
        if t > own["d6"]:
            assert plain > 1000 * clean and got < 2 * clean  # pooled as sent: moved; trimmed: where it was
    # liars at the bottom cannot pull it below the lowest honest devices' either
    tiny = ErrorStats(3000, 1e-9 * 3000, 1e-18 * 3000)
    low, kept, _ = trimmed_global_threshold(dict(honest, liar1=tiny, liar2=tiny), 3.0, 2)
    assert own["d0"] <= low and "liar1" not in kept
    # announcing more rows gains nothing: each device counts as the median device's rows
    heavy = dict(honest, d3=honest["d3"].scaled(1.0, 300 * 1000))
    assert trimmed_global_threshold(heavy, 3.0, 2)[0] == pytest.approx(clean)


def test_the_rules_assume_a_minority_of_liars():
    assert [effective_liars(2, n) for n in (1, 2, 3, 4, 5, 9)] == [0, 0, 1, 1, 2, 2]
    assert effective_liars(0, 9) == 0


def test_robust_normalizer_bounds_a_clients_made_up_statistics_and_leaves_honest_ones_alone():
    rng = np.random.default_rng(3)
    honest = {f"c{i}": FeatureStats.of(rng.lognormal(1 + 0.1 * i, 0.5, (400, 115)), "log1p") for i in range(5)}
    plain = Normalizer.from_stats(FeatureStats.merge(list(honest.values())), "log1p", "zscore")
    robust, merged, how, cut = robust_normalizer(honest, 10.0, 1, 3.0, "log1p", "zscore")
    assert cut == {} and merged.count == 2000 and "bounded by 3x" in how
    assert np.allclose(robust.scale, plain.scale) and np.allclose(robust.offset, plain.offset)
    s = honest["c0"]
    liar = dict(honest, liar=FeatureStats(10**6, s.total * 1e4, s.total_sq * 1e8, s.minimum * 100, s.maximum * 100))
    inflated = Normalizer.from_stats(FeatureStats.merge(list(liar.values())), "log1p", "zscore")
    bounded, _, _, cut = robust_normalizer(liar, 10.0, 1, 3.0, "log1p", "zscore")
    assert set(cut) == {"liar"}  # its row count weighs as 10x the median client's
    assert np.all(bounded.scale <= 3.0 * plain.scale + 1e-12) and np.any(inflated.scale > 3.0 * plain.scale)


def test_validation_statistics_over_other_rows_than_announced_are_named():
    stats = {"a": ErrorStats(100, 1.0, 0.1), "b": ErrorStats(5000, 1.0, 0.1), "c": ErrorStats(7, 1.0, 0.1)}
    out = validation_count_mismatches(stats, {"a": 100, "b": 100, "c": None})
    assert set(out) == {"b"} and "count 5000 rows, it announced 100" in out["b"]


def test_ipm_and_alie_send_what_they_are_named_for():
    """The attack harness's untargeted attacks sized against robust rules, on one client's real update: inner-product
    manipulation points against the honest update; "a little is enough" stays within the honest spread (its own
    update's per-coordinate magnitude, attack_scale of them) while never moving further along it."""
    from data.loader import DeviceSplit
    from federation.client import LocalClient
    from federation.messages import RoundPlan
    from model.autoencoder import AutoEncoder, state_of

    rows = np.random.default_rng(1).lognormal(0.0, 1.0, (300, 115))
    split = DeviceSplit("Ecobee_Thermostat", rows[:180], rows[180:240], rows[240:], {}, [])
    honest = LocalClient(split, "log1p")
    global_state = state_of(AutoEncoder(115))
    normalizer = Normalizer.from_stats(honest.stats, "log1p", "zscore").to_dict()
    plan = RoundPlan(round_idx=0, lr=0.003, epochs=1, batch_size=64, weight_decay=0.0, seed=5)
    delta = {k: v - global_state[k] for k, v in honest.train(global_state, normalizer, plan).model.items()}
    for attack, scale in (("ipm", 4.0), ("alie", 1.0)):
        liar = AttackingClient(split, "log1p", attack=attack, attack_scale=scale)
        sent = {k: v - global_state[k] for k, v in liar.train(global_state, normalizer, plan).model.items()}
        dot = sum(float((sent[k] * delta[k]).sum()) for k in delta)
        if attack == "ipm":
            assert dot < 0 and all(torch.allclose(sent[k], -scale * delta[k], atol=1e-6) for k in delta)
        else:
            assert all(bool(((sent[k] - delta[k]).abs() <= scale * delta[k].abs() + 1e-6).all()) for k in delta)
            assert all(bool((sent[k] <= delta[k] + 1e-6).all()) for k in delta)


def test_a_devices_own_rows_widen_only_its_own_normalisation():
    """Two honest devices far from the other six on some features are what two liars inflating them look like, so
    the bound stretches them (issue 22: N-BaIoT without Ecobee, both doorbells at TPR 0). Widening for a device's
    own statistics gives those two their own scales back and leaves every other device with the bounded one; a
    liar's statistics reach only its own scales."""
    from federation.state import RoundState
    from fediot.config import validate

    devices = ["Danmini_Doorbell", "Ennio_Doorbell", "Philips_B120N10_Baby_Monitor", "Provision_PT_737E_Security_Camera",
               "Provision_PT_838_Security_Camera", "Samsung_SNH_1011_N_Webcam",
               "SimpleHome_XCS7_1002_WHT_Security_Camera", "SimpleHome_XCS7_1003_WHT_Security_Camera"]
    rng = np.random.default_rng(5)
    rows = {d: rng.lognormal(1.0, 0.3, (300, 115)) for d in devices}
    for d in devices[:2]:  # the doorbells: ten features at another place and spread
        rows[d][:, 60:70] = rng.lognormal(8.0, 1.0, (300, 10))
    stats = {d: FeatureStats.of(r, "log1p") for d, r in rows.items()}
    cfg = validate({"common_args": {"training_type": "simulation"},
                    "data_args": {"dataset": "synthetic", "devices": devices},
                    "train_args": {"client_num_in_total": None, "client_num_per_round": None},
                    "comm_args": {"backend": "MPI"}})
    state = RoundState(cfg, {"source": "synthetic"}, "federated")
    state.fit_normalizer(stats)
    limit = cfg.plan.defenses.scale_ratio_limit
    bounded = state.normalizer
    assert set(state.device_scales) == set(devices[:2])
    for d in devices[:2]:
        own = Normalizer(bounded.transform, bounded.method, bounded.offset, np.asarray(state.device_scales[d]))
        z = own(rows[d])  # the device's own rows: within `limit` scales of the offset, spread at most `limit`
        assert np.abs(z.mean(axis=0)).max() <= limit * 1.001 and z.std(axis=0).max() <= limit * 1.001
        assert np.all(own.scale >= bounded.scale) and np.count_nonzero(own.scale > bounded.scale) == 10
        assert np.abs(bounded(rows[d]).mean(axis=0)).max() > limit  # what the bound alone did to it
    assert state.own_fields(devices) == {d: {"scale": state.device_scales[d]} for d in devices[:2]} | {
        d: {} for d in devices[2:]}
    assert "widened for a device's own rows" in state.normalization["fitted_on"]
    assert any("feature normalisation of Danmini_Doorbell widened on 10 feature(s)" in n for n in state.take_notices())

    # a liar (statistics of rows 10x larger) widens its own scales; an honest device's normalisation is the bounded
    # one (which the liar moves only as far as the bound lets it: test above) or that widened for its own rows
    liar = "Provision_PT_838_Security_Camera"
    s = stats[liar]
    lying = dict(stats, **{liar: FeatureStats(s.count, s.total * 10, s.total_sq * 100, s.minimum * 10, s.maximum * 10)})
    attacked = RoundState(cfg, {"source": "synthetic"}, "federated")
    attacked.fit_normalizer(lying)
    assert liar in attacked.device_scales and set(attacked.device_scales) <= set(devices[:2]) | {liar}


def test_widening_never_narrows_and_leaves_a_device_inside_the_reach_alone():
    rng = np.random.default_rng(1)
    base = Normalizer.fit(rng.lognormal(1, 0.5, (500, 115)), "log1p", "zscore")
    inside = FeatureStats.of(rng.lognormal(1, 0.5, (200, 115)), "log1p")
    assert np.array_equal(base.widened_for(inside, 4.0).scale, base.scale)
    far = FeatureStats.of(rng.lognormal(6, 2.0, (200, 115)), "log1p")
    wide = base.widened_for(far, 4.0)
    assert np.all(wide.scale >= base.scale) and np.all(wide.scale > base.scale)
    assert np.array_equal(wide.offset, base.offset)


def test_report_checks_compare_a_huge_integer_threshold_without_crashing():
    """A threshold sent as a JSON integer beyond int64 (2**64, inside the float32 range the validator allows) is a
    problem of the report, not a TypeError in numpy (found by tests/test_fuzz_messages.py in a CI run)."""
    from federation.defenses import report_problems

    report = {"device": "d", "missing_attacks": [], "validation": {"n": 2, "mse_mean": 0.1, "mse_std": 0.0},
              "hist": {"benign": {"0": 2}, "attacks": {}},
              "modes": {"global": {"threshold": 2**64, "benign": {"fp": 0, "tn": 2}, "attacks": {},
                                   "window": {"tp": 0, "fn": 0, "fp": 0, "tn": 2}}}}
    problems = report_problems(report, {"validation": 2, "test": 2, "attacks": {}}, None, {"global": 1.0}, 1)
    assert any("global threshold" in p for p in problems), problems
