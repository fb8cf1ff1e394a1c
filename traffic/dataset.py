"""Simulator -> extractor -> the per-device N-BaIoT layout (packet-level synthetic data).

    python -m traffic.dataset --dest DIR [--devices ...] [--benign-s 3600] [--attack-s 60] [--seed 0]
Benign rows: features of every packet of a benign capture. Attack rows: a capture of benign traffic
with the attack starting after a warm-up; rows of the packets from the attack start on (as N-BaIoT
recorded the infected device while it attacked).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from data import nbaiot
from data.csvfile import write_feature_csv
from fediot.console import say
from traffic.afterimage import FEATURES_VERSION, FeatureExtractor
from traffic.packets import frames_batch
from traffic.simulator import EPOCH, TrafficSimulator

MARKER_FILE = "SYNTHETIC_DATA.txt"
WARMUP_S = 30.0


def features_of(packets: list[tuple[float, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, N-BaIoT rows) of simulated frames (the 115 columns: this dataset stands in for N-BaIoT)."""
    batch = frames_batch(packets)
    return np.asarray(batch.time), FeatureExtractor().transform(batch)[:, :nbaiot.N_FEATURES]


def _write(path: Path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_feature_csv(path, rows)


def write_device(root: Path, device: str, seed: int, benign_s: float, attack_s: float) -> Path:
    """One device directory, built in a temp dir and renamed into place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{device}.", dir=root))
    try:
        sim = TrafficSimulator(device, seed)
        _, rows = features_of(sim.capture(benign_s))
        _write(tmp / nbaiot.BENIGN_FILE, rows)
        for i, attack in enumerate(nbaiot.attack_names(device)):
            sim = TrafficSimulator(device, seed * 100 + i + 1)
            start = EPOCH + 10 * benign_s  # separate capture, later in time
            times, rows = features_of(sim.capture(WARMUP_S + attack_s, attack, WARMUP_S, attack_s, start=start))
            _write(tmp / nbaiot.attack_relpath(attack), rows[times >= start + WARMUP_S])
        target = root / device
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_packet_synthetic(root: str | Path, devices: list[str], seed: int, benign_s: float, attack_s: float) -> Path:
    """Generate (once) packet-level synthetic data under root/packets-v<features>-seed<s>-b<benign_s>-a<attack_s>/."""
    out = Path(root) / f"packets-v{FEATURES_VERSION}-seed{seed}-b{benign_s:g}-a{attack_s:g}"
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER_FILE
    if not marker.exists():
        marker.write_text("SYNTHETIC data: traffic/simulator.py packets -> traffic/afterimage.py features "
                          f"(not real N-BaIoT traffic). seed={seed} benign_s={benign_s} attack_s={attack_s}\n")
    for device in devices:
        if not (out / device / nbaiot.BENIGN_FILE).exists():
            say(f"simulating packets for {device} ({benign_s:g}s benign, {attack_s:g}s per attack)")
            write_device(out, device, seed, benign_s, attack_s)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--devices", nargs="*", default=list(nbaiot.DEVICES), choices=nbaiot.DEVICES)
    ap.add_argument("--benign-s", type=float, default=3600.0)
    ap.add_argument("--attack-s", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = ensure_packet_synthetic(a.dest, a.devices, a.seed, a.benign_s, a.attack_s)
    say(str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
