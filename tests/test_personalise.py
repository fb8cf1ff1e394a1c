"""Issue 25: personalised detectors (validation_args.personalise_epochs): each client fine-tunes the evaluated global
model on its own training rows, scores its held-out rows with it at its own threshold, and reports those counts beside
the shared model's through the same counts protocol, checked the same way; a board's detector uses its personalised
model."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from federation import defenses
from tests.rounds import metrics_of, rounds_of, run, sim_values


def test_a_personalised_run_reports_both_models_with_the_same_protocol(tmp_path):
    said: list[str] = []
    _, grid, run_dir = run(sim_values(tmp_path, train_args__comm_round=2, validation_args__personalise_epochs=2),
                           said=said)
    m = metrics_of(run_dir)
    shared, personal = m["global"]["modes"]["device"], m["global"]["modes"]["personal"]
    # the same held-out rows, counted by the same rules; only the model and the threshold differ
    for key in ("n_benign_test", "n_attack_test"):
        assert personal[key] == shared[key]
    assert set(personal["thresholds"]) == set(m["devices"]) and personal["thresholds"] != shared["thresholds"]
    for device, e in m["devices"].items():
        assert e["modes"]["personal"]["n_benign_test"] == e["modes"]["device"]["n_benign_test"]
        assert 0.0 <= e["modes"]["personal"]["fpr"] <= 1.0 and e["modes"]["personal"]["roc_auc"] > 0.9
    evals = [r["eval"] for r in rounds_of(run_dir) if "eval" in r]
    assert evals and all("personal" in e for e in evals)
    assert any("personalised: TPR" in line for line in said)
    # without it, no personal mode
    _, _, plain = run(sim_values(tmp_path / "plain", train_args__comm_round=2))
    assert "personal" not in metrics_of(plain)["global"]["modes"]


def evaluated_client(tmp_path, live_path=None):
    """A client of a small personalised config that has scored its held-out rows with the initial global model
    (fine-tuned 1 epoch), keeping its live detector at `live_path` when given; its config."""
    from data.sources import prepare_data
    from federation.client import ClientLoader, LiveDetector
    from federation.state import RoundState
    from fediot.config import validate

    cfg = validate(sim_values(tmp_path, validation_args__personalise_epochs=1))
    data_root, _ = prepare_data(cfg)
    client = ClientLoader(cfg, data_root, tmp_path)(cfg.clients[0])
    if live_path is not None:
        client.live = LiveDetector(live_path, cfg.validation.threshold_k, {"kind": "test"})
    state = RoundState(cfg, {"source": "synthetic"}, "federated")
    state.fit_normalizer({client.device: client.stats})
    g = state._global()
    client.validation_stats(g["model"], g["normalizer"])
    return client, cfg


def personal_part(tmp_path):
    """A real report with a personal part, from a client of a small run."""
    client, cfg = evaluated_client(tmp_path)
    report = client.report(0.5, 0.5, cfg.validation.vote_window)
    return report, client.hello().held_out, cfg.validation.vote_window


def test_a_personal_report_that_its_histograms_rule_out_is_found(tmp_path):
    report, held_out, window = personal_part(tmp_path)
    p = report["personal"]
    own = {"personal": p["modes"]["personal"]["threshold"]}
    assert defenses.report_problems(p, held_out, None, own, window) == []
    assert sum(p["modes"]["personal"]["benign"].values()) == held_out["test"]
    lie = copy.deepcopy(p)
    lie["modes"]["personal"]["benign"] = {"fp": held_out["test"], "tn": 0}  # every benign row flagged
    assert any("benign rows flagged" in x for x in defenses.report_problems(lie, held_out, None, own, window))
    lie2 = copy.deepcopy(p)
    lie2["modes"]["personal"]["benign"]["tn"] += 10_000  # rows it never announced
    assert defenses.report_problems(lie2, held_out, None, own, window)


def test_the_personal_part_of_a_report_is_validated_like_the_rest(tmp_path):
    from federation.messages import C2S_REPORT, Expectations, validate
    from fediot.checks import InputError
    from model.autoencoder import AutoEncoder

    import json

    report, _, _ = personal_part(tmp_path)
    report = json.loads(json.dumps(report))  # as it arrives: the wire's JSON header (histogram bins as strings)
    exp = Expectations.of(AutoEncoder(115), [report["device"]])
    validate(C2S_REPORT, {"round": 1, "report": report}, exp)
    for bad in ({"modes": {"device": report["personal"]["modes"]["personal"]}},  # another mode's name
                {"modes": {"personal": {**report["personal"]["modes"]["personal"], "threshold": float("nan")}}},
                {"validation": {"n": -1, "mse_mean": 0.1, "mse_std": 0.1}}):
        broken = copy.deepcopy(report)
        broken["personal"].update(bad)
        with pytest.raises(InputError):
            validate(C2S_REPORT, {"round": 1, "report": broken}, exp)


def test_the_board_detects_with_its_personalised_model(tmp_path):
    """A board's client publishes its personalised model at its own threshold for detect --follow."""
    from model.detector import ErrorStats
    from model.lean import LeanDetector

    path = tmp_path / "detector" / "model.npz"
    client, cfg = evaluated_client(tmp_path, path)
    client.publish_live(1, 0.5, 0.5)
    want = ErrorStats.of(client.personal_scores.validation).threshold(cfg.validation.threshold_k)
    assert np.isfinite(want) and want != 0.5
    assert LeanDetector.load(path).threshold_for(client.device) == pytest.approx(want)
