"""Relations between N-BaIoT columns that follow from how the features are defined.

They hold (or, for `hphp_above_pair`, occur) in the real N-BaIoT rows, so they pin the definitions our
extractor must share with the one that made the dataset: which stream each column group is keyed by,
what "radius" and "std" are, and how the first jitter is measured. The same checks run on the
dataset's rows and on our extractor's output (tests/test_feature_relations.py; doc/features.md).

    python -m traffic.feature_relations FILE.csv [FILE.csv ...]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data import nbaiot

LAMBDA_NAMES = ("5", "3", "1", "0.1", "0.01")
# Relative tolerance for equalities: CSV values carry ~10 significant digits, some only 3.
RTOL = 1e-3
# A std below this (bytes) is rounding noise in the CSV, too small to test radius = std^2 on.
MIN_STD = 1e-3
# Any jitter this large is a Unix timestamp (seconds since 1970), not a gap between packets.
TIMESTAMP_S = 1e8
# Relations that need not hold on every row but show a definition where they do.
OCCURRENCES = {"hh_below_host", "hphp_above_pair"}


@dataclass
class Relation:
    """One relation on a set of rows (row x decay factor pairs).

    always=True: `count` rows break a relation that must hold wherever it applies.
    always=False: a relation that need not hold everywhere but shows a definition where it does;
    `count` rows show it.
    """

    name: str
    meaning: str
    always: bool
    applies: int
    count: int

    @property
    def holds(self) -> bool:
        """An always-relation with no exception, or an occurrence seen at least once."""
        return self.count == 0 if self.always else self.count > 0

    def describe(self) -> str:
        if self.always:
            return f"holds in all {self.applies}" if self.holds else f"BROKEN in {self.count} of {self.applies}"
        return f"occurs in {self.count} of {self.applies}"


def _c(rows: pd.DataFrame, name: str) -> np.ndarray:
    return rows[name].to_numpy(dtype=np.float64)


def check(rows: pd.DataFrame) -> list[Relation]:
    """Every relation on `rows` (the dataset's 115 columns), over all five decay factors."""
    missing = [c for c in nbaiot.COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack N-BaIoT columns, e.g. {missing[:3]}")
    out: dict[str, list[int]] = {}

    def add(name: str, applies: np.ndarray, counted: np.ndarray) -> None:
        """counted: rows breaking an always-relation, or rows showing an occurrence."""
        a = out.setdefault(name, [0, 0])
        a[0] += int(applies.sum())
        a[1] += int((applies & counted).sum())

    n = len(rows)
    every = np.ones(n, dtype=bool)
    for lam in LAMBDA_NAMES:
        h_w = _c(rows, f"H_L{lam}_weight")
        hh_w = _c(rows, f"HH_L{lam}_weight")
        hp_w = _c(rows, f"HpHp_L{lam}_weight")
        jit_w = _c(rows, f"HH_jit_L{lam}_weight")
        slack = RTOL * h_w
        add("hh_within_host", every, hh_w > h_w + slack)
        add("hh_below_host", every, hh_w < h_w - slack)
        add("hphp_within_host", every, hp_w > h_w + slack)
        add("hphp_above_pair", every, hp_w > hh_w * (1 + RTOL))
        add("jitter_same_channel", every, ~np.isclose(jit_w, hh_w, rtol=RTOL))
        for s in ("HH", "HpHp"):
            mean, std = _c(rows, f"{s}_L{lam}_mean"), _c(rows, f"{s}_L{lam}_std")
            mag, radius = _c(rows, f"{s}_L{lam}_magnitude"), _c(rows, f"{s}_L{lam}_radius")
            reverse_unseen = np.isclose(mag, mean, rtol=1e-9) & (std > MIN_STD)
            add("radius_is_variance_when_alone", reverse_unseen, ~np.isclose(radius, std ** 2, rtol=RTOL))
            add("covariance_zero_when_alone", np.isclose(mag, mean, rtol=1e-9), _c(rows, f"{s}_L{lam}_covariance") != 0.0)
        same_stream = (np.isclose(hh_w, h_w, rtol=1e-9) & np.isclose(_c(rows, f"HH_L{lam}_mean"), _c(rows, f"H_L{lam}_mean"),
                                                                      rtol=1e-9) & (_c(rows, f"H_L{lam}_variance") > 1.0))
        add("std_is_sqrt_variance", same_stream,
            ~np.isclose(_c(rows, f"HH_L{lam}_std") ** 2, _c(rows, f"H_L{lam}_variance"), rtol=RTOL))
    first_packet = np.isclose(_c(rows, "HH_jit_L0.01_weight"), 1.0, rtol=0, atol=1e-12)
    add("first_jitter_is_timestamp", first_packet, ~(_c(rows, "HH_jit_L0.01_mean") > TIMESTAMP_S))
    meaning = {
        "hh_within_host": "HH weight <= H weight: HH is a sub-stream of the source IP",
        "hh_below_host": "HH weight < H weight: HH is keyed by the IP pair, not the source IP",
        "hphp_within_host": "HpHp weight <= H weight: HpHp is a sub-stream of the source IP",
        "hphp_above_pair": "HpHp weight > HH weight: HpHp is not inside the IP pair's stream",
        "jitter_same_channel": "HH_jit weight = HH weight: jitter and HH share one channel key",
        "radius_is_variance_when_alone": "reverse stream unseen (magnitude = mean): radius = std^2, "
                                         "i.e. radius = sqrt(var_A^2 + var_B^2)",
        "covariance_zero_when_alone": "reverse stream unseen: covariance = 0",
        "std_is_sqrt_variance": "where HH and H are one stream (same weight and mean): HH std^2 = H variance",
        "first_jitter_is_timestamp": "first packet of a channel (HH_jit_L0.01 weight = 1): jitter mean is a "
                                     "Unix timestamp, i.e. measured from t = 0",
    }
    return [Relation(k, meaning[k], k not in OCCURRENCES, a, c) for k, (a, c) in out.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    a = p.parse_args(argv)
    for f in a.files:
        try:
            rows = pd.read_csv(f)
            relations = check(rows)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            print(f"error: {f}: {exc}", file=sys.stderr)
            return 2
        print(f"{f}: {len(rows)} rows x {len(LAMBDA_NAMES)} decay factors")
        for r in relations:
            print(f"  {r.name:30s} {r.describe():26s} {r.meaning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
