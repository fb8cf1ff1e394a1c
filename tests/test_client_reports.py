"""Counts-only evaluation (deployment) equals row-level evaluation (simulation)."""
import numpy as np
import pytest

from fediot.evaluation import DeviceScores, evaluate, thresholds
from fediot.client_reports import auc_from_histograms, client_report, combine_reports, histogram, HIST_EDGES


def make_scores(seed: int, device: str) -> DeviceScores:
    rng = np.random.default_rng(seed)
    return DeviceScores(device, validation=rng.lognormal(-2, 0.5, 200), test=rng.lognormal(-2, 0.5, 150),
                        attacks={"mirai_udp": rng.lognormal(0, 1, 80), "gafgyt_scan": rng.lognormal(-1.5, 0.7, 60)},
                        missing_attacks=["mirai_syn"])


def test_reports_reproduce_row_level_metrics():
    scores = [make_scores(1, "A"), make_scores(2, "B"), make_scores(3, "C")]
    glob, per_dev = thresholds(scores, 2.0)
    direct = evaluate(scores, glob, per_dev, window=5)
    reports = [client_report(s, glob, per_dev[s.device], 5) for s in scores]
    combined = combine_reports(reports, glob, per_dev, 5)
    for key in ("tp", "fp", "tn", "fn", "tpr", "fpr", "precision", "f1", "accuracy"):
        assert combined["global"][key] == pytest.approx(direct["global"][key]), key
        assert combined["global"]["modes"]["device"][key] == pytest.approx(direct["global"]["modes"]["device"][key])
        for dev in "ABC":
            assert combined["devices"][dev][key] == pytest.approx(direct["devices"][dev][key])
    for key in ("tp", "fp", "tn", "fn"):
        assert combined["global"]["window"][key] == direct["global"]["window"][key]
    for name, a in direct["global"]["attacks"].items():
        assert combined["global"]["attacks"][name]["n"] == a["n"]
        assert combined["global"]["attacks"][name]["tpr"] == pytest.approx(a["tpr"])
    # AUCs from 4096-bin histograms agree closely with exact ones
    assert combined["global"]["roc_auc"] == pytest.approx(direct["global"]["roc_auc"], abs=2e-3)
    assert combined["global"]["pr_auc"] == pytest.approx(direct["global"]["pr_auc"], abs=5e-3)
    assert combined["devices"]["A"]["missing_attacks"] == ["mirai_syn"]


def test_histogram_auc_by_hand():
    b = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)
    a = np.zeros_like(b)
    b[10], b[20] = 1, 1
    a[15], a[30] = 1, 1
    assert auc_from_histograms(b, a)["roc_auc"] == pytest.approx(0.75)
    assert sum(histogram(np.array([1e-9, 1.0, 1.0, 1e9])).values()) == 4
