"""train_args and privacy_args: rounds, local training, the server's round rules and defenses, DP (federation/)."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import MAX_CLIENTS, is_int, is_num, setting

# model_average_rounds (null) when a pass over the clients takes more than this many rounds: the mean of the last
# 10 global models then holds ~10 x client_num_per_round client trainings (measured: README "Many clients")
SAMPLED_AVERAGE_ROUNDS = 10
ROBUST_AGGREGATION = "trimmed_mean"  # what aggregation 'auto' means with robust: true (bench/threshold_grid.py, bench/robustness_study.py)


@dataclass(frozen=True)
class TrainArgs:
    """Rounds, local training and the server's round rules."""

    federated_optimizer: str = setting('FedAvg', "FedML's name of the federated algorithm: FedAvg, FedProx (fedprox_mu), FedOpt (server_optimizer: FedAvgM, FedAdam, FedYogi, FedAdagrad) or FedNova", choices=('FedAvg', 'FedProx', 'FedOpt', 'FedNova'), fedml=True)
    fedprox_mu: float = setting(0.01, "FedProx: weight of the proximal term (FedML's key)", check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'), fedml=True)
    server_optimizer: str = setting('sgd', "FedOpt: the server's optimizer (FedML's key): sgd, adam, yogi, adagrad", choices=('sgd', 'adam', 'yogi', 'adagrad'), fedml=True)
    server_lr: float = setting(1.0, "FedOpt: the server's learning rate (FedML's key); sgd with server_lr 1 and server_momentum 0 is FedAvg. Reddi et al. use 0.01-0.1 for adam, yogi and adagrad", check=(lambda v: is_num(v) and v > 0, 'a number > 0'), fedml=True)
    server_momentum: float = setting(0.0, "FedOpt with sgd: server momentum (FedML's key; 0 = none, and with server_lr 1 that is FedAvg; Hsu et al.'s FedAvgM: 0.9 with server_lr about 1 - momentum)", check=(lambda v: is_num(v) and 0 <= v < 1, 'a number in [0, 1)'), fedml=True)
    server_beta1: float = setting(0.9, 'FedOpt with adam, yogi, adagrad: decay of the first moment (Reddi et al.)', check=(lambda v: is_num(v) and 0 <= v < 1, 'a number in [0, 1)'))
    server_beta2: float = setting(0.99, 'FedOpt with adam, yogi: decay of the second moment (Reddi et al.)', check=(lambda v: is_num(v) and 0 <= v < 1, 'a number in [0, 1)'))
    server_tau: float = setting(0.001, 'FedOpt with adam, yogi, adagrad: the adaptivity floor tau added to sqrt(v) (Reddi et al.)', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    client_id_list: str = setting('[]', 'FedML: leave as is', fedml=True)
    client_num_in_total: int = setting(None, 'number of clients (null = devices x clients_per_device; must equal it)', check=(lambda v: v is None or (is_int(v) and 1 <= v <= MAX_CLIENTS), f'null or an integer in 1..{MAX_CLIENTS}'), fedml=True)
    client_num_per_round: int = setting(None, "clients that train in each round (null = client_num_in_total); fewer: a seeded sample per round (FedML's rule), recorded as 'sampled'; every client is evaluated", check=(lambda v: v is None or (is_int(v) and 1 <= v <= MAX_CLIENTS), f'null or an integer in 1..{MAX_CLIENTS}'), fedml=True)
    comm_round: int = setting(20, 'federated rounds', check=(lambda v: is_int(v) and 1 <= v <= 100_000, 'an integer in 1..100000'), fedml=True)
    epochs: int = setting(5, 'local epochs per round', check=(lambda v: is_int(v) and 1 <= v <= 10_000, 'an integer in 1..10000'))
    batch_size: int = setting(64, 'mini-batch size', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    client_optimizer: str = setting('adam', 'local optimizer (adam)', choices=('adam',))
    learning_rate: float = setting(0.003, 'learning rate in round 0', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    lr_decay: float = setting(0.9, 'cross-round schedule: lr(round) = max(learning_rate * lr_decay**round, min_learning_rate)', check=(lambda v: is_num(v) and 0 < v <= 1, 'a number in (0, 1]'))
    model_average_rounds: int | None = setting(None, 'the evaluated and saved model is the mean of the global models of the last this many rounds (second half of the run); 1 = the latest; null = 10 when a pass over the clients takes > 10 rounds, else 1', check=(lambda v: v is None or (is_int(v) and v >= 1), 'null or an integer >= 1'))
    min_learning_rate: float = setting(0.0001, 'floor of the cross-round learning-rate schedule', check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'))
    weight_decay: float = setting(0.0, 'Adam weight decay', check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'))
    round_timeout_s: float = setting(300, 'deployment: a round (and each evaluation phase) closes at this deadline with the clients that answered', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    min_clients_per_round: int | None = setting(1, 'deployment: fewer answers than this at the deadline stop the run (checkpoint kept); null = a majority of client_num_per_round (so the number of boards follows data_args.devices alone)', check=(lambda v: v is None or (is_int(v) and 1 <= v <= MAX_CLIENTS), f'null or an integer in 1..{MAX_CLIENTS}'))
    robust: bool = setting(True, 'the server defends against lying clients (robust aggregation, screening, robust merges, count caps, report checks); false: plain FedAvg and plain merging', check=(lambda v: isinstance(v, bool), 'true or false'))
    aggregation: str = setting('auto', "how the server combines model updates: auto (ROBUST_AGGREGATION when robust, else fedavg), fedavg, or a rule a minority of lying clients cannot steer: median, trimmed_mean, krum, multikrum, geo_median (federation/aggregation.py)", choices=('auto', 'fedavg', 'median', 'trimmed_mean', 'krum', 'multikrum', 'geo_median'))
    trim_fraction: float = setting(0.25, 'trimmed_mean (what auto is with robust): fraction of values dropped at each end, per coordinate (0.25: 2 of 9 clients at each end, as many as byzantine_clients)', check=(lambda v: is_num(v) and 0 <= v < 0.5, 'a number in [0, 0.5)'))
    byzantine_clients: int = setting(2, 'how many lying clients the robust rules are sized for (f): krum / multikrum, the trimmed merge of feature statistics and the trimmed global threshold; fewer clients: said at start', check=(lambda v: is_int(v) and v >= 0, 'an integer >= 0'))
    screen_norm_factor: float | None = setting(5.0, 'robust: leave out an update farther from the global model than this x the median distance (null = no screening)', check=(lambda v: v is None or (is_num(v) and v > 1), 'null or a number > 1'))
    scale_ratio_limit: float = setting(4.0, "robust: each feature's normalisation scale stays within 1/this..this x the scale of a trimmed merge; a device whose own rows lie beyond gets its own wider scales", check=(lambda v: is_num(v) and v >= 1, 'a number >= 1'))
    count_ratio_limit: float | None = setting(10.0, "robust: a client's row count (its weight in FedAvg-like rules and statistics merges) counts at most this x the median client's (null = as sent)", check=(lambda v: v is None or (is_num(v) and v >= 1), 'null or a number >= 1'))
    centralized_epochs: int | None = setting(30, 'baselines: epochs for the centralized and local-only models (null = comm_round * epochs)', check=(lambda v: v is None or (is_int(v) and v >= 1), 'null or an integer >= 1'))


@dataclass(frozen=True)
class PrivacyArgs:
    """Client-level differential privacy of the model updates (federation/privacy.py)."""

    dp: bool = setting(False, 'DP-FedAvg: each update clipped to clip_norm, equally weighted mean, Gaussian noise (noise_multiplier x clip_norm / clients); epsilon in rounds.jsonl and metrics.json', check=(lambda v: isinstance(v, bool), 'true or false'))
    clip_norm: float = setting(2.0, "L2 norm each client's update (its weights minus the global ones) is clipped to", check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    noise_multiplier: float = setting(1.0, 'Gaussian noise std in units of clip_norm, on the sum of the clipped updates (0 = clipping only: epsilon infinite)', check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'))
    delta: float = setting(1e-5, "the delta at which epsilon is reported (below 1 / the number of clients)", check=(lambda v: is_num(v) and 0 < v < 1, 'a number in (0, 1)'))
