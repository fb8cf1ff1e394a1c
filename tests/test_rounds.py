"""The rules of a federated run on the in-process grid (seconds, no processes): the same driver, round state,
clients and message validators as the MPI simulation and the gRPC deployment (their process tests keep what is
about processes and transports)."""
from __future__ import annotations

import json

import pytest
import torch

from federation.driver import RoundFailed
from federation.inprocess import Faults
from federation.messages import C2S_UPDATE, S2C_EVAL_STATS, S2C_TRAIN
from fediot.config import validate
from tests.rounds import (
    DEVICES, FIVE_DEVICES, assert_same_as_golden, assert_same_metrics, deploy_values, metrics_of, overridden,
    rounds_of, run, sim_values,
)


# ------------------------------------------------------------------------------------- same outputs as the goldens
def test_simulation_config_gives_the_golden_metrics(tmp_path):
    _, _, run_dir = run(sim_values(tmp_path))
    assert_same_as_golden(metrics_of(run_dir), "simulation-3-clients.metrics.json")


def test_deployment_config_gives_the_golden_metrics(tmp_path):
    values = deploy_values(tmp_path, train_args__learning_rate=0.004, train_args__lr_decay=0.5)
    _, _, run_dir = run(values)
    assert_same_as_golden(metrics_of(run_dir), "deployment-3-boards.metrics.json")
    assert {r["round"]: r["lr"] for r in rounds_of(run_dir)} == {1: 0.004, 2: 0.002, 3: 0.001}
    assert (run_dir / "checkpoint.pt").is_file()  # a deployment checkpoints every round


def test_outputs_tensorboard_report_and_what_the_console_says(tmp_path):
    import struct

    from tensorboardX.proto import event_pb2

    said: list[str] = []
    _, _, run_dir = run(sim_values(tmp_path, tracking_args__tensorboard=True), said=said)
    out = "\n".join(said)
    assert "clients: 3: Danmini_Doorbell (360 training rows)" in out
    assert "round 2/2  clients 3" in out and "evaluation after round 2: 3 device(s)" in out
    assert "final (global threshold" in out and f"report: {run_dir / 'report.md'}" in out
    tags = set()
    for f in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    assert {"loss/mean", "loss/Ennio_Doorbell", "eval_global_threshold/fpr"} <= tags
    assert "SYNTHETIC DATA" in (run_dir / "report.md").read_text()
    for name in ("federated_training.png", "federated_roc.png", "federated_devices.png", "federated_attacks.png"):
        assert (run_dir / "figures" / name).stat().st_size > 10_000
    for name in ("model.pt", "curves.json", "clients/Ennio_Doorbell.jsonl"):
        assert (run_dir / name).is_file(), name


# ------------------------------------------------------------------------------------- sampling, many clients
def test_client_sampling_follows_fedmls_rule_and_everyone_is_evaluated(tmp_path):
    """client_num_per_round 2 of 5: each round trains the seeded sample FedML's aggregator would pick (recorded as
    'sampled'; the others are not dropped, just not asked); evaluation covers all 5."""
    from fedml.cross_silo.server.fedml_aggregator import FedMLAggregator

    said: list[str] = []
    _, _, run_dir = run(sim_values(tmp_path, data_args__devices=FIVE_DEVICES, train_args__client_num_in_total=5,
                                   train_args__client_num_per_round=2, train_args__comm_round=3,
                                   validation_args__frequency_of_the_test=3), said=said)
    rounds = rounds_of(run_dir)
    for r in rounds:
        fedml_pick = FedMLAggregator.client_sampling(None, r["round"] - 1, 5, 2)
        assert r["sampled"] == [FIVE_DEVICES[i] for i in sorted(fedml_pick)]
        assert r["clients"] == r["sampled"] and r["dropped"] == [], r
    assert len({tuple(r["sampled"]) for r in rounds}) > 1  # the sample changes from round to round
    assert sorted(metrics_of(run_dir)["devices"]) == sorted(FIVE_DEVICES)
    assert any(line.startswith("round 1/3  clients 2") for line in said)


def test_thirty_clients_sampled_with_tail_averaging(tmp_path):
    """clients_per_device 10 on 3 devices = 30 clients, 4 per round: FedML's sample each round, every client
    evaluated, metrics per client and per device (a device's counts are its clients' sums), and the evaluated model
    is the mean of the global models of rounds 2..3; `score --reevaluate` of model.pt gives the same counts."""
    from fedml.cross_silo.server.fedml_aggregator import FedMLAggregator
    from score import reevaluate

    _, _, run_dir = run(sim_values(tmp_path, data_args__clients_per_device=10, train_args__client_num_in_total=None,
                                   train_args__client_num_per_round=4, train_args__comm_round=3,
                                   validation_args__frequency_of_the_test=3, train_args__model_average_rounds=10))
    clients = [f"{d}#{i}" for d in DEVICES for i in range(1, 11)]
    rounds = rounds_of(run_dir)
    for r in rounds:
        assert r["sampled"] == [clients[i] for i in sorted(FedMLAggregator.client_sampling(None, r["round"] - 1, 30, 4))]
        assert r["clients"] == sorted(r["sampled"]), r
    m = metrics_of(run_dir)
    assert sorted(m["clients"]) == sorted(clients) and sorted(m["devices"]) == sorted(DEVICES)
    for d in DEVICES:
        mine = [m["clients"][c] for c in clients if c.startswith(d + "#")]
        assert m["devices"][d]["n_benign_test"] == sum(c["n_benign_test"] for c in mine) == 120
        assert m["devices"][d]["modes"]["global"]["fp"] == sum(c["modes"]["global"]["fp"] for c in mine)
    assert m["global"]["tpr"] > 0.9
    assert rounds[-1]["eval_model_rounds"] == [2, 3] and m["model"]["average_of_rounds"] == [2, 3]
    again = reevaluate(run_dir)
    for key in ("tp", "fp", "tn", "fn"):
        assert again["global"][key] == m["global"][key], key
    assert {c: again["clients"][c]["modes"]["device"]["fp"] for c in clients} == \
        {c: m["clients"][c]["modes"]["device"]["fp"] for c in clients}


# ------------------------------------------------------------------------------------- attacks vs defenses
def five_with_client_2(tmp_path, rounds: int, **over):
    """5 synthetic clients; client 2 (Ecobee_Thermostat) attacks as `over` says: (run dir, the TPR of each honest
    device with the threshold it detects with, its own; the console)."""
    said: list[str] = []
    _, _, run_dir = run(sim_values(tmp_path, data_args__devices=FIVE_DEVICES, data_args__synthetic_benign_rows=800,
                                   train_args__client_num_in_total=5, train_args__client_num_per_round=5,
                                   train_args__comm_round=rounds, validation_args__frequency_of_the_test=rounds,
                                   attack_args__malicious_ranks=[2], **over), said=said)
    m = metrics_of(run_dir)
    return run_dir, {d: m["devices"][d]["tpr"] for d in FIVE_DEVICES if d != "Ecobee_Thermostat"}, "\n".join(said)


def global_mode_tpr(run_dir) -> dict[str, float]:
    """Each honest device's TPR with the global threshold (for devices outside the federation)."""
    m = metrics_of(run_dir)
    return {d: m["devices"][d]["modes"]["global"]["tpr"] for d in FIVE_DEVICES if d != "Ecobee_Thermostat"}


@pytest.mark.parametrize("attack,scale,n_rounds", [("random_update", 10.0, 4), ("stats_inflation", 100.0, 3),
                                                   ("model_scaling", 10.0, 4)])
def test_one_lying_client_blinds_plain_fedavg_but_not_the_robust_defaults(tmp_path, attack, scale, n_rounds):
    """Client 2 of 5 sends random weights (10 x each tensor's std), reports feature and validation statistics of
    rows 100x larger, or sends its update on attack rows boosted 10x. Plain FedAvg with statistics pooled as sent
    (robust: false): the honest devices' detection collapses under random weights, and the global threshold under
    inflated statistics (the boosted poison does not dent it on these synthetic rows, whose attacks are far from
    benign); the defaults (robust) leave the far updates out, keep the inflated threshold out of the global one, keep
    detection intact and say why."""
    results, global_mode = {}, {}
    for label, robust in (("plain", False), ("robust", True)):
        run_dir, results[label], out = five_with_client_2(tmp_path / label, n_rounds, train_args__robust=robust,
                                                          attack_args__attack=attack, attack_args__attack_scale=scale)
        global_mode[label] = global_mode_tpr(run_dir)
        rounds = rounds_of(run_dir)
        if robust and attack in ("random_update", "model_scaling"):
            assert all("Ecobee_Thermostat" in r["screened_out"] for r in rounds), rounds
            assert "update of Ecobee_Thermostat left out" in out
        if robust and attack == "stats_inflation":  # its inflated threshold is the highest: not in the global one
            assert "Ecobee_Thermostat" not in rounds[-1]["global_threshold_from"]
        if not robust:
            assert all(r["aggregation"] == "fedavg" and "screened_out" not in r for r in rounds)
    assert min(results["robust"].values()) >= 0.98 and min(global_mode["robust"].values()) >= 0.98, results
    if attack == "random_update":
        assert max(results["plain"].values()) < 0.5, results
    if attack == "stats_inflation":  # each device's own threshold is its own; the pooled global one is blinded
        assert min(results["plain"].values()) >= 0.98 and max(global_mode["plain"].values()) < 0.5, global_mode


def test_two_liars_at_the_threshold_edge_move_no_honest_devices_threshold(tmp_path):
    """Issue 22's reproduction 4 with 2 of 9 liars (threshold_edge): each claims 10x its validation rows, every
    validation error at 10x its own threshold (std 0), and count reports consistent with that. No honest device's
    detection threshold moves (its own: no other client's numbers enter it) and every honest device still catches
    its attacks; the global threshold (for devices outside the federation) stays below the highest honest device's
    own threshold with the robust defaults, while pooled as sent (robust: false) the liars move it far."""
    liars = {2: "Ecobee_Thermostat", 5: "Provision_PT_737E_Security_Camera"}
    base = dict(data_args__devices="all", data_args__synthetic_benign_rows=600, train_args__client_num_in_total=9,
                train_args__client_num_per_round=9, train_args__comm_round=2, validation_args__frequency_of_the_test=2)
    runs = {}
    for label, robust, attack in (("clean", True, "none"), ("robust", True, "threshold_edge"),
                                  ("plain-clean", False, "none"), ("plain", False, "threshold_edge")):
        state, _, run_dir = run(sim_values(tmp_path / label, train_args__robust=robust, attack_args__attack=attack,
                                           attack_args__attack_scale=10.0,
                                           attack_args__malicious_ranks=sorted(liars), **base))
        runs[label] = (state.evaluator.thresholds, metrics_of(run_dir))
    (clean, _), (attacked, m) = runs["clean"], runs["robust"]
    honest = [d for d in clean["device"] if d not in liars.values()]
    for d in honest:
        assert attacked["device"][d] == pytest.approx(clean["device"][d], rel=1e-9), d
        assert m["devices"][d]["tpr"] >= 0.98, (d, m["devices"][d]["tpr"])
    assert attacked["global"] <= max(clean["device"][d] for d in honest)
    assert attacked["global"] <= 1.5 * clean["global"]
    assert runs["plain"][0]["global"] > 3 * runs["plain-clean"][0]["global"]  # without the defenses it bites


def test_fabricated_counts_are_left_out_of_the_metrics(tmp_path):
    """eval_lies: client 2 reports every attack row caught, no false alarm and 10x its benign rows. Robust: its report
    contradicts the rows it announced and its own histograms, so it is left out, said and recorded; the metrics are
    the honest devices'. Plain: the lie is counted."""
    run_dir, _, out = five_with_client_2(tmp_path / "robust", 2, attack_args__attack="eval_lies")
    assert "count report of Ecobee_Thermostat left out: global: benign fp + tn is" in out
    assert "Ecobee_Thermostat" in rounds_of(run_dir)[-1]["reports_rejected"]
    metrics = metrics_of(run_dir)
    assert "Ecobee_Thermostat" not in metrics["devices"]
    honest_benign = sum(metrics["devices"][d]["modes"]["global"]["fp"] + metrics["devices"][d]["modes"]["global"]["tn"]
                        for d in metrics["devices"])
    assert metrics["global"]["n_benign_test"] == honest_benign
    plain_dir, _, _ = five_with_client_2(tmp_path / "plain", 2, attack_args__attack="eval_lies", train_args__robust=False)
    lied = metrics_of(plain_dir)["devices"]["Ecobee_Thermostat"]
    assert lied["fpr"] == 0.0 and lied["tpr"] == 1.0
    assert lied["n_benign_test"] == 10 * metrics["devices"]["Danmini_Doorbell"]["n_benign_test"]  # same rows each


def test_a_malformed_answer_is_rejected_counted_and_its_client_dropped(tmp_path):
    """An update with a NaN weight never reaches the aggregation: the receiver's validator rejects it, the round
    records it (rejected, rejections with the sender) and the client as dropped, and the run goes on."""
    def nan_update(kind, rnd, client, fields):
        if kind == C2S_UPDATE and rnd == 1 and client == "Ecobee_Thermostat":
            bad = dict(fields, model={k: v.clone() for k, v in fields["model"].items()})
            next(iter(bad["model"].values())).view(-1)[0] = float("nan")
            return bad
        return None

    _, _, run_dir = run(deploy_values(tmp_path), Faults(tamper=nan_update))
    r2 = rounds_of(run_dir)[1]
    assert r2["round"] == 2 and r2["dropped"] == ["Ecobee_Thermostat"] and r2["rejected"] == 1
    assert r2["rejections"][0]["from"] == "rank 2" and "NaN" in r2["rejections"][0]["reason"]
    assert metrics_of(run_dir)["global"]["tpr"] > 0.9


# ------------------------------------------------------------------------------------- dropout, quorum, rejoin, resume
def test_a_client_that_misses_the_deadline_is_dropped_and_the_round_goes_on(tmp_path):
    silent = Faults(silent=lambda kind, rnd, client: kind == S2C_TRAIN and rnd == 1 and client == "Ennio_Doorbell")
    said: list[str] = []
    _, _, run_dir = run(deploy_values(tmp_path, train_args__min_clients_per_round=2), silent, said=said)
    rounds = rounds_of(run_dir)
    assert [r["dropped"] for r in rounds] == [[], ["Ennio_Doorbell"], []]
    assert "Ennio_Doorbell" not in rounds[1]["client_losses"] and any("dropped: Ennio_Doorbell" in s for s in said)
    assert sorted(metrics_of(run_dir)["devices"]) == sorted(DEVICES)  # it is back for the evaluation


def test_too_few_answers_stop_the_run_and_keep_the_checkpoint(tmp_path):
    """min_clients_per_round 2 of 2: when one stops answering in round 3 the run stops with one message naming the
    setting and the checkpoint, the clients are told, and checkpoint.pt holds round 2."""
    silent = Faults(silent=lambda kind, rnd, client: rnd >= 2 and client == "Ecobee_Thermostat")
    values = deploy_values(tmp_path, n_clients=2, train_args__comm_round=6, train_args__min_clients_per_round=2,
                           validation_args__frequency_of_the_test=6)
    with pytest.raises(RoundFailed) as failed:
        run(values, silent)
    message = str(failed.value)
    assert "round 3 (train): 1 client(s) answered, train_args.min_clients_per_round = 2; dropped: Ecobee_Thermostat" \
        in message and "checkpoint of the last completed round is kept" in message
    run_dir = next((tmp_path / "runs").iterdir())
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["round_done"] == 2
    assert [r["round"] for r in rounds_of(run_dir)] == [1, 2]


def test_a_client_that_joins_late_trains_from_then_on(tmp_path):
    """Ennio_Doorbell is not there when the run starts (it starts with the others) and says hello before round 3:
    it is asked from round 3 on and evaluated."""
    values = deploy_values(tmp_path, train_args__comm_round=4, validation_args__frequency_of_the_test=4)
    _, grid, run_dir = run(values, Faults(absent_until={"Ennio_Doorbell": 2}))
    rounds = rounds_of(run_dir)
    assert [sorted(r["clients"]) for r in rounds] == [DEVICES[:2], DEVICES[:2], sorted(DEVICES), sorted(DEVICES)]
    assert rounds[0]["dropped"] == ["Ennio_Doorbell"]  # sampled, not reachable
    assert sorted(metrics_of(run_dir)["devices"]) == sorted(DEVICES)
    assert "Ennio_Doorbell" in grid.hellos()


def test_resume_from_the_checkpoint_gives_the_uninterrupted_runs_metrics(tmp_path):
    """A deployment run stopped after round 3 (too few answers) and resumed from its checkpoint.pt ends with the
    metrics.json of a run that was never stopped, and rounds.jsonl holds every round once."""
    values = deploy_values(tmp_path / "a", train_args__comm_round=6, train_args__min_clients_per_round=3,
                           validation_args__frequency_of_the_test=2)
    _, _, whole = run(values)
    stopped = deploy_values(tmp_path / "b", train_args__comm_round=6, train_args__min_clients_per_round=3,
                            validation_args__frequency_of_the_test=2)
    with pytest.raises(RoundFailed):
        run(stopped, Faults(silent=lambda kind, rnd, client: rnd == 3 and client == "Danmini_Doorbell"))
    run_dir = next((tmp_path / "b" / "runs").iterdir())
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["round_done"] == 3
    run(stopped, run_dir=run_dir, checkpoint=checkpoint)
    assert [r["round"] for r in rounds_of(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert_same_metrics(metrics_of(run_dir), metrics_of(whole))


def test_resume_before_a_pending_evaluation_evaluates_first(tmp_path):
    """Stopped during round 2's evaluation (its training done, the record carried in the checkpoint): the resumed run
    evaluates first, then trains rounds 3..4; round 2's record (with its evaluation) is written once."""
    values = deploy_values(tmp_path, train_args__comm_round=4, train_args__min_clients_per_round=3,
                           validation_args__frequency_of_the_test=2)
    with pytest.raises(RoundFailed, match=r"round 3 \(val\)"):
        run(values, Faults(silent=lambda kind, rnd, client: kind == S2C_EVAL_STATS and rnd == 2))
    run_dir = next((tmp_path / "runs").iterdir())
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["round_done"] == 2 and checkpoint["pending_record"]["round"] == 2
    run(values, run_dir=run_dir, checkpoint=checkpoint)
    rounds = rounds_of(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4] and "eval" in rounds[1] and "eval" in rounds[3]


def test_config_is_validated_once_before_any_round(tmp_path):
    from fediot.errors import ConfigError

    with pytest.raises(ConfigError, match="train_args.comm_round"):
        validate(overridden(sim_values(tmp_path), {"train_args__comm_round": 0}))


def test_rounds_jsonl_lines_are_json_objects(tmp_path):
    _, _, run_dir = run(sim_values(tmp_path))
    for line in (run_dir / "rounds.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert r["rejected"] == 0 and r["bytes_sent"] > 0 and r["bytes_received"] > 0


def test_a_widened_devices_clients_and_its_detector_use_its_own_scales(tmp_path):
    """With trimming on (5 clients, byzantine_clients 1) the bound stretches a device far from the others and the
    state widens that device's scales (`Normalizer.widened_for`): its clients train and score with them (sent in
    their TRAIN and EVAL_STATS entries), model.pt keeps them, and `score --reevaluate` of model.pt gives the run's
    counts for every device, the widened one included."""
    from model.detector import Detector
    from score import reevaluate

    devices = ["Danmini_Doorbell", "Philips_B120N10_Baby_Monitor", "Provision_PT_737E_Security_Camera",
               "Provision_PT_838_Security_Camera", "Samsung_SNH_1011_N_Webcam"]  # one doorbell among cameras
    state, _, run_dir = run(sim_values(tmp_path, data_args__devices=devices, train_args__client_num_in_total=5,
                                       train_args__client_num_per_round=5, train_args__comm_round=1,
                                       train_args__byzantine_clients=1))
    assert state.device_scales, "no device was widened: the case is gone"
    m = metrics_of(run_dir)
    assert "widened for a device's own rows" in m["normalization"]["fitted_on"]
    again = reevaluate(run_dir)
    for d in devices:
        for mode in ("device", "global"):
            got, want = again["devices"][d]["modes"][mode], m["devices"][d]["modes"][mode]
            assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (want["tp"], want["fp"], want["tn"], want["fn"]), d
    assert set(Detector.load(run_dir).device_scales) == set(state.device_scales)
