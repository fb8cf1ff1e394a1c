"""More clients than devices: one device's split cut into `clients_per_device` clients (households).

Each client keeps time order and gets its own slice of every part of the device's split: training,
validation, benign test rows and each attack file, cut at the same proportions, so its threshold, FPR
and TPR are its own and the device's rows are exactly the union of its clients' (disjoint, nothing
left out). `contiguous` gives equal consecutive time slices; `dirichlet` draws the proportions from
Dirichlet(alpha, ..., alpha) (seeded per device: smaller alpha, more uneven clients), still as
consecutive slices. Every client gets at least MIN_CLIENT_ROWS rows of training, validation and test.
"""
from __future__ import annotations

import numpy as np

from data.loader import DeviceSplit
from fediot.config import client_name, device_number
from data.settings import PARTITIONS
from fediot.errors import DataError

MIN_CLIENT_ROWS = 2


def proportions(k: int, method: str, alpha: float, seed: int, device: str) -> np.ndarray:
    """Each client's share of every part of the device's rows (sums to 1)."""
    if method == "contiguous":
        return np.full(k, 1.0 / k)
    if method == "dirichlet":
        rng = np.random.default_rng([seed, device_number(device), 3])
        return rng.dirichlet(np.full(k, float(alpha)))
    raise ValueError(f"unknown partition {method!r}; expected one of {PARTITIONS}")


def cut_points(n_rows: int, shares: np.ndarray, minimum: int) -> np.ndarray:
    """Boundaries (len k + 1) of consecutive slices of n_rows with the given shares, each >= minimum rows."""
    k = len(shares)
    spare = n_rows - minimum * k
    extra = np.floor(np.cumsum(shares) * spare + 1e-9).astype(np.int64)
    extra[-1] = spare
    return np.concatenate([[0], extra + minimum * np.arange(1, k + 1)])


def partition_split(split: DeviceSplit, k: int, method: str = "contiguous", alpha: float = 0.5,
                    seed: int = 0) -> list[DeviceSplit]:
    """The device's split as k clients' splits (see module docstring)."""
    if k == 1:
        return [split]
    for part in ("train", "validation", "test"):
        n = len(getattr(split, part))
        if n < MIN_CLIENT_ROWS * k:
            raise DataError(f"{split.device}: {n} {part} rows cannot give {k} clients (data_args.clients_per_device) "
                            f"at least {MIN_CLIENT_ROWS} rows each; use fewer clients per device or more rows")
    shares = proportions(k, method, alpha, seed, split.device)
    cuts = {part: cut_points(len(getattr(split, part)), shares, MIN_CLIENT_ROWS) for part in ("train", "validation", "test")}
    attack_cuts = {name: cut_points(len(rows), shares, 0) for name, rows in split.attacks.items()}
    return [DeviceSplit(device=client_name(split.device, i + 1, k),
                        train=split.train[cuts["train"][i]:cuts["train"][i + 1]],
                        validation=split.validation[cuts["validation"][i]:cuts["validation"][i + 1]],
                        test=split.test[cuts["test"][i]:cuts["test"][i + 1]],
                        attacks={name: rows[attack_cuts[name][i]:attack_cuts[name][i + 1]]
                                 for name, rows in split.attacks.items()},
                        missing_attacks=list(split.missing_attacks),
                        rows_per_day=None if split.rows_per_day is None else split.rows_per_day * float(
                            (cuts["validation"][i + 1] - cuts["validation"][i]) / len(split.validation)))
            for i in range(k)]
