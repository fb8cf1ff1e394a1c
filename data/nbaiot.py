"""The single source of N-BaIoT facts: devices, attack files, feature columns.

Reference: Meidan et al., "N-BaIoT: Network-based Detection of IoT Botnet Attacks Using Deep
Autoencoders", IEEE Pervasive Computing 2018; UCI Machine Learning Repository dataset 442.
"""
from __future__ import annotations

from pathlib import Path

# The nine devices, in UCI order (Kaggle's flat files number them 1..9 in this order).
DEVICES: tuple[str, ...] = (
    "Danmini_Doorbell",
    "Ecobee_Thermostat",
    "Ennio_Doorbell",
    "Philips_B120N10_Baby_Monitor",
    "Provision_PT_737E_Security_Camera",
    "Provision_PT_838_Security_Camera",
    "Samsung_SNH_1011_N_Webcam",
    "SimpleHome_XCS7_1002_WHT_Security_Camera",
    "SimpleHome_XCS7_1003_WHT_Security_Camera",
)

# Attack families and the attack types recorded for each (one CSV file per type).
ATTACK_TYPES: dict[str, tuple[str, ...]] = {
    "gafgyt": ("combo", "junk", "scan", "tcp", "udp"),
    "mirai": ("ack", "scan", "syn", "udp", "udpplain"),
}

# These two devices were never infected with Mirai in the dataset.
DEVICES_WITHOUT_MIRAI: frozenset[str] = frozenset({"Ennio_Doorbell", "Samsung_SNH_1011_N_Webcam"})

BENIGN_FILE = "benign_traffic.csv"

# Feature columns: damped-window statistics over five decay factors (lambda).
DECAY_LABELS: tuple[str, ...] = ("L5", "L3", "L1", "L0.1", "L0.01")
_STREAM_STATS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MI_dir", ("weight", "mean", "variance")),
    ("H", ("weight", "mean", "variance")),
    ("HH", ("weight", "mean", "std", "magnitude", "radius", "covariance", "pcc")),
    ("HH_jit", ("weight", "mean", "variance")),
    ("HpHp", ("weight", "mean", "std", "magnitude", "radius", "covariance", "pcc")),
)
COLUMNS: tuple[str, ...] = tuple(
    f"{stream}_{decay}_{stat}"
    for stream, stats in _STREAM_STATS
    for decay in DECAY_LABELS
    for stat in stats
)
N_FEATURES: int = len(COLUMNS)  # 115
COLUMN_GROUPS: tuple[str, ...] = tuple(stream for stream, _ in _STREAM_STATS)

# Not N-BaIoT: FedIoT's extension for rows captured from packets (`python -m capture`, `detect`; data_args.dataset:
# local). N-BaIoT's streams describe sizes and timing; none counts distinct peers, so a scan showed only as many new,
# light streams (issue 33: 0 of 4,641 scan rows flagged on three real devices). Per packet, for its source and its
# destination host: the damped count of new peers (IP pairs never seen or forgotten) and of new socket pairs the host
# took part in, at the same five decay factors. The first 115 columns stay N-BaIoT's, so N-BaIoT rows and models keep
# their meaning; a model of captured rows takes all of them (traffic/afterimage.py, doc/features.md).
FANOUT_COLUMNS: tuple[str, ...] = tuple(
    f"FO_{side}_{kind}_{decay}_weight" for side in ("src", "dst") for kind in ("peers", "sockets") for decay in DECAY_LABELS)
CAPTURED_COLUMNS: tuple[str, ...] = COLUMNS + FANOUT_COLUMNS
N_CAPTURED_FEATURES: int = len(CAPTURED_COLUMNS)  # 135

# What each group of columns describes, in a household's words (an alert says which groups its score comes from)
GROUP_MEANINGS: dict[str, str] = {
    "MI_dir": "traffic sent by this host (its MAC and IP)",
    "H": "packets sent by this host",
    "HH": "traffic between this host and one peer",
    "HH_jit": "timing of the traffic between this host and one peer",
    "HpHp": "traffic of one connection (its ports)",
    "FO_src_peers": "new peers this host sends to",
    "FO_src_sockets": "new connections this host opens",
    "FO_dst_peers": "new peers the receiving host hears from",
    "FO_dst_sockets": "new connections to the receiving host",
}


def group_of(column: str) -> str:
    """A column's group ("HH_jit_L0.1_mean" -> "HH_jit"; "FO_src_peers_L5_weight" -> "FO_src_peers")."""
    return column.split("_L", 1)[0]


def feature_columns(dataset: str) -> tuple[str, ...]:
    """The columns of a dataset's rows: captured rows (local) carry the fan-out extension, N-BaIoT's and the
    synthetic ones do not."""
    return CAPTURED_COLUMNS if dataset == "local" else COLUMNS


def attack_names(device: str) -> tuple[str, ...]:
    """Attack file names ('gafgyt_combo', ..., 'mirai_udpplain') recorded for `device`."""
    check_device(device)
    names = []
    for family, types in ATTACK_TYPES.items():
        if family == "mirai" and device in DEVICES_WITHOUT_MIRAI:
            continue
        names.extend(f"{family}_{t}" for t in types)
    return tuple(names)


def all_attack_names() -> tuple[str, ...]:
    """Every attack file name in registry order."""
    return tuple(f"{fam}_{t}" for fam, types in ATTACK_TYPES.items() for t in types)


def attack_relpath(attack: str) -> Path:
    """Path of an attack file inside a device directory: 'gafgyt_tcp' -> gafgyt_attacks/tcp.csv."""
    family, _, kind = attack.partition("_")
    if family not in ATTACK_TYPES or kind not in ATTACK_TYPES[family]:
        raise ValueError(f"unknown attack {attack!r}; expected one of {', '.join(all_attack_names())}")
    return Path(f"{family}_attacks") / f"{kind}.csv"


def device_index(device: str) -> int:
    """1-based UCI/Kaggle number of a device."""
    check_device(device)
    return DEVICES.index(device) + 1


def check_device(device: str) -> None:
    """Raise ValueError naming the valid devices if `device` is not one of them."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)}")
