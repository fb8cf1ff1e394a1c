"""data_args: where rows come from and how each device's rows are split (data/)."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import MAX_CLIENTS, is_int, is_num, setting

PARTITIONS = ("contiguous", "dirichlet")


@dataclass(frozen=True)
class DataArgs:
    """Where rows come from and how each device's rows are split."""

    dataset: str = setting('nbaiot', 'nbaiot (real data), synthetic (N-BaIoT-shaped generated data) or local (your own devices: rows captured from their traffic with python -m capture, devices named as you like)', choices=('nbaiot', 'synthetic', 'local'), fedml=True)
    data_cache_dir: str = setting('data/cache/nbaiot', 'per-device N-BaIoT layout lives here (relative to repo)')
    local_data_dir: str = setting('data/local', "local: your devices' captured rows, one directory per device (python -m capture writes them; relative to the repo)")
    devices: list[str] = setting('all', "'all' or a list of device names (nbaiot/synthetic: UCI names; local: your own names, letters, digits, _ . -); with one client per device, client rank r gets devices[r-1]")
    clients_per_device: int = setting(1, "clients made from each device's rows (households): its training, validation, test and attack rows cut into this many consecutive slices, client names 'Device#i' (data/partition.py); simulation only", check=(lambda v: is_int(v) and 1 <= v <= MAX_CLIENTS, f'an integer in 1..{MAX_CLIENTS}'))
    partition: str = setting('contiguous', 'how a device is cut into clients: contiguous (equal time slices) or dirichlet (slice sizes drawn from Dirichlet(partition_alpha), seeded)', choices=PARTITIONS)
    partition_alpha: float = setting(0.5, 'dirichlet: concentration (smaller = more uneven clients)', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    train_fraction: float = setting(0.6, "first fraction of each device's benign rows (chronological, or its share of the blocks: split_block_rows) used for training", check=(lambda v: is_num(v) and 0 < v < 1, 'a number in (0, 1)'))
    validation_fraction: float = setting(0.2, 'next fraction: held-out benign rows that set the threshold', check=(lambda v: is_num(v) and 0 < v < 1, 'a number in (0, 1)'))
    split_block_rows: int | None = setting(None, "null: each device's rows split chronologically (N-BaIoT's protocol); a number: blocks of this many rows dealt to training / validation / test over the whole capture", check=(lambda v: v is None or (is_int(v) and v >= 1), 'null or an integer >= 1'))
    local_split_block_s: float = setting(3600.0, "captured rows (dataset local) when split_block_rows is null: blocks of this many seconds of the device's rows; chronological when the capture holds too few blocks", check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    max_benign_rows: int | None = setting(None, 'use at most this many benign rows per device (null = all)', check=(lambda v: v is None or (is_int(v) and v >= 10), 'null or an integer >= 10'))
    attack_test_rows: int = setting(2000, 'rows taken (evenly spaced, in order) from each attack file for testing', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    download: bool = setting(True, 'download N-BaIoT when it is missing from data_cache_dir', check=(lambda v: isinstance(v, bool), 'true or false'))
    download_source: str = setting('uci', 'uci (UCI archive) or a base URL serving the per-device layout')
    synthetic_generator: str = setting('rows', 'synthetic: rows (fast row generator) or packets (traffic simulator -> feature extractor)', choices=('rows', 'packets'))
    synthetic_benign_seconds: float = setting(1800, 'synthetic packets: seconds of benign traffic simulated per device', check=(lambda v: is_num(v) and v >= 60, 'a number of seconds >= 60'))
    synthetic_attack_seconds: float = setting(30, 'synthetic packets: seconds of each attack simulated', check=(lambda v: is_num(v) and v >= 1, 'a number of seconds >= 1'))
    synthetic_benign_rows: int = setting(3000, 'synthetic: benign rows per device', check=(lambda v: is_int(v) and v >= 50, 'an integer >= 50'))
    synthetic_attack_rows: int = setting(600, 'synthetic: rows per attack file', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
