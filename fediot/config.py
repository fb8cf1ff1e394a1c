"""FedIoT's configuration: the sections the components declare, composed into one typed, validated object
(`cfg.train.learning_rate`), and the run plan derived from it (`cfg.plan.clients_per_round`).

Each YAML section (FedML's layout: common_args, data_args, ...) is a frozen dataclass declared next to the code that
reads it (`data.settings`, `federation.settings`, `traffic.settings`, ...; `fediot.settings` says how); every field
carries its default, a one-line meaning (doc/config.md's table is generated from them), its allowed values or check,
and whether FedML itself reads it. An unknown key or a bad value raises ConfigError naming the file and
`section.key`; so do sizes that do not fit together (clients vs devices, minimum clients per round). Values the
user left to be worked out (null client counts, 'all' devices, the defenses 'auto' means) are derived once into
`RunPlan` and never written back into the sections: `config.yaml` in a run directory is what the user asked for,
`plan.json` beside it what the run did. Validation happens once, in `load` / `validate`; the rest of the code reads
attributes and never looks keys up by string.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import difflib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from attacks.settings import AttackArgs
from data import nbaiot
from data.settings import DataArgs
from evaluation.settings import ValidationArgs
from federation.settings import ROBUST_AGGREGATION, SAMPLED_AVERAGE_ROUNDS, PrivacyArgs, TrainArgs
from fediot.errors import ConfigError
from fediot.settings import is_int, setting
from model.settings import ModelArgs
from monitor.settings import StatusArgs
from traffic.settings import DetectArgs
from trainer.settings import CommArgs, DeviceArgs, EnvironmentArgs, TrackingArgs


CLIENT_SEPARATOR = "#"


DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a local device's name (a directory, an MQTT level)


def device_number(device: str) -> int:
    """A device's number for seeds: its UCI number for N-BaIoT's devices (1-9, as always), else a stable number
    from its name (>= 1000; never an N-BaIoT device's)."""
    if device in nbaiot.DEVICES:
        return nbaiot.device_index(device)
    return 1000 + zlib.crc32(device.encode()) % 1_000_000


def client_name(device: str, part: int, clients_per_device: int) -> str:
    """'Device' when a device is one client, else 'Device#part' (part 1-based)."""
    return device if clients_per_device == 1 else f"{device}{CLIENT_SEPARATOR}{part}"


def device_of_client(client: str) -> str:
    """The device a client name belongs to."""
    return client.split(CLIENT_SEPARATOR, 1)[0]


def client_part(client: str) -> int:
    """0-based index of a client among its device's clients (0 for a device that is one client)."""
    return int(client.split(CLIENT_SEPARATOR, 1)[1]) - 1 if CLIENT_SEPARATOR in client else 0


@dataclass(frozen=True)
class CommonArgs:
    """Run-wide settings."""

    training_type: str = setting('simulation', 'simulation (MPI on one machine) or cross_silo (real deployment)', choices=('simulation', 'cross_silo'), fedml=True)
    random_seed: int = setting(0, 'seed for torch, numpy and the synthetic generator', check=(lambda v: is_int(v) and v >= 0, 'an integer >= 0'), fedml=True)
    run_dir_root: str = setting('runs', 'where run directories are created (relative to the repository)')
    scenario: str = setting('horizontal', 'FedML cross-silo scenario (horizontal only)', fedml=True)
    config_version: str = setting('release', 'FedML environment name (leave as is)', fedml=True)
    run_id: str = setting('fediot', 'FedML run id; server and clients of one deployment use the same value', fedml=True)



SECTIONS: dict[str, type] = {
    "common_args": CommonArgs, "environment_args": EnvironmentArgs, "data_args": DataArgs,
    "model_args": ModelArgs, "train_args": TrainArgs, "validation_args": ValidationArgs,
    "device_args": DeviceArgs, "comm_args": CommArgs, "tracking_args": TrackingArgs, "attack_args": AttackArgs,
    "detect_args": DetectArgs, "status_args": StatusArgs, "privacy_args": PrivacyArgs,
}
# section name -> attribute of FedIoTConfig ("train_args" -> cfg.train)
ATTRS: dict[str, str] = {name: name.removesuffix("_args") for name in SECTIONS}

SECONDS_PER_DAY = 86400.0  # the budget rule's and captured rows' time unit


@dataclass(frozen=True)
class Defenses:
    """The server's defenses against lying clients in effect for a run (from train_args)."""

    robust: bool  # also: trimmed merge of feature statistics, report consistency checks
    aggregation: str
    trim_fraction: float
    byzantine_clients: int
    screen_norm_factor: float | None
    scale_ratio_limit: float
    count_ratio_limit: float | None


@dataclass(frozen=True)
class RunPlan:
    """What a run does, derived once from the settings (never written back into them): the devices ('all'
    resolved), the clients in rank order, how many train each round and how many must answer, how many global
    models the evaluated one averages, and the defenses in effect (train_args.robust switches them off at once)."""

    devices: tuple[str, ...]
    clients: tuple[str, ...]  # the server samples from these every round: built once
    clients_per_round: int
    min_clients_per_round: int
    model_average_rounds: int
    defenses: Defenses

    @property
    def client_count(self) -> int:
        return len(self.clients)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for plan.json (the client names only counted: a simulation may have 100,000)."""
        out = dataclasses.asdict(self)
        out["devices"], out["clients"] = list(self.devices), self.client_count
        return out


# section -> key -> (default, meaning): the documented table (doc/config.md).
DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    name: {f.name: (f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()
}


@dataclass(frozen=True)
class FedIoTConfig:
    """The validated configuration, one typed section per YAML section (defaults filled in, as the user wrote them
    otherwise), and the run plan derived from them."""

    path: Path | None
    plan: RunPlan
    common: CommonArgs
    environment: EnvironmentArgs
    data: DataArgs
    model: ModelArgs
    train: TrainArgs
    validation: ValidationArgs
    device: DeviceArgs
    comm: CommArgs
    tracking: TrackingArgs
    attack: AttackArgs
    detect: DetectArgs
    status: StatusArgs
    privacy: PrivacyArgs

    @property
    def attacking(self) -> bool:
        """attack_args make some rank malicious."""
        return bool(self.attack.malicious_ranks) and self.attack.attack != "none"

    def attack_of(self, rank: int) -> tuple[str, float]:
        """(attack, scale) that client `rank` carries out; ('none', ...) for an honest client."""
        a = self.attack
        return (a.attack, a.attack_scale) if rank in (a.malicious_ranks or []) else ("none", a.attack_scale)

    @property
    def devices(self) -> list[str]:
        return list(self.plan.devices)

    @property
    def clients(self) -> list[str]:
        """Client names in rank order: each device's clients_per_device clients, device by device (a copy)."""
        return list(self.plan.clients)

    @property
    def values(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (section -> key -> value), as written to a run's config.yaml."""
        return {name: dataclasses.asdict(getattr(self, ATTRS[name])) for name in SECTIONS}

    def fedml_values(self) -> dict[str, dict[str, Any]]:
        """Only the keys FedML itself reads, the client counts from the plan; null ones are left to FedML's own
        defaults."""
        planned = {("train_args", "client_num_in_total"): self.plan.client_count,
                   ("train_args", "client_num_per_round"): self.plan.clients_per_round}
        out: dict[str, dict[str, Any]] = {}
        for name, cls in SECTIONS.items():
            section = getattr(self, ATTRS[name])
            keys = {f.name: planned.get((name, f.name), getattr(section, f.name)) for f in dataclasses.fields(cls)
                    if f.metadata["fedml"]}
            keys = {k: v for k, v in keys.items() if v is not None}
            if keys:
                out[name] = keys
        return out

    @property
    def is_simulation(self) -> bool:
        return self.common.training_type == "simulation"


# keys of earlier versions: a config that still sets one gets this reason instead of "unknown key"
REMOVED_KEYS = {
    ("tracking_args", "log_file_dir"): "FedML's output always goes to RUN_DIR/logs/fedml-rank<r>.log (FedIoT no longer "
    "runs fedml.init(), which read this key)",
    ("validation_args", "threshold_outlier_mads"): "each device detects with its own threshold, and the global one "
    "pools the devices weighed equally without the train_args.byzantine_clients highest and lowest device thresholds",
}


def defaults() -> dict[str, dict[str, Any]]:
    """The default configuration as a nested dict."""
    return {sec: {k: v[0] for k, v in keys.items()} for sec, keys in DEFAULTS.items()}


def _where(path: Path | None) -> str:
    return f"config {path}" if path else "config"


def validate(raw: dict[str, Any], path: Path | None = None) -> FedIoTConfig:
    """Check sections, keys, values and sizes of a parsed YAML mapping; fill defaults."""
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
            if (section, key) in REMOVED_KEYS:
                raise ConfigError(f"{where}: {section}.{key} was removed: {REMOVED_KEYS[section, key]}; delete it")
            if key not in DEFAULTS[section]:
                hint = difflib.get_close_matches(str(key), DEFAULTS[section], n=1)
                raise ConfigError(
                    f"{where}: unknown key {section}.{key}"
                    + (f" (did you mean {section}.{hint[0]}?)" if hint else "")
                    + f"; known keys: {', '.join(DEFAULTS[section])}"
                )
            values[section][key] = value
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            value, meta = values[name][f.name], f.metadata
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ConfigError(f"{where}: {name}.{f.name} = {value!r}; expected one of {', '.join(map(str, meta['choices']))}")
            if meta["check"] is not None and not meta["check"][0](value):
                raise ConfigError(f"{where}: {name}.{f.name} = {value!r}; expected {meta['check'][1]}")
    d = values["data_args"]
    if d["train_fraction"] + d["validation_fraction"] >= 1:
        raise ConfigError(
            f"{where}: data_args.train_fraction + data_args.validation_fraction = "
            f"{d['train_fraction'] + d['validation_fraction']}; expected < 1 (the rest is the benign test split)"
        )
    devices = _parse_devices(d["devices"], where, local=d["dataset"] == "local")
    values["comm_args"]["revoked_ranks"] = sorted(set(values["comm_args"]["revoked_ranks"] or []))
    values["attack_args"]["malicious_ranks"] = sorted(set(values["attack_args"]["malicious_ranks"] or []))
    plan = _plan(values, devices, where)
    sections = {ATTRS[name]: cls(**values[name]) for name, cls in SECTIONS.items()}
    return FedIoTConfig(path=path, plan=plan, **sections)


def _plan(values: dict[str, dict[str, Any]], devices: list[str], where: str) -> RunPlan:
    """The run plan, and the checks that clients, devices, clients per round and per-round minimums fit together."""
    per_device = values["data_args"]["clients_per_device"]
    n_devices, n_clients = len(devices), len(devices) * per_device
    t = values["train_args"]
    if t["client_num_in_total"] is not None and t["client_num_in_total"] != n_clients:
        raise ConfigError(f"{where}: data_args.devices lists {n_devices} device(s) x clients_per_device {per_device} = "
                          f"{n_clients} client(s) but train_args.client_num_in_total = {t['client_num_in_total']}; "
                          f"set it to {n_clients} or leave it out")
    per_round = n_clients if t["client_num_per_round"] is None else t["client_num_per_round"]
    if per_round > n_clients:
        raise ConfigError(f"{where}: train_args.client_num_per_round = {per_round} > "
                          f"{n_clients} clients (client_num_in_total)")
    average = t["model_average_rounds"]
    if average is None:
        average = SAMPLED_AVERAGE_ROUNDS if per_round * SAMPLED_AVERAGE_ROUNDS < n_clients else 1
    if per_device > 1 and values["common_args"]["training_type"] != "simulation":
        raise ConfigError(f"{where}: data_args.clients_per_device = {per_device}: a deployment has one client per "
                          f"board (device); clients_per_device is for simulations")
    min_clients = per_round // 2 + 1 if t["min_clients_per_round"] is None else t["min_clients_per_round"]
    if min_clients > per_round:
        raise ConfigError(f"{where}: train_args.min_clients_per_round = {min_clients} > "
                          f"{per_round} clients per round (client_num_per_round)")
    bad = [r for r in values["attack_args"]["malicious_ranks"] or [] if r > n_clients]
    if bad:
        raise ConfigError(f"{where}: attack_args.malicious_ranks has rank(s) {bad}; clients are 1..{n_clients}")
    if t["aggregation"] in ("krum", "multikrum") and per_round < 2 * t["byzantine_clients"] + 3:
        raise ConfigError(f"{where}: train_args.aggregation = {t['aggregation']} with byzantine_clients = "
                          f"{t['byzantine_clients']} needs at least {2 * t['byzantine_clients'] + 3} clients per round; "
                          f"client_num_per_round is {per_round}")
    training, backend = values["common_args"]["training_type"], values["comm_args"]["backend"]
    if training == "simulation" and backend != "MPI":
        raise ConfigError(f"{where}: comm_args.backend = {backend!r}; a simulation (common_args.training_type: "
                          f"simulation) runs on MPI")
    if training == "cross_silo" and backend != "GRPC":
        raise ConfigError(f"{where}: comm_args.backend = {backend!r}; a deployment uses GRPC "
                          f"(MQTT_S3 needs FedML's cloud; MPI is for run_simulation.sh)")
    st = values["status_args"]
    if st["port"] is not None or values["detect_args"]["metrics_port"] is not None:  # both serve by these rules
        try:
            loopback = ipaddress.ip_address(st["host"]).is_loopback
        except ValueError:
            raise ConfigError(f"{where}: status_args.host = {st['host']!r}; expected an IP address "
                              f"(127.0.0.1, ::1, or this server's LAN address)") from None
        if not loopback and st["token"] is None:
            raise ConfigError(f"{where}: status_args.host = {st['host']} serves the status page beyond this machine; "
                              f"set status_args.token (>= 16 characters) so that only those who have it may look")
    robust = t["robust"]
    rule = t["aggregation"] if t["aggregation"] != "auto" else (ROBUST_AGGREGATION if robust else "fedavg")
    defenses = Defenses(robust, rule, t["trim_fraction"], t["byzantine_clients"],
                        t["screen_norm_factor"] if robust else None, t["scale_ratio_limit"],
                        t["count_ratio_limit"] if robust else None)
    clients = tuple(client_name(dev, i, per_device) for dev in devices for i in range(1, per_device + 1))
    return RunPlan(tuple(devices), clients, per_round, min_clients, average, defenses)


def check_world_size(cfg: FedIoTConfig, world_size: int) -> None:
    """An MPI simulation runs 1 server + N worker ranks, 1 <= N <= client_num_in_total: client i lives at worker
    1 + i % N, which trains it whenever it is sampled (N = client_num_in_total: one rank per client; fewer: a
    worker trains its sampled clients one after the other, e.g. N = the machine's cores)."""
    workers = world_size - 1
    if workers < 1:
        raise ConfigError(f"MPI world size is {world_size}; a simulation needs 1 server + N clients (use run_simulation.sh N)")
    if not cfg.is_simulation:
        raise ConfigError(f"{_where(cfg.path)}: the simulation needs common_args.training_type: simulation and comm_args.backend: MPI")
    plan = cfg.plan
    if workers > plan.client_count:
        raise ConfigError(f"{_where(cfg.path)}: {workers} client process(es) were started but the config has "
                          f"{plan.client_count} client(s) ({len(plan.devices)} device(s) x clients_per_device "
                          f"{cfg.data.clients_per_device}). Start at most {plan.client_count} (one per client); "
                          f"{plan.clients_per_round} (clients per round) or the machine's cores are good choices.")


def _parse_devices(devices: Any, where: str, local: bool = False) -> list[str]:
    if devices == "all":
        if local:
            raise ConfigError(f"{where}: data_args.devices must list your devices by name with data_args.dataset: local "
                              "(the directories python -m capture wrote under data_args.local_data_dir)")
        return list(nbaiot.DEVICES)
    if isinstance(devices, str):
        devices = [devices]
    if not isinstance(devices, list) or not devices:
        raise ConfigError(f"{where}: data_args.devices must be 'all' or a non-empty list of device names")
    for name in devices:
        if local:
            if not (isinstance(name, str) and DEVICE_NAME.fullmatch(name)):
                raise ConfigError(f"{where}: data_args.devices has {name!r}; a device name is 1-64 letters, digits, "
                                  "_ . - starting with a letter or digit (it names a directory and MQTT topics)")
            continue
        if name not in nbaiot.DEVICES:
            hint = difflib.get_close_matches(str(name), nbaiot.DEVICES, n=1)
            raise ConfigError(
                f"{where}: data_args.devices has unknown device {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; expected names from: {', '.join(nbaiot.DEVICES)}"
                + " (your own devices: data_args.dataset: local)"
            )
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{where}: data_args.devices lists a device twice: {devices}")
    return list(devices)


MAX_YAML_BYTES = 1 << 20  # a config is a few KB; a bigger file is not one
MAX_YAML_DEPTH = 16  # sections hold keys whose values are at most lists of numbers: 3 levels are used


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader without what a config never needs and an attacker uses: aliases (a 1 KB "billion laughs" value
    expanded to 3.6 GB), nesting deeper than MAX_YAML_DEPTH (a RecursionError traceback) and duplicate keys (silently
    the last one)."""

    depth = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"an alias (*name) at line {mark.line + 1}: anchors and aliases are not supported "
                                 "in FedIoT configs; write the value out")
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.YAMLError(f"key {key!r} given twice (line {key_node.start_mark.line + 1}); one value "
                                     "per key")
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
        return super().construct_mapping(node, deep)


def read_yaml(p: Path, what: str) -> Any:
    """A YAML file's value, or one ConfigError naming the file and what is wrong: too large, not UTF-8, not YAML
    (with its line), aliases, too deep, duplicate keys."""
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{what} {p}: larger than {MAX_YAML_BYTES >> 10} KB; not a FedIoT config")
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{what} {p}: not UTF-8 text (byte {exc.start}, line {line})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} {p}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:  # a flow collection nested past Python's own limit before MAX_YAML_DEPTH could say so
        raise ConfigError(f"{what} {p}: nested deeper than {MAX_YAML_DEPTH} levels") from None


def load(path: str | Path) -> FedIoTConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found (pass an existing YAML file, e.g. config_simulation/fedml_config.yaml)")
    raw = read_yaml(p, "config")
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
