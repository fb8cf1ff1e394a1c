"""The MPI simulation as real processes: run_simulation.sh -> mpirun -> FedML -> our trainer/aggregator."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.detector import Detector
from tests.helpers import REPO

DEVICES = ["Danmini_Doorbell", "Ecobee_Thermostat", "Ennio_Doorbell"]


def sim_config(tmp_path: Path, **over) -> Path:
    cfg = {
        "common_args": {"training_type": "simulation", "random_seed": 0, "run_dir_root": str(tmp_path / "runs")},
        "data_args": {"dataset": "synthetic", "devices": DEVICES, "synthetic_benign_rows": 600,
                      "synthetic_attack_rows": 100, "attack_test_rows": 100},
        "train_args": {"client_num_in_total": 3, "client_num_per_round": 3, "comm_round": 2, "epochs": 2},
        "validation_args": {"frequency_of_the_test": 1},
        "comm_args": {"backend": "MPI"},
    }
    for dotted, value in over.items():
        sec, key = dotted.split("__")
        cfg.setdefault(sec, {})[key] = value
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_sim(n: str, cfg: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["sh", str(REPO / "run_simulation.sh"), n, str(cfg)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    proc = run_sim("3", sim_config(tmp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_simulation_writes_run_directory(finished_run):
    lines = finished_run.stdout.strip().splitlines()
    run_dir = Path(lines[-1])  # the run directory is the last line of output
    assert run_dir.is_dir()
    for name in ("metrics.json", "rounds.jsonl", "model.pt", "config.yaml"):
        assert (run_dir / name).is_file(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["data"]["source"] == "synthetic" and m["data"]["synthetic"] is True
    assert set(m["devices"]) == set(DEVICES)
    for key in ("tpr", "fpr", "precision", "f1", "roc_auc", "pr_auc"):
        assert isinstance(m["global"][key], float)
    assert set(m["devices"]["Ennio_Doorbell"]["attacks"]) == {f"gafgyt_{k}" for k in ("combo", "junk", "scan", "tcp", "udp")}
    assert m["devices"]["Danmini_Doorbell"]["attacks"]["mirai_syn"]["n"] == 100
    assert m["global"]["tpr"] > 0.9
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(set(r["client_losses"]) == set(DEVICES) and "eval" in r and r["wall_time_s"] >= 0 for r in rounds)
    # FedML's own chatter stays out of our console output and goes to the run's log files
    assert "FedML" not in finished_run.stdout and "INFO" not in finished_run.stdout
    assert list((run_dir / "logs").glob("fedml-rank*.log"))


def test_checkpoint_reloads_and_reproduces_metrics(finished_run):
    run_dir = Path(finished_run.stdout.strip().splitlines()[-1])
    saved = json.loads((run_dir / "metrics.json").read_text())
    sys.path.insert(0, str(REPO))
    from score import reevaluate
    again = reevaluate(run_dir)
    for key in ("tp", "fp", "tn", "fn", "tpr", "fpr", "roc_auc"):
        assert again["global"][key] == pytest.approx(saved["global"][key]), key
    for dev in DEVICES:
        assert again["devices"][dev]["modes"]["device"]["fpr"] == pytest.approx(saved["devices"][dev]["modes"]["device"]["fpr"])
    det = Detector.load(run_dir / "model.pt")
    assert det.global_threshold == pytest.approx(saved["global"]["threshold"])
    assert set(det.device_thresholds) == set(DEVICES)


def test_score_cli_on_new_rows(finished_run, tmp_path):
    run_dir = Path(finished_run.stdout.strip().splitlines()[-1])
    data_dir = Path(json.loads((run_dir / "metrics.json").read_text())["data"]["path"])
    out = tmp_path / "scores.csv"
    proc = subprocess.run([sys.executable, "-m", "score", str(run_dir), "--csv",
                           str(data_dir / "Ennio_Doorbell" / "gafgyt_attacks" / "udp.csv"), "--device", "Ennio_Doorbell",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "100 rows, 100 flagged" in proc.stdout
    assert out.read_text().splitlines()[0] == "row,score,threshold,attack"


def test_client_count_mismatch_is_one_clear_error(tmp_path):
    proc = run_sim("4", sim_config(tmp_path))
    assert proc.returncode != 0
    assert "error: config" in proc.stderr and "4 client process(es) were started" in proc.stderr
    assert "the config has 3 client(s) (3 device(s) x clients_per_device 1). Start at most 3 (one per client)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_key_is_one_clear_error(tmp_path):
    cfg = sim_config(tmp_path, train_args__comm_rounds=3)
    proc = run_sim("3", cfg)
    assert proc.returncode != 0
    assert "unknown key train_args.comm_rounds (did you mean train_args.comm_round?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_launcher_argument_errors(tmp_path):
    for args, message in ((["x"], "N must be a number"), (["65"], "expected 1..64"),
                          (["3", str(tmp_path / "nope.yaml")], "not found")):
        proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr


def test_missing_data_is_one_clear_error(tmp_path):
    cfg = sim_config(tmp_path, data_args__dataset="nbaiot", data_args__data_cache_dir=str(tmp_path / "nodata"),
                     data_args__download=False)
    proc = run_sim("3", cfg)
    assert proc.returncode != 0
    assert "N-BaIoT data missing for 3 device(s)" in proc.stderr and "synthetic" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nine_client_synthetic_simulation_meets_targets(tmp_path):
    """The README's offline main job: 9 clients on synthetic data, default settings."""
    cfg = yaml.safe_load((REPO / "config_simulation" / "fedml_config_synthetic.yaml").read_text())
    cfg["common_args"]["run_dir_root"] = str(tmp_path / "runs")
    path = tmp_path / "sim9.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_sim("9", path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    m = json.loads((run_dir / "metrics.json").read_text())
    assert len(m["devices"]) == 9
    assert m["global"]["tpr"] >= 0.99 and m["global"]["fpr"] <= 0.01
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 20 and all(r["data_source"] == "synthetic" for r in rounds)
    assert [r["round"] for r in rounds if "eval" in r] == [5, 10, 15, 20]
    # every client trains every round: the latest global model is evaluated and saved
    assert not any("eval_model_rounds" in r for r in rounds) and m["model"]["average_of_rounds"] == [20, 20]
    assert len(list((run_dir / "resources").glob("rank*.json"))) == 10


def test_tensorboard_tracking_and_report(tmp_path):
    """tracking_args.tensorboard writes event files; every simulation writes report.md with figures."""
    import struct

    from tensorboardX.proto import event_pb2

    proc = run_sim("3", sim_config(tmp_path, tracking_args__tensorboard=True))
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
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
    report = (run_dir / "report.md").read_text()
    assert "SYNTHETIC DATA" in report
    for name in ("federated_training.png", "federated_roc.png", "federated_devices.png", "federated_attacks.png"):
        assert (run_dir / "figures" / name).stat().st_size > 10_000


def test_host_file_run_on_localhost_slots(tmp_path):
    """--hostfile reaches mpirun: a file listing this machine's slots runs; one naming an unknown host fails there."""
    hosts = tmp_path / "hosts"
    hosts.write_text("# the cluster: this machine only\nlocalhost slots=4\n")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), "3", str(sim_config(tmp_path)), "--hostfile", str(hosts)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"hosts from {hosts}: localhost" in proc.stderr
    assert (Path(proc.stdout.strip().splitlines()[-1]) / "metrics.json").is_file()
    unknown = tmp_path / "unknown-hosts"
    unknown.write_text("fediot-no-such-host.invalid slots=4\n")
    proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), "3", str(sim_config(tmp_path))], capture_output=True,
                          text=True, timeout=120, env={**env, "FEDIOT_HOSTFILE": str(unknown)}, cwd=REPO)
    assert proc.returncode != 0 and "fediot-no-such-host.invalid" in proc.stderr


def test_host_file_errors_are_one_line(tmp_path):
    (tmp_path / "empty").write_text("# nothing\n\n")
    cases = ((["3", "--hostfile", str(tmp_path / "nope")], "host file"), (["3", "--hostfile"], "--hostfile needs a file"),
             (["3", "--hostfile", str(tmp_path / "empty")], "lists no host"), (["3", "--bogus"], "unknown option"))
    for args, message in cases:
        proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)


ATTACK_DEVICES = [*DEVICES, "Philips_B120N10_Baby_Monitor", "Provision_PT_737E_Security_Camera"]


def run_with_client_2_malicious(tmp_path: Path, rounds: int, **over) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """A 5-client synthetic simulation whose client 2 (Ecobee_Thermostat) attacks as `over` says:
    (process, run directory, global-threshold TPR of each honest device)."""
    tmp_path.mkdir()
    cfg = sim_config(tmp_path, data_args__devices=ATTACK_DEVICES, data_args__synthetic_benign_rows=800,
                     train_args__client_num_in_total=5, train_args__client_num_per_round=5, train_args__comm_round=rounds,
                     validation_args__frequency_of_the_test=rounds, attack_args__malicious_ranks=[2], **over)
    proc = run_sim("5", cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return proc, run_dir, {d: metrics["devices"][d]["tpr"] for d in ATTACK_DEVICES if d != ATTACK_DEVICES[1]}


@pytest.mark.parametrize("attack,scale,n_rounds", [("random_update", 10.0, 4), ("stats_inflation", 100.0, 3)])
def test_one_lying_client_blinds_plain_fedavg_but_not_the_robust_defaults(tmp_path, attack, scale, n_rounds):
    """attack_args: client 2 of 5 sends random weights (10 x each tensor's std), or reports feature and validation
    statistics of rows 100x larger. With train_args.robust: false (plain FedAvg, statistics pooled as sent) the
    honest devices' detection collapses; with the defaults (robust) it is intact, and the defense says why."""
    results, outputs = {}, {}
    for label, robust in (("plain", False), ("robust", True)):
        proc, run_dir, results[label] = run_with_client_2_malicious(
            tmp_path / label, n_rounds, train_args__robust=robust, attack_args__attack=attack, attack_args__attack_scale=scale)
        outputs[label] = proc.stdout
        rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
        if robust and attack == "random_update":
            assert all("Ecobee_Thermostat" in r["screened_out"] for r in rounds), rounds
            assert "update of Ecobee_Thermostat left out" in proc.stdout
        if robust and attack == "stats_inflation":
            assert "Ecobee_Thermostat" in rounds[-1]["threshold_clipped"]
            assert "global threshold: Ecobee_Thermostat: its threshold" in proc.stdout
        if not robust:
            assert all(r["aggregation"] == "fedavg" and "screened_out" not in r for r in rounds)
    assert max(results["plain"].values()) < 0.5, results
    assert min(results["robust"].values()) >= 0.98, results


def test_fabricated_counts_are_left_out_of_the_metrics(tmp_path):
    """attack_args eval_lies: client 2 reports every attack row caught, no false alarm and 10x its benign rows.
    Robust (default): its report contradicts the rows it announced and its own histograms, so it is left out,
    said and recorded; the metrics are the honest devices'. Plain: the lie is counted (global FPR diluted)."""
    proc, run_dir, _ = run_with_client_2_malicious(tmp_path / "robust", 2, attack_args__attack="eval_lies")
    assert "count report of Ecobee_Thermostat left out: global: benign fp + tn is" in proc.stdout
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert "Ecobee_Thermostat" in rounds[-1]["reports_rejected"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "Ecobee_Thermostat" not in metrics["devices"]
    honest_benign = sum(metrics["devices"][d]["modes"]["global"]["fp"] + metrics["devices"][d]["modes"]["global"]["tn"]
                        for d in metrics["devices"])
    assert metrics["global"]["n_benign_test"] == honest_benign
    _, plain_dir, _ = run_with_client_2_malicious(tmp_path / "plain", 2, attack_args__attack="eval_lies",
                                                  train_args__robust=False)
    plain = json.loads((plain_dir / "metrics.json").read_text())
    lied = plain["devices"]["Ecobee_Thermostat"]
    assert lied["fpr"] == 0.0 and lied["tpr"] == 1.0
    assert lied["n_benign_test"] == 10 * metrics["devices"]["Danmini_Doorbell"]["n_benign_test"]  # same rows each


def test_client_sampling_follows_fedmls_rule_and_everyone_is_evaluated(tmp_path):
    """train_args.client_num_per_round 2 of 5: each round trains the seeded sample FedML's aggregator would
    pick (recorded as 'sampled'; the others are not dropped, just not asked); evaluation covers all 5."""
    from fedml.cross_silo.server.fedml_aggregator import FedMLAggregator

    cfg = sim_config(tmp_path, data_args__devices=ATTACK_DEVICES, train_args__client_num_in_total=5,
                     train_args__client_num_per_round=2, train_args__comm_round=3, validation_args__frequency_of_the_test=3)
    proc = run_sim("5", cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    for r in rounds:
        fedml_pick = FedMLAggregator.client_sampling(None, r["round"] - 1, 5, 2)
        assert r["sampled"] == [ATTACK_DEVICES[i] for i in sorted(fedml_pick)]
        assert r["clients"] == r["sampled"] and r["dropped"] == [], r
    assert len({tuple(r["sampled"]) for r in rounds}) > 1  # the sample changes from round to round
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(metrics["devices"]) == sorted(ATTACK_DEVICES)
    assert "round 1/3  clients 2" in proc.stdout


def test_thirty_clients_on_three_workers_with_sampling(tmp_path):
    """data_args.clients_per_device 10 on 3 devices = 30 clients; client_num_per_round 4 and
    `run_simulation.sh 3`: 3 worker ranks, each holding 10 clients; each round FedML's seeded sample of 4, each
    client trained by the worker that holds it (client i at rank 1 + i % 3; a worker with two sampled clients
    trains both); every client evaluated; metrics per client and per device (a device's counts are its
    clients' sums)."""
    from fedml.cross_silo.server.fedml_aggregator import FedMLAggregator

    cfg = sim_config(tmp_path, data_args__clients_per_device=10, train_args__client_num_in_total=None,
                     train_args__client_num_per_round=4, train_args__comm_round=3, validation_args__frequency_of_the_test=3,
                     train_args__model_average_rounds=10)
    proc = run_sim("3", cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FedIoT simulation: 30 clients on 3 worker ranks" in proc.stdout
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    clients = [f"{d}#{i}" for d in DEVICES for i in range(1, 11)]
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    for r in rounds:
        assert r["sampled"] == [clients[i] for i in sorted(FedMLAggregator.client_sampling(None, r["round"] - 1, 30, 4))]
        assert r["clients"] == sorted(r["sampled"]), r
        assert r["workers"] == {c: 1 + clients.index(c) % 3 for c in r["sampled"]}, r
    m = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(m["clients"]) == sorted(clients) and sorted(m["devices"]) == sorted(DEVICES)
    for d in DEVICES:
        mine = [m["clients"][c] for c in clients if c.startswith(d + "#")]
        assert m["devices"][d]["n_benign_test"] == sum(c["n_benign_test"] for c in mine) == 120
        assert m["devices"][d]["modes"]["global"]["fp"] == sum(c["modes"]["global"]["fp"] for c in mine)
    assert m["global"]["tpr"] > 0.9
    # the evaluated and saved model: the mean of the global models after rounds 2..3 (the second half)
    assert rounds[-1]["eval_model_rounds"] == [2, 3] and m["model"]["average_of_rounds"] == [2, 3]
    # model.pt is that model: `score --reevaluate` (each client's rows cut as the run cut them) gives the same counts
    sys.path.insert(0, str(REPO))
    from score import reevaluate
    again = reevaluate(run_dir)
    for key in ("tp", "fp", "tn", "fn"):
        assert again["global"][key] == m["global"][key], key
    assert {c: again["clients"][c]["modes"]["device"]["fp"] for c in clients} == \
        {c: m["clients"][c]["modes"]["device"]["fp"] for c in clients}
    resources = [json.loads((run_dir / "resources" / f"rank{r}.json").read_text()) for r in (1, 2, 3)]
    assert [x["device"] for x in resources] == ["10 clients"] * 3
