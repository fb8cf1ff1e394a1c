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
    # each device's own counts, and N-BaIoT's majority vote, straight from its rows
    for s in scores:
        own = _row_level([s], {s.device: glob})
        assert {k: combined["devices"][s.device][k] for k in ("tp", "fp", "tn", "fn")} == \
            {k: own[k] for k in ("tp", "fp", "tn", "fn")}, s.device
    win_fp = sum(_votes(s.test > glob, 5) for s in scores)
    win_tp = sum(_votes(a > glob, 5) for s in scores for a in s.attacks.values())
    n_benign_windows = sum(len(s.test) - 4 for s in scores)
    assert g["window"]["fpr"] == pytest.approx(win_fp / n_benign_windows)
    n_attack_windows = sum(len(a) - 4 for s in scores for a in s.attacks.values())
    assert g["window"]["tpr"] == pytest.approx(win_tp / n_attack_windows)


def _votes(flags: np.ndarray, window: int) -> int:
    """Windows of `window` consecutive rows in which more than half are flagged, counted one by one."""
    return sum(int(flags[i:i + window].sum() * 2 > window) for i in range(len(flags) - window + 1))


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







def test_personal_mode_is_pooled_over_the_clients_that_personalised_at_every_level():
    """Two clients of one device and one of another; one of the pair did not personalise (or its part was left out).
    The 'personal' mode of each client, of each device and of the federation counts exactly the personalised
    clients' rows at their own thresholds."""
    from evaluation.counts import personal_report

    scores = {c: make_scores(i, c) for i, c in enumerate(("A_1", "A_2", "B_1"))}
    personal_thr = {"A_1": 0.2, "B_1": 0.15}
    reports = []
    for c, s in scores.items():
        r = client_report(s, 0.3, 0.25, 3)
        if c in personal_thr:
            r["personal"] = personal_report(s, personal_thr[c], 3)
        reports.append(r)
    m = combine_reports(reports, 0.3, {c: 0.25 for c in scores}, 3, "device", lambda c: c.split("_")[0])

    def fp(cs: list[str]) -> int:
        return sum(int((scores[c].test > personal_thr[c]).sum()) for c in cs)
    assert m["clients"]["A_1"]["modes"]["personal"]["fp"] == fp(["A_1"])
    assert "personal" not in m["clients"]["A_2"]["modes"]
    assert m["devices"]["A"]["modes"]["personal"]["fp"] == fp(["A_1"])
    assert m["devices"]["A"]["modes"]["personal"]["thresholds"] == {"A_1": 0.2}
    assert m["devices"]["B"]["modes"]["personal"]["fp"] == fp(["B_1"])
    assert m["global"]["modes"]["personal"]["fp"] == fp(["A_1", "B_1"])
    assert m["global"]["modes"]["personal"]["window"]["size"] == 3
    assert m["global"]["modes"]["device"]["fp"] == sum(int((s.test > 0.25).sum()) for s in scores.values())
