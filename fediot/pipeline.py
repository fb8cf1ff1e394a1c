"""Data preparation shared by the federated run and the baselines (no FedML here)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from data import nbaiot, synthetic
from data.loader import DeviceSplit, load_device, split_device
from fediot.config import FedIoTConfig
from fediot.errors import DataError
from fediot.rundir import repo_path

SYNTHETIC_CACHE = "data/synthetic_cache"


def missing_devices(root: Path, devices: list[str]) -> list[str]:
    return [d for d in devices if not (root / d / nbaiot.BENIGN_FILE).is_file()]


def prepare_data(cfg: FedIoTConfig, devices: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Make sure the configured devices' files exist; return their root and a description.

    Synthetic data is generated (once, deterministically); real N-BaIoT data is downloaded when
    missing and `data_args.download` is true, else a DataError explains where data is expected.
    """
    d = cfg.values["data_args"]
    devices = devices if devices is not None else cfg.devices
    if d["dataset"] == "synthetic":
        seed = cfg.get("common_args", "random_seed")
        if d["synthetic_generator"] == "packets":
            from traffic.dataset import ensure_packet_synthetic
            root = ensure_packet_synthetic(repo_path(SYNTHETIC_CACHE), devices, seed,
                                           d["synthetic_benign_seconds"], d["synthetic_attack_seconds"])
            note = "SYNTHETIC data: traffic/simulator.py packets -> traffic/afterimage.py features, not real N-BaIoT"
        else:
            root = synthetic.ensure_synthetic(repo_path(SYNTHETIC_CACHE), devices, seed,
                                              d["synthetic_benign_rows"], d["synthetic_attack_rows"])
            note = "SYNTHETIC data from data/synthetic.py, not real N-BaIoT traffic"
        return root, {"source": "synthetic", "synthetic": True, "generator": d["synthetic_generator"],
                      "path": str(root), "seed": seed, "note": note}
    root = repo_path(d["data_cache_dir"])
    missing = missing_devices(root, devices)
    if missing:
        if not d["download"]:
            raise DataError(_missing_message(root, missing, "data_args.download is false"))
        from data.download import download_devices  # only needed when data is missing
        try:
            download_devices(root, missing, d["download_source"])
        except DataError as exc:
            raise DataError(f"{exc}\n{_missing_message(root, missing, 'the download failed')}") from None
    return root, {"source": "nbaiot", "synthetic": False, "path": str(root)}


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
    d = cfg.values["data_args"]
    data = load_device(root, device, d["max_benign_rows"], d["attack_test_rows"])
    return split_device(data, d["train_fraction"], d["validation_fraction"])
