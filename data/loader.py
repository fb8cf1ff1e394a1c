"""Read N-BaIoT CSV files with strict validation, and split a device's rows for training/testing."""
from __future__ import annotations

import csv
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data import nbaiot
from fediot.config import SECONDS_PER_DAY
from fediot.errors import DataError

log = logging.getLogger("fediot.data")


def read_feature_csv(path: str | Path, columns: tuple[str, ...] = nbaiot.COLUMNS) -> np.ndarray:
    """Read one feature CSV (header + `columns`: N-BaIoT's 115, or captured rows' 135) into a float64 array.

    Raises DataError naming the file (and line) on: missing/empty file, wrong header or column
    count, non-numeric cells, NaN or Inf.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty; expected a header with {len(columns)} feature columns and data rows")
    try:
        with warnings.catch_warnings():
            # a row with more fields than the header is an error, not a silent index column
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(p, low_memory=False, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(_field_count_message(p, len(columns)) or f"{p}: a data row has more fields than the header; "
                        f"expected {len(columns)} per row") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: file is empty; expected a header with {len(columns)} feature columns") from None
    except pd.errors.ParserError as exc:
        wrong_width = _field_count_message(p, len(columns))
        if wrong_width:
            raise DataError(wrong_width) from None
        raise DataError(f"{p}: not a well-formed CSV ({str(exc).strip()}); expected {len(columns)} comma-separated columns per row") from None
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text CSV file") from None
    header = [str(c).strip() for c in frame.columns]
    if len(header) != len(columns):
        again = (" (rows captured by an earlier FedIoT, without the fan-out extension: capture again)"
                 if columns == nbaiot.CAPTURED_COLUMNS and tuple(header) == nbaiot.COLUMNS else "")
        kind = "N-BaIoT" if columns == nbaiot.COLUMNS else "captured rows'"
        raise DataError(f"{p}: header has {len(header)} columns; expected the {len(columns)} {kind} columns "
                        f"({columns[0]}, ..., {columns[-1]}){again}")
    if tuple(header) != columns:
        bad = next(i for i, (a, b) in enumerate(zip(header, columns)) if a != b)
        raise DataError(f"{p}: column {bad + 1} is {header[bad]!r}; expected {columns[bad]!r} (column order)")
    if len(frame) == 0:
        raise DataError(f"{p}: header only, no data rows")
    if any(dtype == object for dtype in frame.dtypes):
        for col in frame.columns[frame.dtypes == object]:
            coerced = pd.to_numeric(frame[col], errors="coerce")
            bad_rows = np.flatnonzero(coerced.isna().to_numpy() & frame[col].notna().to_numpy())
            if len(bad_rows):
                r = int(bad_rows[0])
                raise DataError(f"{p}: line {r + 2}, column {col!r}: {frame[col].iloc[r]!r} is not a number")
    values = frame.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        short_row = _field_count_message(p, len(columns))  # a short row shows up as NaN in its last columns
        if short_row:
            raise DataError(short_row)
        r, c = map(int, np.argwhere(~finite)[0])
        raise DataError(f"{p}: line {r + 2}, column {columns[c]!r}: value {values[r, c]} (empty, NaN or Inf); expected a finite number")
    return values


def _field_count_message(path: Path, width: int) -> str | None:
    """'<file>: line 11 has 100 fields; expected 115' for the first row of the wrong width, if any."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if row and len(row) != width:
                return f"{path}: line {line_no} has {len(row)} fields; expected {width}"
    return None


def evenly_spaced(rows: np.ndarray, limit: int | None) -> np.ndarray:
    """At most `limit` rows, evenly spaced over the whole file, in their original order."""
    if limit is None or len(rows) <= limit:
        return rows
    idx = np.linspace(0, len(rows) - 1, num=limit).round().astype(int)
    return rows[idx]


@dataclass
class DeviceData:
    """One device's rows as read from disk (before splitting)."""

    device: str
    benign: np.ndarray
    attacks: dict[str, np.ndarray] = field(default_factory=dict)
    missing_attacks: list[str] = field(default_factory=list)
    rows_per_day: float | None = None  # captured rows: how many a day the device makes (None: rows without time)
    verdicts: np.ndarray | None = None  # rows of "this was benign" verdicts (python -m triage): training rows only


VERDICTS_DIR = "benign_verdicts"  # a local device's benign-verdict rows: <episode>.csv (python -m triage benign)


def verdict_rows(ddir: Path, columns: tuple[str, ...], benign_rows: int, share: float) -> np.ndarray | None:
    """The device's benign-verdict rows, oldest verdict first, cut to `share` of its captured benign rows (the bound
    python -m triage enforces, again here: the files are on disk for anyone to add to)."""
    files = sorted((ddir / VERDICTS_DIR).glob("*.csv"), key=lambda f: (f.stat().st_mtime, f.name))
    if not files or share <= 0:
        return None
    allowed = int(share * benign_rows)
    parts, n = [], 0
    for f in files:
        if n >= allowed:
            log.warning("%s: benign-verdict rows beyond %d (detect_args.benign_verdict_share %g of %d benign rows) "
                        "not used: %s and later", ddir.name, allowed, share, benign_rows, f.name)
            break
        rows = read_feature_csv(f, columns)[: allowed - n]
        parts.append(rows)
        n += len(rows)
    return np.vstack(parts) if parts else None


def device_dir(cache_dir: str | Path, device: str) -> Path:
    return Path(cache_dir) / device


PROVENANCE_FILE = "provenance.json"  # what python -m capture records beside a local device's rows
SIMULATED_ATTACKS_DIR = "simulated_attacks"  # a local device's attack rows: <attack>.csv, made by python -m capture


def captured_rows_per_day(ddir: Path) -> float | None:
    """Rows a day of a captured device (`python -m capture`'s provenance: its rows over the seconds its captures
    span); None when the provenance is missing, unreadable or spans no time."""
    try:
        record = json.loads((ddir / PROVENANCE_FILE).read_text())
        rows, seconds = float(record["rows"]), float(record["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (np.isfinite(rows) and np.isfinite(seconds)) or rows <= 0 or seconds <= 0:
        return None
    return rows / seconds * SECONDS_PER_DAY


def load_device(cache_dir: str | Path, device: str, max_benign_rows: int | None = None,
                attack_test_rows: int | None = None, load_attacks: bool = True, local: bool = False,
                verdict_share: float = 0.0) -> DeviceData:
    """Load one device's benign rows (first `max_benign_rows`) and its attack files.

    Attack files that are absent are skipped with a warning and listed in `missing_attacks`. A local device (your
    own, `local`) has no recorded attacks: its attack rows are the simulated ones `python -m capture` mixed into its
    own traffic (DEVICE/simulated_attacks/<attack>.csv), whichever of N-BaIoT's attack names are there, and its
    benign verdicts (DEVICE/benign_verdicts/*.csv, at most `verdict_share` of its benign rows) are training rows.
    """
    if not local:
        nbaiot.check_device(device)
    ddir = device_dir(cache_dir, device)
    benign_path = ddir / nbaiot.BENIGN_FILE
    if not benign_path.is_file():
        raise DataError(f"{benign_path}: benign traffic file not found for device {device}")
    columns = nbaiot.feature_columns("local" if local else "nbaiot")
    benign = read_feature_csv(benign_path, columns)
    if max_benign_rows is not None:
        benign = benign[:max_benign_rows]
    data = DeviceData(device=device, benign=benign)
    if local:
        data.verdicts = verdict_rows(ddir, columns, len(benign), verdict_share)
    if not load_attacks:
        return data
    if local:
        data.rows_per_day = captured_rows_per_day(ddir)
        for attack in nbaiot.all_attack_names():
            path = ddir / SIMULATED_ATTACKS_DIR / f"{attack}.csv"
            if path.is_file():
                data.attacks[attack] = evenly_spaced(read_feature_csv(path, columns), attack_test_rows)
        if not data.attacks:
            log.warning("%s: no simulated attack rows under %s (python -m capture --simulate-attacks makes them); TPR "
                        "cannot be measured for this device", device, ddir / SIMULATED_ATTACKS_DIR)
        return data
    for attack in nbaiot.attack_names(device):
        path = ddir / nbaiot.attack_relpath(attack)
        if not path.is_file():
            data.missing_attacks.append(attack)
            continue
        data.attacks[attack] = evenly_spaced(read_feature_csv(path), attack_test_rows)
    if data.missing_attacks:
        log.warning("%s: %d attack file(s) missing under %s, skipped: %s", device, len(data.missing_attacks), ddir,
                    ", ".join(nbaiot.attack_relpath(a).as_posix() for a in data.missing_attacks))
    if not data.attacks:
        log.warning("%s: no attack files found under %s; TPR cannot be measured for this device", device, ddir)
    return data


@dataclass
class DeviceSplit:
    """Chronological split of one device: benign train / validation (threshold) / test, attack test rows."""

    device: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    attacks: dict[str, np.ndarray]
    missing_attacks: list[str]
    rows_per_day: float | None = None  # the device's (or this client's share of it): None for rows without time


def split_counts(n_rows: int, train_fraction: float, validation_fraction: float) -> tuple[int, int, int]:
    """Row counts of the chronological train / validation / test parts."""
    n_train = int(n_rows * train_fraction)
    n_val = int(n_rows * validation_fraction)
    return n_train, n_val, n_rows - n_train - n_val


MIN_SPLIT_ROWS = 2
GOLDEN = (5 ** 0.5 - 1) / 2  # blocks dealt by the fractional parts of multiples of it: evenly spread


def split_device(data: DeviceData, train_fraction: float, validation_fraction: float,
                 block_rows: int | None = None) -> DeviceSplit:
    """Split benign rows in time order: first train, then validation, then test; with `block_rows`, in blocks of that
    many consecutive rows dealt to the three parts in their shares (a golden-ratio sequence: every stretch of the
    capture gives each part its share), each part keeping its blocks in time order."""
    n_train, n_val, n_test = split_counts(len(data.benign), train_fraction, validation_fraction)
    if min(n_train, n_val, n_test) < MIN_SPLIT_ROWS:
        raise DataError(
            f"{data.device}: {len(data.benign)} benign rows give train/validation/test = {n_train}/{n_val}/{n_test}; "
            f"each part needs at least {MIN_SPLIT_ROWS} rows (more benign rows or other data_args fractions)"
        )
    b = data.benign
    if block_rows is None:
        parts = (b[:n_train], b[n_train:n_train + n_val], b[n_train + n_val:])
    else:
        block = np.arange(len(b)) // block_rows
        u = np.mod((block + 0.5) * GOLDEN, 1.0)
        role = np.where(u < train_fraction, 0, np.where(u < train_fraction + validation_fraction, 1, 2))
        parts = tuple(b[role == k] for k in range(3))
        if min(len(p) for p in parts) < MIN_SPLIT_ROWS:
            raise DataError(f"{data.device}: {len(b)} benign rows in blocks of {block_rows} give train/validation/test "
                            f"= {'/'.join(str(len(p)) for p in parts)}; each part needs at least {MIN_SPLIT_ROWS} rows "
                            "(smaller data_args.split_block_rows or more rows)")
    train = parts[0] if data.verdicts is None else np.vstack([parts[0], data.verdicts])
    return DeviceSplit(
        device=data.device,
        train=train,
        validation=parts[1],
        test=parts[2],
        attacks=data.attacks,
        missing_attacks=list(data.missing_attacks),
        rows_per_day=data.rows_per_day,
    )
