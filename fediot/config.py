"""Load and validate FedIoT's YAML configuration (FedML's section layout).

Every key a user may set is listed in DEFAULTS with its default and a one-line meaning; an unknown
key or a bad value raises ConfigError naming the file and `section.key`. FedML reads the same file
through `fedml.init()` (it flattens the sections into one namespace); we validate it first.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from data import nbaiot
from fediot.errors import ConfigError

# section -> key -> (default, description). Keys that only FedML reads are included so that typos
# in them are caught too.
DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    "common_args": {
        "training_type": ("simulation", "simulation (MPI on one machine) or cross_silo (real deployment)"),
        "random_seed": (0, "seed for torch, numpy and the synthetic generator"),
        "run_dir_root": ("runs", "where run directories are created (relative to the repository)"),
        "scenario": ("horizontal", "FedML cross-silo scenario (horizontal only)"),
        "config_version": ("release", "FedML environment name (leave as is)"),
        "run_id": ("fediot", "FedML run id; server and clients of one deployment use the same value"),
    },
    "environment_args": {
        "bootstrap": (None, "FedML MLOps bootstrap script (unused in LAN / simulation mode)"),
    },
    "data_args": {
        "dataset": ("nbaiot", "nbaiot (real data) or synthetic (N-BaIoT-shaped generated data)"),
        "data_cache_dir": ("data/cache/nbaiot", "per-device N-BaIoT layout lives here (relative to repo)"),
        "devices": ("all", "'all' or a list of device names (UCI names); client rank r gets devices[r-1]"),
        "train_fraction": (0.6, "first fraction of each device's benign rows (chronological) used for training"),
        "validation_fraction": (0.2, "next fraction: held-out benign rows that set the threshold"),
        "max_benign_rows": (None, "use at most this many benign rows per device (null = all)"),
        "attack_test_rows": (2000, "rows taken (evenly spaced, in order) from each attack file for testing"),
        "download": (True, "download N-BaIoT when it is missing from data_cache_dir"),
        "download_source": ("uci", "uci (UCI archive) or a base URL serving the per-device layout"),
        "synthetic_generator": ("rows", "synthetic: rows (fast row generator) or packets (traffic simulator -> feature extractor)"),
        "synthetic_benign_seconds": (1800, "synthetic packets: seconds of benign traffic simulated per device"),
        "synthetic_attack_seconds": (30, "synthetic packets: seconds of each attack simulated"),
        "synthetic_benign_rows": (3000, "synthetic: benign rows per device"),
        "synthetic_attack_rows": (600, "synthetic: rows per attack file"),
    },
    "model_args": {
        "model": ("autoencoder", "the FedIoT autoencoder (115-86-58-38-29 and back, Tanh)"),
        "feature_transform": ("log1p", "log1p (sign*log(1+|x|), tames heavy tails) or none"),
        "normalization": ("zscore", "zscore (mean/std) or minmax, fitted on training benign rows only"),
    },
    "train_args": {
        "federated_optimizer": ("FedAvg", "FedML aggregation algorithm (FedAvg)"),
        "client_id_list": ("[]", "FedML: leave as is"),
        "client_num_in_total": (9, "number of clients (= number of configured devices)"),
        "client_num_per_round": (9, "clients per round (= client_num_in_total)"),
        "comm_round": (20, "federated rounds"),
        "epochs": (5, "local epochs per round"),
        "batch_size": (64, "mini-batch size"),
        "client_optimizer": ("adam", "local optimizer (adam)"),
        "learning_rate": (0.003, "learning rate in round 0"),
        "lr_decay": (0.9, "cross-round schedule: lr(round) = max(learning_rate * lr_decay**round, min_learning_rate)"),
        "min_learning_rate": (0.0001, "floor of the cross-round learning-rate schedule"),
        "weight_decay": (0.0, "Adam weight decay"),
        "round_timeout_s": (300, "deployment: a round (and each evaluation phase) closes at this deadline with the clients that answered"),
        "min_clients_per_round": (1, "deployment: fewer answers than this at the deadline stop the run (checkpoint kept)"),
        "centralized_epochs": (30, "baselines: epochs for the centralized and local-only models (null = comm_round * epochs)"),
    },
    "validation_args": {
        "frequency_of_the_test": (5, "evaluate every N rounds (and always after the last round)"),
        "threshold_k": (3.0, "threshold = mean + k * std of per-row MSE on held-out benign rows"),
        "vote_window": (5, "majority-vote window over consecutive rows (N-BaIoT's window variant)"),
    },
    "device_args": {
        "worker_num": (None, "FedML sets this from the MPI world size"),
        "using_gpu": (False, "train on GPU when available"),
        "torch_threads": (1, "PyTorch intra-op threads per process (the model is small: 1 is fastest and never oversubscribes)"),
        "gpu_mapping_file": (None, "FedML: GPU mapping YAML (null = CPU)"),
        "gpu_mapping_key": (None, "FedML: key in the GPU mapping file"),
    },
    "comm_args": {
        "backend": ("MPI", "MPI (simulation) or GRPC (LAN deployment)"),
        "is_mobile": (0, "FedML: leave 0"),
        "grpc_ipconfig_path": (None, "GRPC: CSV eid,rank,grpc_server_ip,grpc_server_port,ingress_ip (relative to the repo)"),
        "connect_timeout_s": (120, "deployment: how long a client keeps retrying to reach the server"),
        "wait_for_clients_s": (600, "deployment: how long the server waits for all clients before starting with those present"),
        "retry_interval_s": (2.0, "deployment: pause between connection retries and status lines"),
        "send_timeout_s": (20.0, "deployment: a send not delivered within this counts as a dead peer"),
        "client_idle_timeout_s": (3600, "deployment: a client gives up after this long without a message from the server"),
    },
    "tracking_args": {
        "enable_wandb": (False, "FedML's W&B logging (off; no keys in configs)"),
        "using_mlops": (False, "FedML's cloud MLOps (off)"),
        "log_file_dir": (None, "FedML's own log directory (null = inside the run directory)"),
        "tensorboard": (False, "write TensorBoard event files to RUN_DIR/tensorboard (local only)"),
        "fedml_console": (False, "also show FedML's own log output on the console (it always goes to RUN_DIR/logs)"),
    },
}

_CHOICES: dict[str, tuple[Any, ...]] = {
    "common_args.training_type": ("simulation", "cross_silo"),
    "data_args.dataset": ("nbaiot", "synthetic"),
    "data_args.synthetic_generator": ("rows", "packets"),
    "model_args.model": ("autoencoder",),
    "model_args.feature_transform": ("log1p", "none"),
    "model_args.normalization": ("zscore", "minmax"),
    "train_args.federated_optimizer": ("FedAvg",),
    "train_args.client_optimizer": ("adam",),
    "comm_args.backend": ("MPI", "GRPC"),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "common_args.random_seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data_args.train_fraction": (lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)"),
    "data_args.validation_fraction": (lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)"),
    "data_args.max_benign_rows": (lambda v: v is None or (_is_int(v) and v >= 10), "null or an integer >= 10"),
    "data_args.attack_test_rows": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data_args.synthetic_benign_rows": (lambda v: _is_int(v) and v >= 50, "an integer >= 50"),
    "data_args.synthetic_attack_rows": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data_args.synthetic_benign_seconds": (lambda v: _is_num(v) and v >= 60, "a number of seconds >= 60"),
    "data_args.synthetic_attack_seconds": (lambda v: _is_num(v) and v >= 1, "a number of seconds >= 1"),
    "data_args.download": (lambda v: isinstance(v, bool), "true or false"),
    "tracking_args.tensorboard": (lambda v: isinstance(v, bool), "true or false"),
    "tracking_args.fedml_console": (lambda v: isinstance(v, bool), "true or false"),
    "train_args.client_num_in_total": (lambda v: _is_int(v) and 1 <= v <= 9, "an integer in 1..9"),
    "train_args.client_num_per_round": (lambda v: _is_int(v) and 1 <= v <= 9, "an integer in 1..9"),
    "train_args.comm_round": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train_args.epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train_args.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train_args.learning_rate": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "train_args.lr_decay": (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "train_args.min_learning_rate": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "train_args.weight_decay": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "train_args.centralized_epochs": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "device_args.torch_threads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train_args.round_timeout_s": (lambda v: _is_num(v) and v > 0, "a number of seconds > 0"),
    "train_args.min_clients_per_round": (lambda v: _is_int(v) and 1 <= v <= 9, "an integer in 1..9"),
    "comm_args.connect_timeout_s": (lambda v: _is_num(v) and v > 0, "a number of seconds > 0"),
    "comm_args.wait_for_clients_s": (lambda v: _is_num(v) and v >= 0, "a number of seconds >= 0"),
    "comm_args.retry_interval_s": (lambda v: _is_num(v) and v > 0, "a number of seconds > 0"),
    "comm_args.send_timeout_s": (lambda v: _is_num(v) and v > 0, "a number of seconds > 0"),
    "comm_args.client_idle_timeout_s": (lambda v: _is_num(v) and v > 0, "a number of seconds > 0"),
    "validation_args.frequency_of_the_test": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "validation_args.threshold_k": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "validation_args.vote_window": (lambda v: _is_int(v) and v >= 1 and v % 2 == 1, "an odd integer >= 1"),
}


@dataclass(frozen=True)
class FedIoTConfig:
    """Validated configuration: `values['section']['key']`, defaults filled in."""

    path: Path | None
    values: dict[str, dict[str, Any]]

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]

    @property
    def devices(self) -> list[str]:
        return list(self.values["data_args"]["devices"])

    def flat(self) -> dict[str, Any]:
        """All keys in one namespace, as FedML flattens them."""
        out: dict[str, Any] = {}
        for section in self.values.values():
            out.update(section)
        return out


def defaults() -> dict[str, dict[str, Any]]:
    """The default configuration as a nested dict."""
    return {sec: {k: v[0] for k, v in keys.items()} for sec, keys in DEFAULTS.items()}


def _where(path: Path | None) -> str:
    return f"config {path}" if path else "config"


def validate(raw: dict[str, Any], path: Path | None = None) -> FedIoTConfig:
    """Check sections, keys and values of a parsed YAML mapping; fill defaults."""
    where = _where(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of sections (common_args, data_args, ...), got {type(raw).__name__}")
    values = defaults()
    for section, keys in raw.items():
        if section not in DEFAULTS:
            hint = difflib.get_close_matches(str(section), DEFAULTS, n=1)
            raise ConfigError(
                f"{where}: unknown section {section!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; expected one of {', '.join(DEFAULTS)}")
            )
        if keys is None:
            continue
        if not isinstance(keys, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys")
        for key, value in keys.items():
            if key not in DEFAULTS[section]:
                hint = difflib.get_close_matches(str(key), DEFAULTS[section], n=1)
                raise ConfigError(
                    f"{where}: unknown key {section}.{key}"
                    + (f" (did you mean {section}.{hint[0]}?)" if hint else "")
                    + f"; known keys: {', '.join(DEFAULTS[section])}"
                )
            values[section][key] = value
    for dotted, choices in _CHOICES.items():
        sec, key = dotted.split(".")
        if values[sec][key] not in choices:
            raise ConfigError(f"{where}: {dotted} = {values[sec][key]!r}; expected one of {', '.join(map(str, choices))}")
    for dotted, (ok, expected) in _CHECKS.items():
        sec, key = dotted.split(".")
        if not ok(values[sec][key]):
            raise ConfigError(f"{where}: {dotted} = {values[sec][key]!r}; expected {expected}")
    d = values["data_args"]
    if d["train_fraction"] + d["validation_fraction"] >= 1:
        raise ConfigError(
            f"{where}: data_args.train_fraction + data_args.validation_fraction = "
            f"{d['train_fraction'] + d['validation_fraction']}; expected < 1 (the rest is the benign test split)"
        )
    d["devices"] = _parse_devices(d["devices"], where)
    return FedIoTConfig(path=path, values=values)


def _parse_devices(devices: Any, where: str) -> list[str]:
    if devices == "all":
        return list(nbaiot.DEVICES)
    if isinstance(devices, str):
        devices = [devices]
    if not isinstance(devices, list) or not devices:
        raise ConfigError(f"{where}: data_args.devices must be 'all' or a non-empty list of device names")
    for name in devices:
        if name not in nbaiot.DEVICES:
            hint = difflib.get_close_matches(str(name), nbaiot.DEVICES, n=1)
            raise ConfigError(
                f"{where}: data_args.devices has unknown device {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; expected names from: {', '.join(nbaiot.DEVICES)}"
            )
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{where}: data_args.devices lists a device twice: {devices}")
    return list(devices)


def load(path: str | Path) -> FedIoTConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found (pass an existing YAML file, e.g. config_simulation/fedml_config.yaml)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config {p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raise ConfigError(f"config {p}: file is empty; expected sections such as data_args and train_args")
    return validate(raw, p)


def markdown_table() -> str:
    """Every configuration key with its default and meaning (used for README.md)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for section, keys in DEFAULTS.items():
        for key, (default, doc) in keys.items():
            shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
            lines.append(f"| `{section}.{key}` | `{shown}` | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
