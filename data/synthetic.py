"""A small generator of N-BaIoT-shaped rows for offline demos and tests.

It is NOT a traffic simulator: each row is computed from a few latent per-row quantities (packet
rate, packet size, size spread) that drift slowly in time (AR(1)), turned into the 115 damped
statistics the way N-BaIoT defines them (weight ~ rate / lambda, mean ~ size, ...). Devices differ by
profile (rates, sizes, peers); each attack has its own profile (floods: high rate, fixed sizes;
scans: many peers, tiny packets; junk: random sizes). Deterministic for a given seed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import nbaiot
from data.csvfile import write_feature_csv

MARKER_FILE = "SYNTHETIC_DATA.txt"
_LAMBDAS = np.array([5.0, 3.0, 1.0, 0.1, 0.01])
# Relative noise of each cell on top of the shared per-row latent state. In real N-BaIoT rows all
# statistics of a row derive from the same packets, so independent per-cell noise is small.
CELL_NOISE = 0.005


@dataclass(frozen=True)
class TrafficProfile:
    """Latent traffic description behind one kind of rows."""

    rate: float          # packets per second from the host
    size: float          # mean packet size (bytes)
    size_std: float      # spread of packet sizes
    reply_size: float    # mean size in the reverse direction (HH, HpHp)
    channel_share: float  # fraction of the host's packets on the busiest IP channel
    socket_share: float   # fraction on the busiest socket
    correlation: float    # size correlation between directions (pcc)
    drift: float = 0.15   # strength of slow per-row variation


# Base benign profiles per device kind (rate, size, size_std, reply, channel, socket, pcc).
_KIND_PROFILES: dict[str, TrafficProfile] = {
    "doorbell": TrafficProfile(2.0, 180.0, 90.0, 120.0, 0.6, 0.3, 0.2),
    "thermostat": TrafficProfile(0.8, 140.0, 60.0, 200.0, 0.8, 0.5, 0.1),
    "baby_monitor": TrafficProfile(25.0, 700.0, 400.0, 90.0, 0.9, 0.8, 0.05),
    "camera": TrafficProfile(40.0, 900.0, 450.0, 80.0, 0.9, 0.85, 0.05),
    "webcam": TrafficProfile(30.0, 800.0, 420.0, 85.0, 0.85, 0.8, 0.05),
}
_DEVICE_KIND: dict[str, str] = {
    "Danmini_Doorbell": "doorbell",
    "Ecobee_Thermostat": "thermostat",
    "Ennio_Doorbell": "doorbell",
    "Philips_B120N10_Baby_Monitor": "baby_monitor",
    "Provision_PT_737E_Security_Camera": "camera",
    "Provision_PT_838_Security_Camera": "camera",
    "Samsung_SNH_1011_N_Webcam": "webcam",
    "SimpleHome_XCS7_1002_WHT_Security_Camera": "camera",
    "SimpleHome_XCS7_1003_WHT_Security_Camera": "camera",
}
_ATTACK_PROFILES: dict[str, TrafficProfile] = {
    "gafgyt_combo": TrafficProfile(300.0, 600.0, 420.0, 60.0, 0.3, 0.01, 0.0, 0.4),
    "gafgyt_junk": TrafficProfile(400.0, 800.0, 350.0, 60.0, 0.9, 0.02, 0.0, 0.4),
    "gafgyt_scan": TrafficProfile(200.0, 60.0, 2.0, 60.0, 0.01, 0.005, 0.0, 0.3),
    "gafgyt_tcp": TrafficProfile(800.0, 66.0, 5.0, 60.0, 1.0, 0.05, 0.0, 0.3),
    "gafgyt_udp": TrafficProfile(900.0, 554.0, 3.0, 60.0, 1.0, 0.05, 0.0, 0.3),
    "mirai_ack": TrafficProfile(1500.0, 60.0, 1.0, 60.0, 1.0, 0.001, 0.0, 0.3),
    "mirai_scan": TrafficProfile(150.0, 60.0, 1.0, 60.0, 0.005, 0.005, 0.0, 0.3),
    "mirai_syn": TrafficProfile(1500.0, 74.0, 1.0, 60.0, 1.0, 0.001, 0.0, 0.3),
    "mirai_udp": TrafficProfile(1200.0, 554.0, 2.0, 60.0, 1.0, 0.01, 0.0, 0.3),
    "mirai_udpplain": TrafficProfile(2000.0, 554.0, 0.5, 60.0, 1.0, 0.5, 0.0, 0.3),
}


def device_profile(device: str, seed: int) -> TrafficProfile:
    """The benign profile of a device: its kind's profile, perturbed per device and seed."""
    nbaiot.check_device(device)
    base = _KIND_PROFILES[_DEVICE_KIND[device]]
    rng = np.random.default_rng([seed, nbaiot.device_index(device), 1])
    jitter = np.exp(rng.normal(0.0, 0.3, size=4))
    return TrafficProfile(
        rate=base.rate * jitter[0], size=base.size * jitter[1], size_std=base.size_std * jitter[2],
        reply_size=base.reply_size * jitter[3], channel_share=base.channel_share,
        socket_share=base.socket_share, correlation=base.correlation, drift=base.drift,
    )


def _ar1(rng: np.random.Generator, n: int, dims: int, rho: float = 0.97) -> np.ndarray:
    """Slowly drifting standard-normal latent series (n x dims)."""
    z = np.empty((n, dims))
    z[0] = rng.normal(size=dims)
    noise = rng.normal(size=(n, dims)) * np.sqrt(1 - rho ** 2)
    for t in range(1, n):
        z[t] = rho * z[t - 1] + noise[t]
    return z


def generate_rows(profile: TrafficProfile, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """n_rows x 115 feature rows following `profile`, in N-BaIoT column order."""
    z = _ar1(rng, n_rows, 3)
    d = profile.drift
    rate = profile.rate * np.exp(d * z[:, 0])
    size = profile.size * np.exp(0.4 * d * z[:, 1])
    size_std = profile.size_std * np.exp(0.6 * d * z[:, 2])
    reply = np.full(n_rows, profile.reply_size)
    reply_std = 0.3 * reply

    def noisy(x: np.ndarray, scale: float = CELL_NOISE) -> np.ndarray:
        return x * np.exp(rng.normal(0.0, scale, size=x.shape))

    blocks: list[np.ndarray] = []
    lam = _LAMBDAS[None, :]  # damped window ~ 1/lambda seconds

    def weights(share: float) -> np.ndarray:
        return np.maximum(noisy((rate * share)[:, None] / lam + 1.0), 1.0)

    def one_dir(share: float) -> list[np.ndarray]:
        w = weights(share)
        mean = noisy(np.repeat(size[:, None], 5, axis=1))
        var = noisy(np.repeat((size_std ** 2)[:, None], 5, axis=1))
        return [w, mean, var]

    def two_dir(share: float) -> list[np.ndarray]:
        w, mean, var = one_dir(share)
        std = np.sqrt(var)
        magnitude = np.sqrt(mean ** 2 + reply[:, None] ** 2)
        radius = np.sqrt(var + reply_std[:, None] ** 2)
        pcc = np.clip(profile.correlation + rng.normal(0.0, CELL_NOISE, size=w.shape), -1.0, 1.0)
        cov = pcc * std * reply_std[:, None]
        return [w, mean, std, magnitude, radius, cov, pcc]

    def jitter(share: float) -> list[np.ndarray]:
        w = weights(share)
        gap = noisy(np.repeat((1.0 / (rate * share))[:, None], 5, axis=1))
        return [w, gap, (0.5 * gap) ** 2]

    groups = {
        "MI_dir": one_dir(1.0),
        "H": one_dir(1.0),
        "HH": two_dir(profile.channel_share),
        "HH_jit": jitter(profile.channel_share),
        "HpHp": two_dir(profile.socket_share),
    }
    for stream in nbaiot.COLUMN_GROUPS:
        stats = groups[stream]
        # column order: for each decay, all stats of the stream
        blocks.append(np.stack(stats, axis=2).reshape(n_rows, 5 * len(stats)))
    rows = np.concatenate(blocks, axis=1)
    assert rows.shape[1] == nbaiot.N_FEATURES
    return rows


def _write_csv(path: Path, rows: np.ndarray) -> None:
    write_feature_csv(path, rows)


def write_device(root: Path, device: str, seed: int, benign_rows: int, attack_rows: int) -> Path:
    """Write one synthetic device directory atomically (temp dir + rename)."""
    rng = np.random.default_rng([seed, nbaiot.device_index(device), 2])
    target = root / device
    tmp = Path(tempfile.mkdtemp(prefix=f".{device}.", dir=root))
    try:
        _write_csv(tmp / nbaiot.BENIGN_FILE, generate_rows(device_profile(device, seed), benign_rows, rng))
        for attack in nbaiot.attack_names(device):
            rel = nbaiot.attack_relpath(attack)
            (tmp / rel.parent).mkdir(exist_ok=True)
            _write_csv(tmp / rel, generate_rows(_ATTACK_PROFILES[attack], attack_rows, rng))
        complete = target / nbaiot.BENIGN_FILE
        if not complete.exists():  # another process may have written the same (deterministic) files meanwhile:
            if target.exists():    # theirs stay, whoever reads them keeps reading; an incomplete one is replaced
                shutil.rmtree(target)
            try:
                os.replace(tmp, target)
            except OSError:
                if not complete.exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_synthetic(root: str | Path, devices: list[str], seed: int, benign_rows: int, attack_rows: int) -> Path:
    """Generate (once) synthetic data for `devices` under root/seed<seed>-b<benign>-a<attack>/.

    Returns the directory holding the per-device layout. Generation is deterministic, so the
    cached files are reused when they exist.
    """
    out = Path(root) / f"seed{seed}-b{benign_rows}-a{attack_rows}"
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER_FILE
    if not marker.exists():
        marker.write_text(
            "SYNTHETIC data generated by FedIoT's data/synthetic.py (not real N-BaIoT traffic).\n"
            f"seed={seed} benign_rows={benign_rows} attack_rows={attack_rows}\n"
        )
    for device in devices:
        if not (out / device / nbaiot.BENIGN_FILE).exists():
            write_device(out, device, seed, benign_rows, attack_rows)
    return out
