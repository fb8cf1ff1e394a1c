"""How much of a dataset's benign feature values fall inside real N-BaIoT benign ranges, per column group.

    python -m traffic.compare_ranges DATA_DIR [--devices ...]
Reference: data/reference/nbaiot_benign_{min,max}.txt (per-feature min/max over 5,000 benign rows of
each of the 9 N-BaIoT devices).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data import nbaiot
from data.loader import read_feature_csv

REF = Path(__file__).resolve().parents[1] / "data" / "reference"


def inside_fractions(rows: np.ndarray) -> dict[str, float]:
    lo = np.loadtxt(REF / "nbaiot_benign_min.txt")
    hi = np.loadtxt(REF / "nbaiot_benign_max.txt")
    inside = (rows >= lo) & (rows <= hi)
    out = {}
    for group in nbaiot.COLUMN_GROUPS:
        cols = [i for i, c in enumerate(nbaiot.COLUMNS) if c.rsplit("_", 2)[0] == group]
        out[group] = float(inside[:, cols].mean())
    out["all"] = float(inside.mean())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--devices", nargs="*", default=None)
    a = ap.parse_args(argv)
    devices = a.devices or [d for d in nbaiot.DEVICES if (a.data_dir / d / nbaiot.BENIGN_FILE).is_file()]
    print("| device | " + " | ".join(nbaiot.COLUMN_GROUPS) + " | all |")
    print("|---|" + "---|" * (len(nbaiot.COLUMN_GROUPS) + 1))
    for d in devices:
        f = inside_fractions(read_feature_csv(a.data_dir / d / nbaiot.BENIGN_FILE))
        print(f"| {d} | " + " | ".join(f"{f[g]:.3f}" for g in (*nbaiot.COLUMN_GROUPS, "all")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
