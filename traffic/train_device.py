"""Train a single-device detector on simulated benign packets (for detect.py demos and tests).

    python -m traffic.train_device DEVICE --out model.pt [--seconds 1800] [--epochs 10] [--seed 1]
Simulator -> feature extractor -> first 60 % of rows train the autoencoder (log1p + z-score fitted on
them), the next 20 % set the threshold (mean + k*std), the last 20 % give the held-out FPR.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data import nbaiot
from fediot.config import validate
from fediot.console import say
from model.detector import Detector
from traffic.dataset import features_of
from traffic.simulator import TrafficSimulator


def train_device_detector(device: str, seconds: float = 1800, epochs: int = 10, seed: int = 1,
                          k: float = 3.0) -> tuple[Detector, float]:
    """(detector, held-out benign FPR) for one device's simulated benign traffic."""
    _, rows = features_of(TrafficSimulator(device, seed=seed).capture(seconds))
    n = len(rows)
    train, val, test = rows[: int(0.6 * n)], rows[int(0.6 * n): int(0.8 * n)], rows[int(0.8 * n):]
    meta = {"kind": "single-device (simulated packets)", "devices": [device], "seconds": seconds, "seed": seed}
    det, _ = Detector.fit({device: train}, {device: val}, transform="log1p", normalization="zscore", epochs=epochs,
                          batch_size=64, lr=0.003, seed=seed, k=k, meta=meta)
    return det, float(np.mean(det.score(test) > det.threshold_for(device)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("device", choices=nbaiot.DEVICES)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(validate({}).device.torch_threads)  # 12 s instead of 32 s for the default 1,800 s on 2 cores
    detector, fpr = train_device_detector(a.device, a.seconds, a.epochs, a.seed)
    detector.save(a.out)
    say(f"{a.out}: {a.device}, threshold {detector.global_threshold:.5g}, held-out benign FPR {fpr:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
