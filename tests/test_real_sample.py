"""Detection on real N-BaIoT rows (tests/data/nbaiot-real-sample, a copy of ../shared/data/nbaiot-real-sample)."""
import json
import shutil
import subprocess
import sys

import torch
import yaml

from data.loader import DeviceData, read_feature_csv, split_device
from evaluation.scores import score_device
from evaluation.scoring import evaluate, thresholds
from model.autoencoder import AutoEncoder
from model.detector import train_autoencoder
from model.normalization import Normalizer
from tests.helpers import REAL_SAMPLE, REPO

ATTACK_FILES = {"gafgyt_udp": "doorbell_udp.csv", "gafgyt_scan": "scan.csv", "mirai_udp": "thermostat_udp.csv"}


def test_detector_on_real_rows_without_fedml():
    """Normalise -> autoencoder -> score -> threshold, trained on the first 60 % of benign rows."""
    benign = read_feature_csv(REAL_SAMPLE / "benign_traffic.csv")
    attacks = {k: read_feature_csv(REAL_SAMPLE / f) for k, f in ATTACK_FILES.items()}
    split = split_device(DeviceData("Danmini_Doorbell", benign, attacks), 0.6, 0.2)
    norm = Normalizer.fit(split.train, "log1p", "zscore")
    torch.manual_seed(0)
    model = AutoEncoder(115)
    train_autoencoder(model, norm(split.train), epochs=30, batch_size=64, lr=0.003, seed=0)
    scores = [score_device(model, norm, split)]
    glob, per_dev = thresholds(scores, 3.0)
    m = evaluate(scores, glob, per_dev, window=5)["devices"]["Danmini_Doorbell"]
    assert m["n_benign_test"] == 61
    assert m["fpr"] <= 0.02
    for name, a in m["attacks"].items():
        assert a["n"] == 299 and a["tpr"] >= 0.99, (name, a)
    assert m["roc_auc"] > 0.99


def run_baselines_on(tmp_path) -> subprocess.CompletedProcess:
    """run_baselines.sh as a real process on the Danmini_Doorbell rows under tmp_path/data."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "common_args": {"run_dir_root": str(tmp_path / "runs")},
        "data_args": {"dataset": "nbaiot", "data_cache_dir": str(tmp_path / "data"),
                      "devices": ["Danmini_Doorbell"], "download": False},
    }))
    return subprocess.run(["bash", str(REPO / "run_baselines.sh"), str(cfg)], capture_output=True, text=True,
                          timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})


def test_local_baseline_process_on_real_rows(tmp_path):
    """run_baselines.sh as a real process: local-only model keeps held-out benign FPR <= 0.02."""
    dev = tmp_path / "data" / "Danmini_Doorbell"
    (dev / "gafgyt_attacks").mkdir(parents=True)
    (dev / "mirai_attacks").mkdir()
    shutil.copy(REAL_SAMPLE / "benign_traffic.csv", dev / "benign_traffic.csv")
    for attack, f in ATTACK_FILES.items():
        fam, _, kind = attack.partition("_")
        shutil.copy(REAL_SAMPLE / f, dev / f"{fam}_attacks" / f"{kind}.csv")
    proc = run_baselines_on(tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = REPO / proc.stdout.strip().splitlines()[-1]
    local = json.loads((run_dir / "local" / "metrics.json").read_text())
    d = local["devices"]["Danmini_Doorbell"]
    assert d["fpr"] <= 0.02
    assert {a: v["tpr"] >= 0.99 for a, v in d["attacks"].items()} == {a: True for a in ATTACK_FILES}
    assert sorted(d["missing_attacks"]) == sorted(set(
        ["gafgyt_combo", "gafgyt_junk", "gafgyt_tcp", "mirai_ack", "mirai_scan", "mirai_syn", "mirai_udpplain"]))
    assert json.loads((run_dir / "centralized" / "metrics.json").read_text())["data"]["source"] == "nbaiot"
    assert (run_dir / "local" / "model-Danmini_Doorbell.pt").is_file()
    assert "warning:" in proc.stderr and "7 attack file(s) missing" in proc.stderr and "gafgyt_attacks/combo.csv" in proc.stderr


def test_baselines_with_a_bad_row_leave_no_run_directory(tmp_path):
    """A short row is named by line and width, and no half-made run directory is left behind."""
    dev = tmp_path / "data" / "Danmini_Doorbell"
    dev.mkdir(parents=True)
    lines = (REAL_SAMPLE / "benign_traffic.csv").read_text().splitlines()
    lines[10] = ",".join(lines[10].split(",")[:100])
    (dev / "benign_traffic.csv").write_text("\n".join(lines) + "\n")
    proc = run_baselines_on(tmp_path)
    assert proc.returncode == 2
    assert "benign_traffic.csv: line 11 has 100 fields; expected 115" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
