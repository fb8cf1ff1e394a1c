"""FedIoT's configuration: one typed, validated object (`cfg.train.learning_rate`).

Each YAML section (FedML's layout: common_args, data_args, ...) is a frozen dataclass below; every
field carries its default, a one-line meaning (README's table is generated from them), its allowed
values or check, and whether FedML itself reads it (only those keys reach FedML's `args`). An
unknown key or a bad value raises ConfigError naming the file and `section.key`; so do sizes that
do not fit together (clients vs devices, minimum clients per round). Validation happens once, in
`load` / `validate`; the rest of the code reads attributes and never looks keys up by string.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import difflib
import functools
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from data import nbaiot
from fediot.errors import ConfigError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


MAX_CLIENTS = 100_000  # clients (devices x clients_per_device); a simulation's ranks are limited by memory instead
PARTITIONS = ("contiguous", "dirichlet")
# model_average_rounds (null) when a pass over the clients takes more than this many rounds: the mean of the last
# 10 global models then holds ~10 x client_num_per_round client trainings (measured: README "Many clients")
SAMPLED_AVERAGE_ROUNDS = 10
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


def _key(default: Any, doc: str, choices: tuple[Any, ...] | None = None,
         check: tuple[Callable[[Any], bool], str] | None = None, fedml: bool = False) -> Any:
    """A config field: default, meaning, allowed values or check, and whether FedML reads it."""
    return field(default=default, metadata={"doc": doc, "choices": choices, "check": check, "fedml": fedml})


@dataclass(frozen=True)
class CommonArgs:
    """Run-wide settings."""

    training_type: str = _key('simulation', 'simulation (MPI on one machine) or cross_silo (real deployment)', choices=('simulation', 'cross_silo'), fedml=True)
    random_seed: int = _key(0, 'seed for torch, numpy and the synthetic generator', check=(lambda v: _is_int(v) and v >= 0, 'an integer >= 0'), fedml=True)
    run_dir_root: str = _key('runs', 'where run directories are created (relative to the repository)')
    scenario: str = _key('horizontal', 'FedML cross-silo scenario (horizontal only)', fedml=True)
    config_version: str = _key('release', 'FedML environment name (leave as is)', fedml=True)
    run_id: str = _key('fediot', 'FedML run id; server and clients of one deployment use the same value', fedml=True)


@dataclass(frozen=True)
class EnvironmentArgs:
    """FedML MLOps environment (unused offline)."""

    bootstrap: str | None = _key(None, 'FedML MLOps bootstrap script (unused in LAN / simulation mode)', fedml=True)


@dataclass(frozen=True)
class DataArgs:
    """Where rows come from and how each device's rows are split."""

    dataset: str = _key('nbaiot', 'nbaiot (real data), synthetic (N-BaIoT-shaped generated data) or local (your own devices: rows captured from their traffic with python -m capture, devices named as you like)', choices=('nbaiot', 'synthetic', 'local'), fedml=True)
    data_cache_dir: str = _key('data/cache/nbaiot', 'per-device N-BaIoT layout lives here (relative to repo)')
    local_data_dir: str = _key('data/local', "local: your devices' captured rows, one directory per device (python -m capture writes them; relative to the repo)")
    devices: list[str] = _key('all', "'all' or a list of device names (nbaiot/synthetic: UCI names; local: your own names, letters, digits, _ . -); with one client per device, client rank r gets devices[r-1]")
    clients_per_device: int = _key(1, "clients made from each device's rows (households): its training, validation, test and attack rows cut into this many consecutive slices, client names 'Device#i' (data/partition.py); simulation only", check=(lambda v: _is_int(v) and 1 <= v <= MAX_CLIENTS, f'an integer in 1..{MAX_CLIENTS}'))
    partition: str = _key('contiguous', 'how a device is cut into clients: contiguous (equal time slices) or dirichlet (slice sizes drawn from Dirichlet(partition_alpha), seeded)', choices=PARTITIONS)
    partition_alpha: float = _key(0.5, 'dirichlet: concentration (smaller = more uneven clients)', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    train_fraction: float = _key(0.6, "first fraction of each device's benign rows (chronological, or its share of the blocks: split_block_rows) used for training", check=(lambda v: _is_num(v) and 0 < v < 1, 'a number in (0, 1)'))
    validation_fraction: float = _key(0.2, 'next fraction: held-out benign rows that set the threshold', check=(lambda v: _is_num(v) and 0 < v < 1, 'a number in (0, 1)'))
    split_block_rows: int | None = _key(None, "null: each device's rows split chronologically (N-BaIoT's protocol); a number: blocks of this many rows dealt to training / validation / test over the whole capture", check=(lambda v: v is None or (_is_int(v) and v >= 1), 'null or an integer >= 1'))
    local_split_block_s: float = _key(3600.0, "captured rows (dataset local) when split_block_rows is null: blocks of this many seconds of the device's rows; chronological when the capture holds too few blocks", check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    max_benign_rows: int | None = _key(None, 'use at most this many benign rows per device (null = all)', check=(lambda v: v is None or (_is_int(v) and v >= 10), 'null or an integer >= 10'))
    attack_test_rows: int = _key(2000, 'rows taken (evenly spaced, in order) from each attack file for testing', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    download: bool = _key(True, 'download N-BaIoT when it is missing from data_cache_dir', check=(lambda v: isinstance(v, bool), 'true or false'))
    download_source: str = _key('uci', 'uci (UCI archive) or a base URL serving the per-device layout')
    synthetic_generator: str = _key('rows', 'synthetic: rows (fast row generator) or packets (traffic simulator -> feature extractor)', choices=('rows', 'packets'))
    synthetic_benign_seconds: float = _key(1800, 'synthetic packets: seconds of benign traffic simulated per device', check=(lambda v: _is_num(v) and v >= 60, 'a number of seconds >= 60'))
    synthetic_attack_seconds: float = _key(30, 'synthetic packets: seconds of each attack simulated', check=(lambda v: _is_num(v) and v >= 1, 'a number of seconds >= 1'))
    synthetic_benign_rows: int = _key(3000, 'synthetic: benign rows per device', check=(lambda v: _is_int(v) and v >= 50, 'an integer >= 50'))
    synthetic_attack_rows: int = _key(600, 'synthetic: rows per attack file', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))


@dataclass(frozen=True)
class ModelArgs:
    """Autoencoder and the normalisation in front of it."""

    model: str = _key('autoencoder', 'the FedIoT autoencoder (115-86-58-38-29 and back, Tanh)', choices=('autoencoder',))
    feature_transform: str = _key('log1p', 'log1p (sign*log(1+|x|), tames heavy tails) or none', choices=('log1p', 'none'))
    normalization: str = _key('zscore', 'zscore (mean/std) or minmax, fitted on training benign rows only', choices=('zscore', 'minmax'))


@dataclass(frozen=True)
class TrainArgs:
    """Rounds, local training and the server's round rules."""

    federated_optimizer: str = _key('FedAvg', "FedML's name of the federated algorithm: FedAvg, FedProx (fedprox_mu), FedOpt (server_optimizer: FedAvgM, FedAdam, FedYogi, FedAdagrad) or FedNova", choices=('FedAvg', 'FedProx', 'FedOpt', 'FedNova'), fedml=True)
    fedprox_mu: float = _key(0.01, "FedProx: weight of the proximal term (FedML's key)", check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'), fedml=True)
    server_optimizer: str = _key('sgd', "FedOpt: the server's optimizer (FedML's key): sgd, adam, yogi, adagrad", choices=('sgd', 'adam', 'yogi', 'adagrad'), fedml=True)
    server_lr: float = _key(1.0, "FedOpt: the server's learning rate (FedML's key); sgd with server_lr 1 and server_momentum 0 is FedAvg. Reddi et al. use 0.01-0.1 for adam, yogi and adagrad", check=(lambda v: _is_num(v) and v > 0, 'a number > 0'), fedml=True)
    server_momentum: float = _key(0.0, "FedOpt with sgd: server momentum (FedML's key; 0 = none, and with server_lr 1 that is FedAvg; Hsu et al.'s FedAvgM: 0.9 with server_lr about 1 - momentum)", check=(lambda v: _is_num(v) and 0 <= v < 1, 'a number in [0, 1)'), fedml=True)
    server_beta1: float = _key(0.9, 'FedOpt with adam, yogi, adagrad: decay of the first moment (Reddi et al.)', check=(lambda v: _is_num(v) and 0 <= v < 1, 'a number in [0, 1)'))
    server_beta2: float = _key(0.99, 'FedOpt with adam, yogi: decay of the second moment (Reddi et al.)', check=(lambda v: _is_num(v) and 0 <= v < 1, 'a number in [0, 1)'))
    server_tau: float = _key(0.001, 'FedOpt with adam, yogi, adagrad: the adaptivity floor tau added to sqrt(v) (Reddi et al.)', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    client_id_list: str = _key('[]', 'FedML: leave as is', fedml=True)
    client_num_in_total: int = _key(None, 'number of clients (null = devices x clients_per_device; must equal it)', check=(lambda v: v is None or (_is_int(v) and 1 <= v <= MAX_CLIENTS), f'null or an integer in 1..{MAX_CLIENTS}'), fedml=True)
    client_num_per_round: int = _key(None, "clients that train in each round (null = client_num_in_total); fewer: a seeded sample per round (FedML's rule), recorded as 'sampled'; every client is evaluated", check=(lambda v: v is None or (_is_int(v) and 1 <= v <= MAX_CLIENTS), f'null or an integer in 1..{MAX_CLIENTS}'), fedml=True)
    comm_round: int = _key(20, 'federated rounds', check=(lambda v: _is_int(v) and 1 <= v <= 100_000, 'an integer in 1..100000'), fedml=True)
    epochs: int = _key(5, 'local epochs per round', check=(lambda v: _is_int(v) and 1 <= v <= 10_000, 'an integer in 1..10000'))
    batch_size: int = _key(64, 'mini-batch size', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    client_optimizer: str = _key('adam', 'local optimizer (adam)', choices=('adam',))
    learning_rate: float = _key(0.003, 'learning rate in round 0', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    lr_decay: float = _key(0.9, 'cross-round schedule: lr(round) = max(learning_rate * lr_decay**round, min_learning_rate)', check=(lambda v: _is_num(v) and 0 < v <= 1, 'a number in (0, 1]'))
    model_average_rounds: int | None = _key(None, 'the evaluated and saved model is the mean of the global models of the last this many rounds (second half of the run); 1 = the latest; null = 10 when a pass over the clients takes > 10 rounds, else 1', check=(lambda v: v is None or (_is_int(v) and v >= 1), 'null or an integer >= 1'))
    min_learning_rate: float = _key(0.0001, 'floor of the cross-round learning-rate schedule', check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'))
    weight_decay: float = _key(0.0, 'Adam weight decay', check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'))
    round_timeout_s: float = _key(300, 'deployment: a round (and each evaluation phase) closes at this deadline with the clients that answered', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    min_clients_per_round: int | None = _key(1, 'deployment: fewer answers than this at the deadline stop the run (checkpoint kept); null = a majority of client_num_per_round (so the number of boards follows data_args.devices alone)', check=(lambda v: v is None or (_is_int(v) and 1 <= v <= MAX_CLIENTS), f'null or an integer in 1..{MAX_CLIENTS}'))
    robust: bool = _key(True, 'the server defends against lying clients (robust aggregation, screening, robust merges, count caps, report checks); false: plain FedAvg and plain merging', check=(lambda v: isinstance(v, bool), 'true or false'))
    aggregation: str = _key('auto', "how the server combines model updates: auto (ROBUST_AGGREGATION when robust, else fedavg), fedavg, or a rule a minority of lying clients cannot steer: median, trimmed_mean, krum, multikrum, geo_median (federation/aggregation.py)", choices=('auto', 'fedavg', 'median', 'trimmed_mean', 'krum', 'multikrum', 'geo_median'))
    trim_fraction: float = _key(0.25, 'trimmed_mean (what auto is with robust): fraction of values dropped at each end, per coordinate (0.25: 2 of 9 clients at each end, as many as byzantine_clients)', check=(lambda v: _is_num(v) and 0 <= v < 0.5, 'a number in [0, 0.5)'))
    byzantine_clients: int = _key(2, 'how many lying clients the robust rules are sized for (f): krum / multikrum, the trimmed merge of feature statistics and the trimmed global threshold; fewer clients: said at start', check=(lambda v: _is_int(v) and v >= 0, 'an integer >= 0'))
    screen_norm_factor: float | None = _key(5.0, 'robust: leave out an update farther from the global model than this x the median distance (null = no screening)', check=(lambda v: v is None or (_is_num(v) and v > 1), 'null or a number > 1'))
    scale_ratio_limit: float = _key(4.0, "robust: each feature's normalisation scale stays within 1/this..this x the scale of a trimmed merge; a device whose own rows lie beyond gets its own wider scales", check=(lambda v: _is_num(v) and v >= 1, 'a number >= 1'))
    count_ratio_limit: float | None = _key(10.0, "robust: a client's row count (its weight in FedAvg-like rules and statistics merges) counts at most this x the median client's (null = as sent)", check=(lambda v: v is None or (_is_num(v) and v >= 1), 'null or a number >= 1'))
    centralized_epochs: int | None = _key(30, 'baselines: epochs for the centralized and local-only models (null = comm_round * epochs)', check=(lambda v: v is None or (_is_int(v) and v >= 1), 'null or an integer >= 1'))


@dataclass(frozen=True)
class ValidationArgs:
    """Threshold rule and evaluation schedule."""

    frequency_of_the_test: int = _key(5, 'evaluate every N rounds (and always after the last round)', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    threshold_k: float = _key(5.0, 'threshold = mean + k * std of per-row MSE on held-out benign validation rows; each device detects with its own (5: no honest device above FPR 0.02 over a grid of runs, doc/benchmarks.md "Thresholds"; 3 and 4 were not)', check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'))
    threshold_rule: str = _key('auto', "budget: at most false_alerts_per_day window alerts a day on held-out benign rows (needs the rows' rate: captured rows); mean_std: mean + threshold_k x std; auto: budget where rows carry a rate, else mean_std", choices=('auto', 'budget', 'mean_std'))
    false_alerts_per_day: float = _key(1.0, 'the false-alarm budget of the budget rule: false alerts (window alerts; with alert_gap_s > 0, those closer than it count as one) per device per day on benign traffic like its held-out rows', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    alert_gap_s: float = _key(0.0, 'budget rule: window alerts closer together than this count as one false alert (declustering); 0 = every window alert counts', check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'))
    board_threshold_ratio: float = _key(4.0, "a board keeps the federation's threshold for its device only within this factor of the one its own validation rows give, else detects at its own and records it", check=(lambda v: _is_num(v) and v >= 1, 'a number >= 1'))
    min_tail_rows: int = _key(20, 'budget rule: the empirical quantile where at least this many held-out window scores lie above it; fewer: a fitted tail, then the highest score / mean + k std', check=(lambda v: _is_int(v) and v >= 5, 'an integer >= 5'))
    max_tail_shape: float = _key(1.0, "budget rule: the fitted generalised Pareto shape is capped here: a shape >= 1 is a tail without a mean, whose extrapolation to a rare budget could land anywhere", check=(lambda v: _is_num(v) and 0 < v <= 2, 'a number in (0, 2]'))
    tail_level: float = _key(0.98, "budget rule: where the budget asks for fewer than min_tail_rows of the held-out window scores above the threshold, a generalised Pareto tail is fitted to those above this quantile (SPOT's 0.98)", check=(lambda v: _is_num(v) and 0.5 <= v < 1, 'a number in [0.5, 1)'))
    vote_window: int = _key(5, "majority-vote window over consecutive rows (N-BaIoT's window variant)", check=(lambda v: _is_int(v) and v >= 1 and v % 2 == 1, 'an odd integer >= 1'))
    personalise_epochs: int = _key(0, "each client fine-tunes the evaluated model on its own rows for this many epochs and is also scored with it (mode 'personal'; detect --follow uses it); 0 = off", check=(lambda v: _is_int(v) and v >= 0, 'an integer >= 0'))
    personalise_lr: float = _key(0.001, 'learning rate of the personalising fine-tune (Adam)', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))


@dataclass(frozen=True)
class DeviceArgs:
    """Compute placement."""

    worker_num: int | None = _key(None, 'FedML sets this from the MPI world size', fedml=True)
    using_gpu: bool = _key(False, 'train on GPU when available', fedml=True)
    torch_threads: int = _key(1, 'PyTorch intra-op threads per process (the model is small: 1 is fastest and never oversubscribes)', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    gpu_mapping_file: str | None = _key(None, 'FedML: GPU mapping YAML (null = CPU)', fedml=True)
    gpu_mapping_key: str | None = _key(None, 'FedML: key in the GPU mapping file', fedml=True)


@dataclass(frozen=True)
class CommArgs:
    """Transport, mutual TLS and deployment timeouts."""

    backend: str = _key('MPI', 'MPI (simulation) or GRPC (LAN deployment)', choices=('MPI', 'GRPC'), fedml=True)
    is_mobile: int = _key(0, 'FedML: leave 0', fedml=True)
    grpc_ipconfig_path: str | None = _key(None, 'GRPC: CSV eid,rank,grpc_server_ip,grpc_server_port,ingress_ip (relative to the repo)', fedml=True)
    connect_timeout_s: float = _key(120, 'deployment: how long a client keeps retrying to reach the server', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    wait_for_clients_s: float = _key(600, 'deployment: how long the server waits for all clients before starting with those present', check=(lambda v: _is_num(v) and v >= 0, 'a number of seconds >= 0'))
    retry_interval_s: float = _key(2.0, 'deployment: pause between connection retries and status lines', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    log_refusals_per_minute: int = _key(10, "a peer's refused messages are logged at most this many lines a minute (each is counted: rounds.jsonl, the status page, /metrics); the rest summed into its next line", check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    send_timeout_s: float = _key(20.0, 'deployment: a send not delivered within this counts as a dead peer', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    max_message_mb: float = _key(8, "largest message accepted from a peer (MB), refused at its first chunk over it; FedIoT's largest is ~0.7 MB", check=(lambda v: _is_num(v) and 0 < v <= 2000, 'a number of MB in (0, 2000]'))
    quarantine_after_malformed: int | None = _key(5, "deployment: the server refuses a board for the rest of the run once its certificate has sent this many messages that are not FedIoT messages or break the protocol's bounds (late answers and health reports do not count; doc/security.md); null = never", check=(lambda v: v is None or (_is_int(v) and v >= 1), 'null or an integer >= 1'))
    client_idle_timeout_s: float = _key(3600, 'deployment: a client gives up after this long without a message from the server', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    tls: bool = _key(True, 'deployment: mutual TLS between the server and the boards (false = plaintext and unauthenticated, warned at every start)', check=(lambda v: isinstance(v, bool), 'true or false'))
    tls_dir: str | None = _key(None, 'deployment: certificates from make_certs.sh (ca.pem, server.pem/.key, client<r>.pem/.key; relative to the repo); null = loopback certificates made on first use in RUN_DIR_ROOT/loopback-certs (loopback ipconfig only)', check=(lambda v: v is None or (isinstance(v, str) and v != ''), 'null or a directory path'))
    revoked_ranks: list[int] | None = _key(None, 'deployment: client ranks the server refuses although their certificates are valid (lost or compromised boards); null = none', check=(lambda v: v is None or (isinstance(v, list) and all(_is_int(r) and r >= 1 for r in v)), 'null or a list of client ranks >= 1'))
    front: bool = _key(True, "deployment: each node listens through a connection-level front (deployment/front.py) that limits each host's connections before TLS and pauses reading a connection after each refused call; false = gRPC listens directly (doc/security.md)", check=(lambda v: isinstance(v, bool), 'true or false'))
    front_connections: int = _key(4, 'deployment, front: connections one host may hold at once, for each rank the ipconfig places there (an honest board holds one); more are held unread and closed', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    front_new_connections_per_s: float = _key(1.0, 'deployment, front: new connections a second one host may open, for each rank the ipconfig places there (after front_burst at once)', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    front_burst: int = _key(8, 'deployment, front: new connections one host may open at once, for each rank the ipconfig places there', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    front_pause_first_s: float = _key(0.05, 'deployment, front: reading a connection pauses this long after a refused call, twice as long after each further one until a message of it is taken', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    front_pause_max_s: float = _key(2.0, 'deployment, front: the longest pause; also how long a connection over the limits is held unread before it is closed', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    bind_all: bool = _key(False, "deployment: listen on every interface instead of only the ipconfig's grpc_server_ip", check=(lambda v: isinstance(v, bool), 'true or false'))


@dataclass(frozen=True)
class TrackingArgs:
    """Logging and experiment tracking."""

    enable_wandb: bool = _key(False, "FedML's W&B logging: always false (FedIoT runs without FedML's cloud and fedml.init; tracking_args.tensorboard is local)", check=(lambda v: v is False, 'false'), fedml=True)
    using_mlops: bool = _key(False, "FedML's cloud MLOps: always false (nothing may need the internet at run time)", check=(lambda v: v is False, 'false'), fedml=True)
    tensorboard: bool = _key(False, 'write TensorBoard event files to RUN_DIR/tensorboard (local only)', check=(lambda v: isinstance(v, bool), 'true or false'))
    fedml_console: bool = _key(False, "also show FedML's own log output on the console (it always goes to RUN_DIR/logs)", check=(lambda v: isinstance(v, bool), 'true or false'))

@dataclass(frozen=True)
class DetectArgs:
    """`python -m detect` on a board: bounded memory, following the federation, where alerts go."""

    max_streams: int = _key(5000, 'streams tracked per kind (MI, H, HH, HpHp); over it the least recently seen are forgotten, so a flood of new sockets cannot exhaust memory', check=(lambda v: _is_int(v) and v >= 100, 'an integer >= 100'))
    idle_weight: float = _key(1e-6, 'a stream whose weight, decayed at the slowest lambda (0.01), is below this is forgotten (one packet: after ~2,000 s of silence); its features would differ from a new stream\'s by less than this fraction', check=(lambda v: _is_num(v) and 0 < v < 1, 'a number between 0 and 1'))
    fanout_warmup_s: float = _key(60.0, "the fan-out extension counts no new peer or socket pair in the extractor's first this many seconds (a fresh extractor has seen none of a device's usual peers)", check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'))
    ephemeral_port_from: int = _key(32768, "endpoint profiles key a packet by the service's port: the other side's unless it is at or above this (an ephemeral port), then the device's own", check=(lambda v: _is_int(v) and 1024 <= v <= 65535, 'an integer in 1024..65535'))
    silence_factor: float = _key(2.0, 'detect --profiles: a watched device silent for this many times its longest silence in its capture is a silent alert', check=(lambda v: _is_num(v) and v >= 1, 'a number >= 1'))
    attack_rows_kept: int = _key(2000, "capture --simulate-attacks: rows kept of each simulated attack, in 4 contiguous blocks spread over its seconds (a TPR on 2,000 rows is within about 2 points at 95 %; all of a 30 s flood was ~45,000 rows, 230 MB of CSV a device); 0 = all", check=(lambda v: _is_int(v) and v >= 0, 'an integer >= 0'))
    evidence_rows: int = _key(500, "detect --triage: rows kept of an alert episode (its window-alerting packets' features) for a benign verdict; also the most one verdict adds to a device's benign rows", check=(lambda v: _is_int(v) and 1 <= v <= 100000, 'an integer 1..100000'))
    benign_verdict_share: float = _key(0.02, "python -m triage benign: all benign verdicts of a device add at most this share of its captured benign rows (a LAN attacker who gets one click cannot outweigh the device's own traffic; doc/benchmarks.md 'Triage')", check=(lambda v: _is_num(v) and 0 <= v <= 0.2, 'a number 0..0.2'))
    verdict_attack_share: float = _key(0.5, "python -m triage benign: refused when more than this share of the rows are nearer to one of the device's simulated attacks than to its own rows (--force overrides)", check=(lambda v: _is_num(v) and 0 < v <= 1, 'a number in (0, 1]'))
    benign_mute_h: float = _key(24.0, "python -m triage benign: the episode's device and remote are muted this many hours, until a federation has learnt the verdict's rows", check=(lambda v: _is_num(v) and v >= 0, 'a number of hours >= 0'))
    max_triage_entries: int = _key(1000, "a triage file with more mutes and verdicts than this is refused (detect keeps the mutes it read before)", check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    warn_relay_port: int = _key(8899, "early warning (issue 37): the relay's port (python -m relay beside the server; detect --relay HOST:PORT)", check=(lambda v: _is_int(v) and 1 <= v <= 65535, 'a port 1..65535'))
    warn_confirm_boards: int = _key(2, "early warning: an endpoint is confirmed when this many boards' own detectors named it; until then it is a warning (one lying board cannot confirm)", check=(lambda v: _is_int(v) and v >= 2, 'an integer >= 2'))
    warn_ttl_s: float = _key(3600.0, "early warning: how long an indicator is kept (relay and boards) and an endpoint is not relayed again with the same status", check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    warn_rate_per_min: float = _key(6.0, "early warning: indicators a board may send a minute (beyond warn_burst in a row); more are refused and counted: a liar names at most warn_burst + this many endpoints a minute", check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    warn_burst: int = _key(10, "early warning: indicators a board may send in a row", check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    warn_share_private: bool = _key(False, "early warning: relay indicators of private, loopback and link-local addresses too (boards of one LAN); off: only public endpoints cross households", check=(lambda v: isinstance(v, bool), 'true or false'))
    warn_max_indicators: int = _key(1024, "early warning: endpoints the relay remembers and a board keeps (least recent forgotten)", check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    warn_confirm_s: float = _key(60.0, "early warning: a board's own detector has this long (packet time) after its early warning to confirm it; else the warning is cleared (a line says so)", check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    warn_log_per_minute: int = _key(10, "early warning: log lines a minute per board for refused indicators (the rest counted)", check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    live_max_wait_ms: float = _key(5.0, 'detect --interface: a batch of live packets is scored at most this long after its first packet was read (or when full)', check=(lambda v: _is_num(v) and 0 < v <= 1000, 'a number of milliseconds in (0, 1000]'))
    silence_min_s: float = _key(600.0, "detect --profiles: the shortest silence that is an alert, whatever the device's capture held", check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    max_profile_endpoints: int = _key(4096, "detect --profiles: an endpoints.json with more endpoints than this is refused before it is parsed (a device talks to a handful of services; the three real captures' profiles held 4, 4 and 6)", check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    max_hosts: int = _key(4096, 'source hosts whose majority-vote window (and formatted address) is kept; over it the least recently seen are forgotten (their window starts again)', check=(lambda v: _is_int(v) and v >= 16, 'an integer >= 16'))
    batch_packets: int = _key(1024, 'packets read from a pcap per batch (live capture: up to 256 per second); larger batches are a little faster and hold more memory', check=(lambda v: _is_int(v) and 1 <= v <= 65536, 'an integer in 1..65536'))
    capture_ring_mb: float = _key(4.0, 'live capture: megabytes of the kernel ring packets wait in while the reader is busy (2 KiB a packet); beyond it the kernel drops packets', check=(lambda v: _is_num(v) and 0.0625 <= v <= 1024, 'a number of megabytes in 0.0625..1024'))
    min_capture_s: float = _key(3600.0, "capture warns when a device's captures add up to less than this many seconds of its traffic", check=(lambda v: _is_num(v) and v >= 0, 'a number of seconds >= 0'))
    metrics_port: int | None = _key(None, 'detect serves Prometheus /metrics on this port (0 = any free port; --metrics-port overrides), with the status server\'s access rules (status_args.host, status_args.token); null = off', check=(lambda v: v is None or (_is_int(v) and 0 <= v <= 65535), 'null or a port 0..65535'))
    status_every_s: float = _key(5.0, 'detect --follow refreshes RUN_DIR/detect_status.json (its packets/s and alert counts, which the board reports to the server) and its packets/s for /metrics this often', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    follow_poll_s: float = _key(2.0, 'detect --follow: how often to look for a newer model from the federation', check=(lambda v: _is_num(v) and v > 0, 'a number of seconds > 0'))
    explain_remotes: int = _key(16, 'an alert episode explains its first window alert and the first of each other remote endpoint in it, up to this many endpoints (each costs a forward pass)', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    alert_interval_s: float = _key(30.0, 'syslog and MQTT: at most one alert message per host and watched device per this many seconds (the JSON lines keep every alert)', check=(lambda v: _is_num(v) and v >= 0, 'a number of seconds >= 0'))
    alert_queue: int = _key(1000, 'syslog/MQTT messages waiting to be sent; beyond it new ones are dropped and counted: packet processing never waits for a network sink', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))
    syslog: str | None = _key(None, 'send alerts as RFC 5424 syslog messages to udp://HOST:PORT, tcp://HOST:PORT (octet-counted framing, RFC 6587) or unix:///dev/log; null = off', check=(lambda v: v is None or (isinstance(v, str) and v.split("://")[0] in ("udp", "tcp", "unix") and "://" in v), 'null or udp://HOST:PORT, tcp://HOST:PORT, unix://PATH'))
    mqtt_broker: str | None = _key(None, 'send alerts to this MQTT broker (HOST:PORT) with Home Assistant MQTT discovery: one binary sensor per watched device; null = off', check=(lambda v: v is None or (isinstance(v, str) and v.rpartition(":")[2].isdigit() and v.rpartition(":")[0] != ""), 'null or HOST:PORT'))
    mqtt_topic_prefix: str = _key('fediot', 'MQTT: state and alert topics are PREFIX/<board>/<device>/...', check=(lambda v: isinstance(v, str) and v != "" and not set(v) & set("#+"), 'a topic level without # or +'))
    mqtt_discovery_prefix: str = _key('homeassistant', "MQTT: Home Assistant's discovery prefix (its default)", check=(lambda v: isinstance(v, str) and v != "" and not set(v) & set("#+"), 'a topic level without # or +'))
    mqtt_username: str | None = _key(None, 'MQTT: user name (null = anonymous)', check=(lambda v: v is None or isinstance(v, str), 'null or a string'))
    mqtt_password_file: str | None = _key(None, 'MQTT: file holding the password (never the password itself in a config)', check=(lambda v: v is None or isinstance(v, str), 'null or a path'))


# attack_args.attack: what a simulated malicious client can do (attacks/clients.py implements each)
ATTACKS = ("none", "data_poisoning", "model_scaling", "random_update", "stats_inflation", "eval_lies", "stats_overflow",
           "val_overflow", "threshold_edge", "alie", "ipm", "flood", "health_lies")


@dataclass(frozen=True)
class AttackArgs:
    """Simulated malicious clients: what an attack does to a run, and what the aggregation rule stops."""

    malicious_ranks: list[int] | None = _key(None, 'client ranks that attack (null = none); the others are honest and do not know', check=(lambda v: v is None or (isinstance(v, list) and all(_is_int(r) and r >= 1 for r in v)), 'null or a list of client ranks >= 1'))
    attack: str = _key('none', 'what the malicious ranks do (attacks/: data_poisoning, model_scaling, random_update, stats_inflation, eval_lies, stats_overflow, val_overflow, threshold_edge, ipm, alie, flood, health_lies)', choices=ATTACKS)
    attack_scale: float = _key(10.0, 'strength of the attack (see attack); random_update: noise std relative to each weight tensor\'s std', check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    red_team: bool = _key(False, 'deployment: let attack_args make boards malicious (a red-team exercise on your own LAN, said on every start); without it a deployment whose attack_args name a rank refuses to start', check=(lambda v: isinstance(v, bool), 'true or false'))


@dataclass(frozen=True)
class StatusArgs:
    """Watching a run: the server's status page and /metrics, and what boards report about themselves."""

    port: int | None = _key(8765, "the server's status page, /api/status and /metrics on this port (0 = any free port, printed and kept in RUN_DIR/status.json); null = none; a port in use is a warning", check=(lambda v: v is None or (_is_int(v) and 0 <= v <= 65535), 'null or a port 0..65535'))
    host: str = _key('127.0.0.1', 'the address the status server listens on: loopback by default; any other address (the LAN) needs token', check=(lambda v: isinstance(v, str) and len(v) > 0, 'an IP address'))
    token: str | None = _key(None, 'access token for the status server (Authorization: Bearer TOKEN, or ?token=TOKEN in a browser): when set, every request needs it; required when host is not loopback. At least 16 characters', check=(lambda v: v is None or (isinstance(v, str) and len(v) >= 16 and v.isprintable() and " " not in v), 'null or a printable string of >= 16 characters without spaces'))
    refresh_s: float = _key(2.0, 'how often the status page asks the server for news', check=(lambda v: _is_num(v) and v >= 0.5, 'a number of seconds >= 0.5'))
    linger_watched_s: float = _key(600.0, 'when the status page was opened during the run, the server keeps it up this many seconds after the run ends (the final page, its report and figures; Ctrl-C ends the wait); 0 = not for that', check=(lambda v: _is_num(v) and v >= 0, 'a number of seconds >= 0'))
    linger_s: float = _key(0.0, 'keep the status server up this many seconds after every run, watched or not (the longer of this and linger_watched_s applies)', check=(lambda v: _is_num(v) and v >= 0, 'a number of seconds >= 0'))
    health_interval_s: float = _key(10.0, 'each board (or simulation worker) reports its health (versions, memory, CPU, disk, uptime, last round, its detector, recent warnings) this often; the server ignores reports that come faster than half of it', check=(lambda v: _is_num(v) and v >= 1, 'a number of seconds >= 1'))
    health_warnings: int = _key(20, 'recent warnings/errors a health report carries at most (the count of the rest is exact), each cut to 300 characters', check=(lambda v: _is_int(v) and 0 <= v <= 100, 'an integer 0..100'))
    keep_rounds: int = _key(1000, 'round records the status server keeps for the page (rounds.jsonl keeps them all)', check=(lambda v: _is_int(v) and v >= 1, 'an integer >= 1'))


@dataclass(frozen=True)
class PrivacyArgs:
    """Client-level differential privacy of the model updates (federation/privacy.py)."""

    dp: bool = _key(False, 'DP-FedAvg: each update clipped to clip_norm, equally weighted mean, Gaussian noise (noise_multiplier x clip_norm / clients); epsilon in rounds.jsonl and metrics.json', check=(lambda v: isinstance(v, bool), 'true or false'))
    clip_norm: float = _key(2.0, "L2 norm each client's update (its weights minus the global ones) is clipped to", check=(lambda v: _is_num(v) and v > 0, 'a number > 0'))
    noise_multiplier: float = _key(1.0, 'Gaussian noise std in units of clip_norm, on the sum of the clipped updates (0 = clipping only: epsilon infinite)', check=(lambda v: _is_num(v) and v >= 0, 'a number >= 0'))
    delta: float = _key(1e-5, "the delta at which epsilon is reported (below 1 / the number of clients)", check=(lambda v: _is_num(v) and 0 < v < 1, 'a number in (0, 1)'))


SECTIONS: dict[str, type] = {
    "common_args": CommonArgs, "environment_args": EnvironmentArgs, "data_args": DataArgs,
    "model_args": ModelArgs, "train_args": TrainArgs, "validation_args": ValidationArgs,
    "device_args": DeviceArgs, "comm_args": CommArgs, "tracking_args": TrackingArgs, "attack_args": AttackArgs,
    "detect_args": DetectArgs, "status_args": StatusArgs, "privacy_args": PrivacyArgs,
}
# section name -> attribute of FedIoTConfig ("train_args" -> cfg.train)
ATTRS: dict[str, str] = {name: name.removesuffix("_args") for name in SECTIONS}

SECONDS_PER_DAY = 86400.0  # the budget rule's and captured rows' time unit
ROBUST_AGGREGATION = "trimmed_mean"  # what aggregation 'auto' means with robust: true (bench/threshold_grid.py, bench/robustness_study.py)


@dataclass(frozen=True)
class Defenses:
    """The server's defenses against lying clients in effect for a run (from train_args/validation_args)."""

    robust: bool  # also: trimmed merge of feature statistics, report consistency checks
    aggregation: str
    trim_fraction: float
    byzantine_clients: int
    screen_norm_factor: float | None
    scale_ratio_limit: float
    count_ratio_limit: float | None


# section -> key -> (default, meaning): the documented table (README "Configuration").
DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    name: {f.name: (f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()
}


@dataclass(frozen=True)
class FedIoTConfig:
    """The validated configuration, one typed section per YAML section; defaults filled in."""

    path: Path | None
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
    def defenses(self) -> "Defenses":
        """What the server actually applies (train_args.robust switches all of it off at once)."""
        t, robust = self.train, self.train.robust
        rule = t.aggregation if t.aggregation != "auto" else (ROBUST_AGGREGATION if robust else "fedavg")
        return Defenses(robust, rule, t.trim_fraction, t.byzantine_clients,
                        t.screen_norm_factor if robust else None, t.scale_ratio_limit,
                        t.count_ratio_limit if robust else None)

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
        return list(self.data.devices)

    @property
    def clients(self) -> list[str]:
        """Client names in rank order: each device's clients_per_device clients, device by device (a copy)."""
        return list(self._client_names)

    @functools.cached_property
    def _client_names(self) -> tuple[str, ...]:
        """Built once: the server samples from these every round (1,008 names took 0.3 ms to build each time)."""
        k = self.data.clients_per_device
        return tuple(client_name(d, i, k) for d in self.data.devices for i in range(1, k + 1))

    @property
    def values(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (section -> key -> value), as written to a run's config.yaml."""
        return {name: dataclasses.asdict(getattr(self, ATTRS[name])) for name in SECTIONS}

    def fedml_values(self) -> dict[str, dict[str, Any]]:
        """Only the keys FedML itself reads (what fedml.init() gets to see); null ones are left to
        FedML's own defaults."""
        out: dict[str, dict[str, Any]] = {}
        for name, cls in SECTIONS.items():
            section = getattr(self, ATTRS[name])
            keys = {f.name: getattr(section, f.name) for f in dataclasses.fields(cls)
                    if f.metadata["fedml"] and getattr(section, f.name) is not None}
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
    d["devices"] = _parse_devices(d["devices"], where, local=d["dataset"] == "local")
    values["comm_args"]["revoked_ranks"] = sorted(set(values["comm_args"]["revoked_ranks"] or []))
    values["attack_args"]["malicious_ranks"] = sorted(set(values["attack_args"]["malicious_ranks"] or []))
    _check_sizes(values, where)
    sections = {ATTRS[name]: cls(**values[name]) for name, cls in SECTIONS.items()}
    return FedIoTConfig(path=path, **sections)


def _check_sizes(values: dict[str, dict[str, Any]], where: str) -> None:
    """Clients, devices, clients per round and per-round minimums must fit together (one client per device)."""
    n_devices = len(values["data_args"]["devices"])
    per_device = values["data_args"]["clients_per_device"]
    n_clients = n_devices * per_device
    t = values["train_args"]
    for key in ("client_num_in_total", "client_num_per_round"):
        if t[key] is None:
            t[key] = n_clients
    if t["client_num_in_total"] != n_clients:
        raise ConfigError(f"{where}: data_args.devices lists {n_devices} device(s) x clients_per_device {per_device} = "
                          f"{n_clients} client(s) but train_args.client_num_in_total = {t['client_num_in_total']}; "
                          f"set it to {n_clients} or leave it out")
    if t["model_average_rounds"] is None:
        t["model_average_rounds"] = (SAMPLED_AVERAGE_ROUNDS if t["client_num_per_round"] * SAMPLED_AVERAGE_ROUNDS
                                     < n_clients else 1)
    if t["client_num_per_round"] > n_clients:
        raise ConfigError(f"{where}: train_args.client_num_per_round = {t['client_num_per_round']} > "
                          f"{n_clients} clients (client_num_in_total)")
    if per_device > 1 and values["common_args"]["training_type"] != "simulation":
        raise ConfigError(f"{where}: data_args.clients_per_device = {per_device}: a deployment has one client per "
                          f"board (device); clients_per_device is for simulations")
    if t["min_clients_per_round"] is None:
        t["min_clients_per_round"] = t["client_num_per_round"] // 2 + 1
    if t["min_clients_per_round"] > t["client_num_per_round"]:
        raise ConfigError(f"{where}: train_args.min_clients_per_round = {t['min_clients_per_round']} > "
                          f"{t['client_num_per_round']} clients per round (client_num_per_round)")
    bad = [r for r in values["attack_args"]["malicious_ranks"] if r > n_clients]
    if bad:
        raise ConfigError(f"{where}: attack_args.malicious_ranks has rank(s) {bad}; clients are 1..{n_clients}")
    if t["aggregation"] in ("krum", "multikrum") and t["client_num_per_round"] < 2 * t["byzantine_clients"] + 3:
        raise ConfigError(f"{where}: train_args.aggregation = {t['aggregation']} with byzantine_clients = "
                          f"{t['byzantine_clients']} needs at least {2 * t['byzantine_clients'] + 3} clients per round; "
                          f"client_num_per_round is {t['client_num_per_round']}")
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


def check_world_size(cfg: FedIoTConfig, world_size: int) -> None:
    """An MPI simulation runs 1 server + N worker ranks, 1 <= N <= client_num_in_total: client i lives at worker
    1 + i % N, which trains it whenever it is sampled (N = client_num_in_total: one rank per client; fewer: a
    worker trains its sampled clients one after the other, e.g. N = the machine's cores)."""
    workers = world_size - 1
    if workers < 1:
        raise ConfigError(f"MPI world size is {world_size}; a simulation needs 1 server + N clients (use run_simulation.sh N)")
    if not cfg.is_simulation:
        raise ConfigError(f"{_where(cfg.path)}: the simulation needs common_args.training_type: simulation and comm_args.backend: MPI")
    t = cfg.train
    if workers > t.client_num_in_total:
        raise ConfigError(f"{_where(cfg.path)}: {workers} client process(es) were started but the config has "
                          f"{t.client_num_in_total} client(s) ({len(cfg.devices)} device(s) x clients_per_device "
                          f"{cfg.data.clients_per_device}). Start at most {t.client_num_in_total} (one per client); "
                          f"{t.client_num_per_round} (clients per round) or the machine's cores are good choices.")


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
