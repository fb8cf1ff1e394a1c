"""The MPI simulation as real processes: run_simulation.sh -> mpirun -> FedML -> our nodes on the MPI transport.

What is about processes lives here (the launcher, mpirun and host files, ranks, FedML's output kept in logs, worker
ranks holding many clients); the round rules run on the in-process grid (tests/test_rounds.py), and each MPI run
here is checked to give the metrics.json that grid gives for the same config."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.detector import Detector
from tests.helpers import REPO
from tests.rounds import DEVICES, assert_same_metrics, metrics_of, run, sim_values


def sim_config(tmp_path: Path, **over) -> Path:
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(sim_values(tmp_path, **over)))
    return path


def run_sim(n: str, cfg: Path, timeout: int = 300, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["sh", str(REPO / "run_simulation.sh"), n, str(cfg), *extra], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


THIRTY = dict(data_args__clients_per_device=10, train_args__client_num_in_total=None,
              train_args__client_num_per_round=4, train_args__comm_round=3, validation_args__frequency_of_the_test=3,
              train_args__model_average_rounds=10)
THIRTY_CLIENTS = [f"{d}#{i}" for d in DEVICES for i in range(1, 11)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The MPI run: data_args.clients_per_device 10 on 3 devices = 30 clients, 4 per round, `run_simulation.sh 3`
    through a host file that lists this machine's slots (so `--hostfile` is shown to reach mpirun): 3 worker ranks
    holding 10 clients each; each sampled client is trained by the worker that holds it (client i at rank
    1 + i % 3; a worker with two sampled clients trains both)."""
    tmp = tmp_path_factory.mktemp("sim")
    hosts = tmp / "hosts"
    hosts.write_text("# the cluster: this machine only\nlocalhost slots=4\n")
    proc = run_sim("3", sim_config(tmp, **THIRTY, status_args__port=0), 300, "--hostfile", str(hosts))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"hosts from {hosts}: localhost" in proc.stderr
    return proc, tmp


def test_simulation_writes_run_directory(finished_run):
    finished_run, tmp = finished_run
    lines = finished_run.stdout.strip().splitlines()
    run_dir = Path(lines[-1])  # the run directory is the last line of output
    # the launcher's own lines around the driver's (README's sample output shows them)
    assert lines[0] == f"FedIoT simulation: 30 clients on 3 worker ranks, 3 rounds, data synthetic; run directory {run_dir}"
    assert lines[-2] == f"outputs: metrics.json, rounds.jsonl, model.pt, config.yaml, logs/ in {run_dir}"
    assert "clients: 30: " in finished_run.stdout and " on 3 worker ranks" in finished_run.stdout
    for name in ("metrics.json", "rounds.jsonl", "model.pt", "config.yaml"):
        assert (run_dir / name).is_file(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["data"]["source"] == "synthetic" and m["data"]["synthetic"] is True
    assert set(m["devices"]) == set(DEVICES)
    for key in ("tpr", "fpr", "precision", "f1", "roc_auc", "pr_auc"):
        assert isinstance(m["global"][key], float)
    assert set(m["devices"]["Ennio_Doorbell"]["attacks"]) == {f"gafgyt_{k}" for k in ("combo", "junk", "scan", "tcp", "udp")}
    assert m["global"]["tpr"] > 0.9
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert r["workers"] == {c: 1 + THIRTY_CLIENTS.index(c) % 3 for c in r["sampled"]}, r
        assert set(r["client_losses"]) == set(r["sampled"]) and r["wall_time_s"] >= 0
    resources = [json.loads((run_dir / "resources" / f"rank{r}.json").read_text()) for r in (1, 2, 3)]
    assert [x["device"] for x in resources] == ["10 clients"] * 3
    # the simulation served the status page as a deployment does (README "Watching a deployment")
    status = json.loads((run_dir / "status.json").read_text())
    assert f"status page: {status['url']}" in finished_run.stdout and status["host"] == "127.0.0.1"
    # the round rules themselves run on the in-process grid (tests/test_rounds.py): the MPI run gives its metrics
    _, _, in_process = run(sim_values(tmp / "in-process", **THIRTY))
    assert_same_metrics(m, metrics_of(in_process))
    # FedML's own chatter stays out of our console output and goes to the run's log files
    assert "FedML" not in finished_run.stdout and "INFO" not in finished_run.stdout
    assert list((run_dir / "logs").glob("fedml-rank*.log"))


def test_checkpoint_reloads_and_reproduces_metrics(finished_run):
    finished_run, _ = finished_run
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
    assert det.global_threshold == pytest.approx(saved["global"]["modes"]["global"]["threshold"])
    assert set(det.device_thresholds) == set(THIRTY_CLIENTS) | set(DEVICES)  # each client's, and its device's


def test_score_cli_on_new_rows(finished_run, tmp_path):
    finished_run, _ = finished_run
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


def test_host_file_naming_an_unknown_host_fails_in_mpirun(tmp_path):
    """A host file that lists this machine's slots runs (the smoke run above); one naming an unknown host fails."""
    env = {**os.environ, "PYTHON": sys.executable}
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


def test_ranks_whose_messages_are_refused_end_with_the_run(tmp_path):
    """Issue 34 (3): a rank whose feature statistics overflow is refused and left out; it used to go on saying hello
    after the run ended (run_simulation.sh not back 14 minutes later). The server's FINISH reaches every rank."""
    import time

    cfg = sim_config(tmp_path, train_args__comm_round=2, validation_args__frequency_of_the_test=2,
                     attack_args__malicious_ranks=[2], attack_args__attack="stats_overflow")
    started = time.monotonic()
    proc = run_sim("3", cfg, 240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run_dir = next((tmp_path / "runs").glob("*"))
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and DEVICES[1] not in rounds[-1]["clients"]
    assert time.monotonic() - started < 200
