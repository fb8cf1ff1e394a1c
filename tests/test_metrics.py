import numpy as np
import pytest

from evaluation.scores import DeviceScores
from evaluation.scoring import evaluate
from evaluation.metrics import majority_vote, rates


def test_rates_by_hand():
    r = rates({"tp": 2, "fn": 1, "fp": 1, "tn": 3})
    assert r["tpr"] == pytest.approx(2 / 3)
    assert r["fpr"] == pytest.approx(1 / 4)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert r["accuracy"] == pytest.approx(5 / 7)


def test_undefined_rates_are_none():
    r = rates({"tp": 0, "fn": 0, "fp": 0, "tn": 5})
    assert r["tpr"] is None and r["precision"] is None and r["fpr"] == 0.0


def test_auc_by_hand():
    # one inversion out of 2*2 pairs -> ROC-AUC 0.75; scores far apart land in different histogram bins
    a = DeviceScores("A", validation=np.array([1.0]), test=np.array([0.1, 0.6]), attacks={"mirai_udp": np.array([0.5, 0.9])})
    g = evaluate([a], global_threshold=1.0, device_thresholds={"A": 1.0}, window=1)["global"]
    assert g["roc_auc"] == pytest.approx(0.75)
    assert g["pr_auc"] == pytest.approx((1.0 + 2 / 3) / 2)
    b = DeviceScores("B", validation=np.array([1.0]), test=np.array([0.1]), attacks={})
    assert evaluate([b], 1.0, {"B": 1.0}, 1)["global"]["roc_auc"] is None


def test_majority_vote_windows():
    flags = np.array([1, 0, 1, 1, 0, 0, 0], dtype=bool)
    assert majority_vote(flags, 3).tolist() == [True, True, True, False, False]
    assert majority_vote(flags[:2], 5).tolist() == [False]  # 1 of 2 is not a strict majority


def test_evaluate_two_threshold_modes_by_hand():
    a = DeviceScores("A", validation=np.array([1.0]), test=np.array([0.5, 1.5, 0.2]),
                     attacks={"mirai_udp": np.array([3.0, 0.9])})
    b = DeviceScores("B", validation=np.array([1.0]), test=np.array([0.1, 0.1]),
                     attacks={"mirai_udp": np.array([0.8]), "gafgyt_tcp": np.array([5.0])})
    m = evaluate([a, b], global_threshold=1.0, device_thresholds={"A": 2.0, "B": 0.5}, window=1)
    g = m["global"]
    assert (g["tp"], g["fn"], g["fp"], g["tn"]) == (2, 2, 1, 4)   # global threshold 1.0
    assert g["attacks"]["mirai_udp"] == {"tpr": pytest.approx(1 / 3), "n": 3}
    d = g["modes"]["device"]
    assert (d["tp"], d["fn"], d["fp"], d["tn"]) == (3, 1, 0, 5)   # A at 2.0, B at 0.5
    assert m["devices"]["B"]["attacks"]["gafgyt_tcp"]["tpr"] == 1.0
    assert m["devices"]["A"]["fpr"] == pytest.approx(1 / 3)
    assert m["devices"]["A"]["modes"]["device"]["fpr"] == 0.0
    assert g["window"]["size"] == 1 and g["window"]["tp"] == g["tp"]
