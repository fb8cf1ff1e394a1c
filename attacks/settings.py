"""attack_args: simulated malicious clients (attacks/clients.py implements each attack)."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import is_int, is_num, setting

# attack_args.attack: what a simulated malicious client can do
ATTACKS = ("none", "data_poisoning", "model_scaling", "random_update", "stats_inflation", "eval_lies", "stats_overflow",
           "val_overflow", "threshold_edge", "alie", "ipm", "flood", "health_lies")


@dataclass(frozen=True)
class AttackArgs:
    """Simulated malicious clients: what an attack does to a run, and what the aggregation rule stops."""

    malicious_ranks: list[int] | None = setting(None, 'client ranks that attack (null = none); the others are honest and do not know', check=(lambda v: v is None or (isinstance(v, list) and all(is_int(r) and r >= 1 for r in v)), 'null or a list of client ranks >= 1'))
    attack: str = setting('none', 'what the malicious ranks do (attacks/: data_poisoning, model_scaling, random_update, stats_inflation, eval_lies, stats_overflow, val_overflow, threshold_edge, ipm, alie, flood, health_lies)', choices=ATTACKS)
    attack_scale: float = setting(10.0, 'strength of the attack (see attack); random_update: noise std relative to each weight tensor\'s std', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    red_team: bool = setting(False, 'deployment: let attack_args make boards malicious (a red-team exercise on your own LAN, said on every start); without it a deployment whose attack_args name a rank refuses to start', check=(lambda v: isinstance(v, bool), 'true or false'))
