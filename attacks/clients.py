"""The malicious clients of attack_args: one `LocalClient` subclass whose hooks say what `attack` says instead."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.loader import DeviceSplit
from federation.client import LocalClient
from federation.messages import C2S_UPDATE, MAX_HEADER_BYTES
from federation.wire import MAGIC, header_length_bytes
from attacks.settings import ATTACKS
from model.autoencoder import state_of
from model.detector import ErrorStats
from model.normalization import FeatureStats
from model.threshold import histogram, shifted_histogram

OVERFLOW = 1e308  # stats_overflow's total and total_sq of the first feature (issue 22: two such boards crashed a run)
POISONING_ATTACKS = ("data_poisoning", "model_scaling")  # train on the device's attack rows as if benign
TAMPERING_ATTACKS = ("model_scaling", "random_update", "alie", "ipm")  # send something computed from the global weights
HEALTH_LIE_MB = 1e12  # health_lies: memory no board has
HEALTH_LIE_WARNING = "<script>alert(1)</script>" * 400  # and a 10,000-character warning with markup


def make_client(split: DeviceSplit, feature_transform: str, record_file: Path | None, attack: str,
                attack_scale: float, **kw: Any) -> LocalClient:
    """A client as attack_args say of its rank: honest ('none') or `AttackingClient`."""
    if attack == "none":
        return LocalClient(split, feature_transform, record_file, **kw)
    return AttackingClient(split, feature_transform, record_file, attack=attack, attack_scale=attack_scale, **kw)


class AttackingClient(LocalClient):
    """A client that does `attack` (attack_args.attack; its strength attack_scale) instead of the honest thing, in
    the hooks `LocalClient` exposes; everything else is the honest client's."""

    def __init__(self, *args: Any, attack: str, attack_scale: float, **kw: Any) -> None:
        if attack not in ATTACKS or attack == "none":
            raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS[1:]}")
        super().__init__(*args, **kw)
        self.attack, self.attack_scale = attack, attack_scale
        self.keeps_global_weights = attack in TAMPERING_ATTACKS
        # flood: trains and answers honestly, and sends this many decoding bombs after each answer
        self.bombs_per_answer = max(1, round(attack_scale)) if attack == "flood" else 0
        # health_lies: reports attack_scale times as often as status_args.health_interval_s allows
        self.health_interval_factor = 1.0 / attack_scale if attack == "health_lies" else 1.0

    def claimed_stats(self) -> FeatureStats:
        stats = self.stats
        if self.attack == "stats_inflation":  # statistics of rows attack_scale times larger than its own
            f = self.attack_scale
            return FeatureStats(stats.count, stats.total * f, stats.total_sq * f * f, stats.minimum * f,
                                stats.maximum * f)
        if self.attack == "stats_overflow":  # finite numbers whose sums overflow when merged with one more such client
            total, total_sq = stats.total.copy(), stats.total_sq.copy()
            total[0] = total_sq[0] = OVERFLOW
            return FeatureStats(stats.count, total, total_sq, stats.minimum, stats.maximum)
        return stats

    @property
    def validation_rows(self) -> int:
        """threshold_edge claims attack_scale times its validation rows."""
        n = len(self.split.validation)
        return int(n * self.attack_scale) if self.attack == "threshold_edge" else n

    def rows_to_train(self) -> np.ndarray:
        if self.attack in POISONING_ATTACKS:  # the device's attack traffic, trained on as if it were benign
            return np.vstack([self.split.train, *self.split.attacks.values()])
        return self.split.train

    def claimed_rows(self, trained: np.ndarray) -> int:
        # a data poisoner also claims attack_scale times the rows it trained on: the row count is its word
        return int(len(trained) * self.attack_scale) if self.attack == "data_poisoning" else self.n_train

    def sent_weights(self, global_state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """model_scaling sends its poisoned model's update boosted attack_scale times (model replacement: scale ~
        clients / share), random_update noise, ipm and alie the untargeted attacks sized against robust rules
        (inner-product manipulation; a little is enough)."""
        local = state_of(self.model)
        if self.attack == "model_scaling":
            return {k: g + self.attack_scale * (local[k] - g) for k, g in global_state.items()}
        if self.attack == "ipm":  # inner-product manipulation: -attack_scale x the honest update (its own, as the
            # estimate of the honest clients' mean a colluding attacker has)
            return {k: g - self.attack_scale * (local[k] - g) for k, g in global_state.items()}
        if self.attack == "alie":  # "a little is enough": the honest mean minus attack_scale honest spreads per
            # coordinate, both estimated from its own update (mean ~ its update, spread ~ its magnitude): a step against
            # learning that stays within the honest updates' spread
            return {k: g + (local[k] - g) - self.attack_scale * (local[k] - g).abs() for k, g in global_state.items()}
        if self.attack == "random_update":
            gen = torch.Generator().manual_seed(seed)
            spread = {k: g.std() if g.numel() > 1 else g.abs() + 1e-3 for k, g in global_state.items()}
            return {k: g + self.attack_scale * spread[k] * torch.randn(g.shape, generator=gen)
                    for k, g in global_state.items()}
        return local

    def sent_validation_stats(self, own: ErrorStats) -> ErrorStats:
        s = own
        if self.attack == "stats_inflation":  # errors reported attack_scale times larger: mean and std scale alike
            return ErrorStats(s.count, s.total * self.attack_scale, s.total_sq * self.attack_scale ** 2,
                              shifted_histogram(s.window_hist, self.attack_scale), s.rows_per_day, s.tail_clusters,
                              s.tail_exceedances)
        if self.attack == "val_overflow":  # finite, and the square of their mean overflows a float
            return ErrorStats(s.count, 1e200, 1e300, s.window_hist, s.rows_per_day, s.tail_clusters, s.tail_exceedances)
        if self.attack == "threshold_edge":  # attack_scale x its rows, every error attack_scale x its own threshold
            t, n = s.threshold_by(self.rule) * self.attack_scale, self.validation_rows
            return ErrorStats(n, t * n, t * t * n, histogram(np.full(max(1, n - self.window + 1), t)),
                              None if s.rows_per_day is None else s.rows_per_day * n / max(1, s.count))
        return s

    def sent_report(self, report: dict[str, Any]) -> dict[str, Any]:
        if self.attack == "eval_lies":
            fabricate_counts(report, self.attack_scale)
        if self.attack == "threshold_edge":  # consistent with the validation rows it claimed
            report["validation"]["n"] = self.validation_rows
        return report

    def extra_messages(self, sender: int, max_bytes: int) -> list[bytes]:
        """flood: bombs_per_answer decoding bombs after each answer."""
        return [decoding_bomb(sender, max_bytes) for _ in range(self.bombs_per_answer)]

    def health_fields(self, fields: dict[str, Any], nth: int) -> dict[str, Any]:
        """health_lies: every other report with numbers no board can have."""
        if self.attack == "health_lies" and nth % 2 == 0:
            return {**fields, "rss_mb": HEALTH_LIE_MB,
                    "warnings": [{"time": time.time(), "level": "ERROR", "message": HEALTH_LIE_WARNING}]}
        return fields


def decoding_bomb(sender: int, max_bytes: int) -> bytes:
    """What the `flood` attack sends besides its honest answers (issue 22, reproduction 3): the costliest message a
    certified peer can send inside the limits — just under `max_bytes`, its header just under the header limit and
    holding nothing but empty tensor entries (~90,000), so a receiver must parse the header before it can refuse the
    tensor count (the issue's had 1.9 M entries in a 63 MiB header: the header limit now refuses that unread)."""
    entry = b'"t%07d":{"__tensor__":["float32",[0],0,0]}'
    start = b'{"type":"%s","sender":%d,"receiver":0,"fields":{' % (C2S_UPDATE.encode(), sender)
    end = b"}}"
    n = (MAX_HEADER_BYTES - len(start) - len(end)) // (len(entry % 0) + 1)
    header = start + b",".join(entry % i for i in range(n)) + end
    message = MAGIC + header_length_bytes(len(header)) + header
    return message + bytes(max(0, max_bytes - 1 - len(message)))


def fabricate_counts(report: dict[str, Any], scale: float) -> None:
    """eval_lies: every attack row caught, no benign row flagged, attack_scale times the benign rows it holds
    (a board that hides its own infection and flatters the federation's numbers)."""
    for m in report["modes"].values():
        n_benign = int((m["benign"]["fp"] + m["benign"]["tn"]) * scale)
        m["benign"] = {"fp": 0, "tn": n_benign}
        for a in m["attacks"].values():
            a["tp"], a["fn"] = a["tp"] + a["fn"], 0
        w = m["window"]
        m["window"] = {"tp": w["tp"] + w["fn"], "fn": 0, "fp": 0, "tn": int((w["fp"] + w["tn"]) * scale)}
