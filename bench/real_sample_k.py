"""The threshold's k on real N-BaIoT rows: FPR and per-attack TPR at k = 3, 4, 5 (tests/data/nbaiot-real-sample).

    .venv/bin/python bench/real_sample_k.py [--ks 3 4 5] [--seeds 0 1 2] [--epochs 10 30 50]

The pipeline of tests/test_real_sample.py (one device's real benign rows: first 60 % train, 20 % validation, 20 %
test; three real attack files of 299 rows; log1p + z-score; the autoencoder trained `--epochs` epochs of batch 64 at
lr 0.003), per seed x epochs, each k applied to the same scores: the synthetic grids (bench/threshold_grid.py) cannot
say what a larger k costs on attacks close to benign traffic. Prints one table row per k: FPR and each attack file's
TPR, mean and range over the runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data.loader import DeviceData, read_feature_csv, split_device  # noqa: E402
from evaluation.scores import score_device  # noqa: E402
from model.autoencoder import AutoEncoder  # noqa: E402
from model.detector import ErrorStats, train_autoencoder  # noqa: E402
from model.normalization import Normalizer  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "nbaiot-real-sample"
ATTACK_FILES = {"gafgyt_udp": "doorbell_udp.csv", "gafgyt_scan": "scan.csv", "mirai_udp": "thermostat_udp.csv"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, nargs="+", default=[10, 30, 50])
    a = p.parse_args()
    torch.set_num_threads(1)
    benign = read_feature_csv(SAMPLE / "benign_traffic.csv")
    attacks = {k: read_feature_csv(SAMPLE / f) for k, f in ATTACK_FILES.items()}
    split = split_device(DeviceData("Danmini_Doorbell", benign, attacks), 0.6, 0.2)
    norm = Normalizer.fit(split.train, "log1p", "zscore")
    rows: dict[float, list[dict[str, float]]] = {k: [] for k in a.ks}
    for seed in a.seeds:
        for epochs in a.epochs:
            torch.manual_seed(seed)
            model = AutoEncoder(115)
            train_autoencoder(model, norm(split.train), epochs=epochs, batch_size=64, lr=0.003, seed=seed)
            s = score_device(model, norm, split)
            stats = ErrorStats.of(s.validation)
            for k in a.ks:
                t = stats.threshold(k)
                rows[k].append({"fpr": float(np.mean(s.test > t)),
                                **{name: float(np.mean(sc > t)) for name, sc in s.attacks.items()}})
    cols = ["fpr", *ATTACK_FILES]
    print(f"{len(a.seeds) * len(a.epochs)} runs (seeds {a.seeds} x epochs {a.epochs}); "
          f"{len(split.test)} benign test rows, 299 rows per attack file; mean (min-max)")
    print("| k | " + " | ".join(("FPR" if c == "fpr" else f"TPR {c}") for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for k, rs in rows.items():
        cells = [f"{np.mean([r[c] for r in rs]):.3f} ({min(r[c] for r in rs):.3f}-{max(r[c] for r in rs):.3f})"
                 for c in cols]
        print(f"| {k:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
