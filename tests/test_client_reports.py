"""The counts protocol (what every run path reports through) against row-level computations."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.scores import DeviceScores
from evaluation.scoring import evaluate, thresholds
from evaluation.counts import auc_from_histograms, client_report, combine_reports, histogram, HIST_EDGES


def make_scores(seed: int, device: str) -> DeviceScores:
    rng = np.random.default_rng(seed)
    return DeviceScores(device, validation=rng.lognormal(-2, 0.5, 200), test=rng.lognormal(-2, 0.5, 150),
                        attacks={"mirai_udp": rng.lognormal(0, 1, 80), "gafgyt_scan": rng.lognormal(-1.5, 0.7, 60)},
                        missing_attacks=["mirai_syn"])


def _row_level(scores: list[DeviceScores], thr: dict[str, float]) -> dict:
    """Confusion counts, per-attack TPR and exact AUCs straight from the rows (no protocol)."""
    benign = np.concatenate([s.test for s in scores])
    b_flags = np.concatenate([s.test > thr[s.device] for s in scores])
    attack = np.concatenate([np.concatenate(list(s.attacks.values())) for s in scores])
    a_flags = np.concatenate([np.concatenate([a > thr[s.device] for a in s.attacks.values()]) for s in scores])
    y = np.concatenate([np.zeros(len(benign)), np.ones(len(attack))])
    x = np.concatenate([benign, attack])
    return {"tp": int(a_flags.sum()), "fn": int((~a_flags).sum()), "fp": int(b_flags.sum()), "tn": int((~b_flags).sum()),
            "roc_auc": roc_auc_score(y, x), "pr_auc": average_precision_score(y, x)}


def test_reports_reproduce_row_level_metrics():
    scores = [make_scores(1, "A"), make_scores(2, "B"), make_scores(3, "C")]
    glob, per_dev = thresholds(scores, 2.0)
    assert glob == pytest.approx(np.concatenate([s.validation for s in scores]).mean()
                                 + 2.0 * np.concatenate([s.validation for s in scores]).std())
    reports = [client_report(s, glob, per_dev[s.device], 5) for s in scores]
    combined = combine_reports(reports, glob, per_dev, 5)
    assert combined == evaluate(scores, glob, per_dev, window=5)  # evaluate() is this very path
    direct = _row_level(scores, {s.device: glob for s in scores})
    by_device = _row_level(scores, per_dev)
    for key in ("tp", "fp", "tn", "fn"):
        assert combined["global"][key] == direct[key], key
        assert combined["global"]["modes"]["device"][key] == by_device[key], key
    g = combined["global"]
    assert g["tpr"] == pytest.approx(direct["tp"] / (direct["tp"] + direct["fn"]))
    assert g["fpr"] == pytest.approx(direct["fp"] / (direct["fp"] + direct["tn"]))
    udp = np.concatenate([s.attacks["mirai_udp"] for s in scores])
    assert g["attacks"]["mirai_udp"] == {"tpr": pytest.approx((udp > glob).mean()), "n": len(udp)}
    # AUCs from 4096-bin histograms agree closely with exact ones
    assert g["roc_auc"] == pytest.approx(direct["roc_auc"], abs=2e-3)
    assert g["pr_auc"] == pytest.approx(direct["pr_auc"], abs=5e-3)
    assert combined["devices"]["A"]["missing_attacks"] == ["mirai_syn"]


def test_local_models_report_the_device_mode_only():
    scores = [make_scores(4, "A"), make_scores(5, "B")]
    _, per_dev = thresholds(scores, 3.0)
    m = evaluate(scores, None, per_dev, window=5, primary="device")
    assert set(m["global"]["modes"]) == {"device"} and m["global"]["threshold_mode"] == "device"
    with pytest.raises(ValueError):
        evaluate(scores, None, per_dev, window=5, primary="global")


def test_histogram_auc_by_hand():
    b = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)
    a = np.zeros_like(b)
    b[10], b[20] = 1, 1
    a[15], a[30] = 1, 1
    assert auc_from_histograms(b, a)["roc_auc"] == pytest.approx(0.75)
    assert sum(histogram(np.array([1e-9, 1.0, 1.0, 1e9])).values()) == 4


def _announced(s: DeviceScores) -> dict:
    from evaluation.counts import held_out_counts
    return held_out_counts(s)


def test_an_honest_report_has_no_problems_and_fabricated_counts_do():
    """report_problems: what the server checks a count report against (announced rows, its own validation
    statistics, the thresholds it sent, the client's own histograms); eval_lies' fabrication fails it."""
    from evaluation.counts import report_problems
    from federation.client import fabricate_counts

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


def test_flag_bounds_bracket_the_true_count_at_any_threshold():
    from evaluation.counts import _flag_bounds

    rng = np.random.default_rng(7)
    scores = rng.lognormal(-1, 2, 5000)
    h = histogram(scores)
    for thr in (*rng.lognormal(-1, 2, 50), HIST_EDGES[2000], 0.0):
        lo, hi = _flag_bounds(h, float(thr))
        assert lo <= int((scores > thr).sum()) <= hi
        lo_s, hi_s = _flag_bounds({str(k): v for k, v in h.items()}, float(thr))  # keys as they come off the wire
        assert (lo_s, hi_s) == (lo, hi)


def test_a_liars_share_of_the_global_threshold_is_bounded_but_different_honest_devices_still_count():
    from evaluation.scoring import clip_threshold_outliers, thresholds_from_stats
    from model.detector import ErrorStats

    rng = np.random.default_rng(9)
    honest = {f"d{i}": ErrorStats.of(rng.lognormal(np.log(0.05 * (i + 1)), 0.4, 300)) for i in range(6)}
    clean, _ = thresholds_from_stats(honest, 3.0)
    kept, clipped = clip_threshold_outliers(honest, 3.0, 3.0)
    assert clipped == {} and kept == honest  # 6x spread between honest devices: within 3 MADs, nothing touched
    liar = dict(honest, liar=honest["d2"].scaled(1000.0))
    plain, own = thresholds_from_stats(liar, 3.0)
    bounded, _ = thresholds_from_stats(clip_threshold_outliers(liar, 3.0, 3.0)[0], 3.0)
    # pooled as sent one liar moves the global threshold ~360x; bounded, as far as a device at the band's edge
    assert plain > 300 * clean and bounded < 2 * clean
    assert own["liar"] == pytest.approx(1000 * own["d2"])  # its own threshold stays its own
    low = dict(honest, liar=honest["d2"].scaled(1e-6))
    assert set(clip_threshold_outliers(low, 3.0, 3.0)[1]) == {"liar"}
    # sized for `limit` liars: the farthest ones are bounded, a crowd beyond them counts as sent
    two = dict(honest, liar=honest["d2"].scaled(1000.0), other=honest["d3"].scaled(300.0),
               third=honest["d1"].scaled(200.0))
    pooled, clipped = clip_threshold_outliers(two, 3.0, 3.0, limit=2)
    assert set(clipped) == {"liar", "other"} and pooled["third"] == two["third"]
    assert "3 outside, at most 2 bounded" in clipped["liar"]
