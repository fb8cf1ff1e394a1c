"""Where a run's rows come from: a registry of data sources, shared by every command (no FedML here).

A source makes sure the configured devices' files exist in N-BaIoT's per-device layout and says
what they are. `data_args.dataset` (+ `data_args.synthetic_generator` for synthetic data) picks one:

| source              | rows                                                                     |
|---------------------|--------------------------------------------------------------------------|
| `nbaiot`            | real N-BaIoT files under `data_args.data_cache_dir` (downloaded if missing) |
| `synthetic-rows`    | `data/synthetic.py`: N-BaIoT-shaped rows from per-device profiles        |
| `synthetic-packets` | `traffic/`: simulated packets through the AfterImage feature extractor   |
| `local`             | your own devices' rows, captured with `python -m capture` under `data_args.local_data_dir`; attack rows simulated (the traffic simulator's attacks from the device's own address, mixed into its capture) |

Orchestration code calls `prepare_data` and `load_split` (or `load_client_splits`) only; the packet pipeline is reached
through this registry, never imported by the run paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from data import nbaiot, synthetic
from data.loader import PROVENANCE_FILE, DeviceData, DeviceSplit, load_device, split_device  # noqa: F401  (PROVENANCE_FILE re-exported)
from data.partition import partition_split
from fediot.config import SECONDS_PER_DAY, FedIoTConfig
from fediot.errors import DataError
from fediot.rundir import repo_path

SYNTHETIC_CACHE = "data/synthetic_cache"


@dataclass(frozen=True)
class DataSource:
    """One registered source: `prepare(cfg, devices)` returns (root of the per-device layout, description)."""

    name: str
    prepare: Callable[[FedIoTConfig, list[str]], tuple[Path, dict[str, Any]]]


def _synthetic_rows(cfg: FedIoTConfig, devices: list[str]) -> tuple[Path, dict[str, Any]]:
    d, seed = cfg.data, cfg.common.random_seed
    root = synthetic.ensure_synthetic(repo_path(SYNTHETIC_CACHE), devices, seed, d.synthetic_benign_rows,
                                      d.synthetic_attack_rows)
    return root, {"source": "synthetic", "synthetic": True, "generator": "rows", "path": str(root), "seed": seed,
                  "note": "SYNTHETIC data from data/synthetic.py, not real N-BaIoT traffic"}


def _synthetic_packets(cfg: FedIoTConfig, devices: list[str]) -> tuple[Path, dict[str, Any]]:
    from traffic.dataset import ensure_packet_synthetic  # numba and the simulator load only for this source

    d, seed = cfg.data, cfg.common.random_seed
    root = ensure_packet_synthetic(repo_path(SYNTHETIC_CACHE), devices, seed, d.synthetic_benign_seconds,
                                   d.synthetic_attack_seconds)
    return root, {"source": "synthetic", "synthetic": True, "generator": "packets", "path": str(root), "seed": seed,
                  "note": "SYNTHETIC data: traffic/simulator.py packets -> traffic/afterimage.py features, not real N-BaIoT"}


def _nbaiot(cfg: FedIoTConfig, devices: list[str]) -> tuple[Path, dict[str, Any]]:
    root = repo_path(cfg.data.data_cache_dir)
    missing = missing_devices(root, devices)
    if missing:
        if not cfg.data.download:
            raise DataError(_missing_message(root, missing, "data_args.download is false"))
        from data.download import download_devices  # only needed when data is missing
        try:
            download_devices(root, missing, cfg.data.download_source)
        except DataError as exc:
            raise DataError(f"{exc}\n{_missing_message(root, missing, 'the download failed')}") from None
    return root, {"source": "nbaiot", "synthetic": False, "path": str(root)}




def _local(cfg: FedIoTConfig, devices: list[str]) -> tuple[Path, dict[str, Any]]:
    import json

    root = repo_path(cfg.data.local_data_dir)
    missing = missing_devices(root, devices)
    if missing:
        found = sorted(p.parent.name for p in root.glob(f"*/{nbaiot.BENIGN_FILE}"))
        raise DataError(
            f"no captured rows for {len(missing)} device(s) ({', '.join(missing)}) under {root}"
            f" (found: {', '.join(found) or 'none'}).\n  Capture a device's benign traffic first: python -m capture "
            f"--interface IFACE --duration SECONDS --device NAME=IP_OR_MAC --out {cfg.data.local_data_dir} "
            "(or --pcap FILE)")
    provenance = {}
    for d in devices:
        path = root / d / PROVENANCE_FILE
        if path.is_file():
            try:
                record = json.loads(path.read_text())
                provenance[d] = {k: record.get(k) for k in ("sources", "rows", "first_packet", "last_packet",
                                                            "features_version", "simulated_attacks")}
            except (OSError, ValueError):
                provenance[d] = {"error": f"{path} is not readable JSON"}
    return root, {"source": "local", "synthetic": False, "path": str(root),
                  "attacks": "SIMULATED: the traffic simulator's Mirai/Gafgyt attacks sent from each device's own "
                             "address, mixed into its captured traffic (python -m capture --simulate-attacks)",
                  "provenance": provenance}


SOURCES: dict[str, DataSource] = {s.name: s for s in (
    DataSource("nbaiot", _nbaiot),
    DataSource("local", _local),
    DataSource("synthetic-rows", _synthetic_rows),
    DataSource("synthetic-packets", _synthetic_packets),
)}


def source_name(cfg: FedIoTConfig) -> str:
    """The registry key the config selects."""
    if cfg.data.dataset == "synthetic":
        return f"synthetic-{cfg.data.synthetic_generator}"
    return cfg.data.dataset


def missing_devices(root: Path, devices: list[str]) -> list[str]:
    return [d for d in devices if not (root / d / nbaiot.BENIGN_FILE).is_file()]


def prepare_data(cfg: FedIoTConfig, devices: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Make sure the configured devices' files exist; return their root and a description.

    Synthetic data is generated (once, deterministically); real N-BaIoT data is downloaded when
    missing and `data_args.download` is true, else a DataError explains where data is expected.
    """
    return SOURCES[source_name(cfg)].prepare(cfg, devices if devices is not None else cfg.devices)


def _missing_message(root: Path, missing: list[str], why: str) -> str:
    return (
        f"N-BaIoT data missing for {len(missing)} device(s) ({', '.join(missing)}) and {why}.\n"
        f"  Expected: {root}/<Device>/{nbaiot.BENIGN_FILE}, <Device>/gafgyt_attacks/<type>.csv, "
        f"<Device>/mirai_attacks/<type>.csv\n"
        f"  Fetch on a machine with internet: python -m data.download --dest DIR  (then copy DIR here), or\n"
        f"  import a copy you have (UCI with .rar, per-device, or Kaggle flat files): "
        f"python -m data.download --import PATH --dest {root}\n"
        f"  Or run the offline demo on synthetic data: sh run_simulation.sh 9 config_simulation/fedml_config_synthetic.yaml"
    )


def load_split(cfg: FedIoTConfig, root: Path, device: str) -> DeviceSplit:
    """Load and chronologically split one device's rows as configured."""
    d = cfg.data
    data = load_device(root, device, d.max_benign_rows, d.attack_test_rows, local=d.dataset == "local",
                       verdict_share=cfg.detect.benign_verdict_share)
    return split_device(data, d.train_fraction, d.validation_fraction, block_rows_of(d, data))


def block_rows_of(d: Any, data: DeviceData) -> int | None:
    """The configured split's block size in rows (`data_args.split_block_rows`; captured rows: local_split_block_s
    of the device's rows, None, chronological, where the capture holds too few such blocks)."""
    if d.split_block_rows is not None:
        return int(d.split_block_rows)
    if d.dataset != "local" or data.rows_per_day is None:
        return None
    rows = max(1, int(round(data.rows_per_day * d.local_split_block_s / SECONDS_PER_DAY)))
    test_fraction = 1.0 - d.train_fraction - d.validation_fraction
    enough = 2.0 / min(d.validation_fraction, test_fraction)  # two blocks per held-out part, in expectation
    return rows if len(data.benign) / rows >= enough else None


def load_client_splits(cfg: FedIoTConfig, root: Path, device: str) -> list[DeviceSplit]:
    """One device's split cut into its clients (`data_args.clients_per_device`, `partition`, seeded): the one
    place that decides a client's rows, for the simulation's workers and `score --reevaluate` alike."""
    d = cfg.data
    return partition_split(load_split(cfg, root, device), d.clients_per_device, d.partition, d.partition_alpha,
                           cfg.common.random_seed)
