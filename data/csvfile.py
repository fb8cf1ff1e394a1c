"""Writing feature CSVs: numpy only, so that detect (the board's torch-free runtime) writes alert evidence without
pandas; data.loader.read_feature_csv reads them back."""
from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np

from data import nbaiot


def write_feature_csv(target: str | Path | IO[str], rows: np.ndarray, columns: tuple[str, ...] = nbaiot.COLUMNS) -> None:
    """A feature CSV (header + `columns`, each value as %.10g) that read_feature_csv reads back. numpy's writer: ~4x
    faster than pandas' to_csv with a float format, which formats value by value in Python (capture spent 27 of its
    35 s there on 80,000 rows)."""
    if rows.ndim != 2 or rows.shape[1] != len(columns):
        raise ValueError(f"rows of shape {rows.shape}; expected (n, {len(columns)})")
    np.savetxt(target, rows, fmt="%.10g", delimiter=",", header=",".join(columns), comments="")
