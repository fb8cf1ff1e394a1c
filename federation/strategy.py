"""The server's aggregation policy as small stages, composed once from the config (issue 35).

A round's answers go through a `Strategy`: its weight stages (`CappedWeights`, `FedNova`), one combining stage
(`Screened` around an aggregation rule, or `DPClippedMean`), then its step stages (`ServerOpt`), e.g.
`CappedWeights -> FedNova -> Screened(trimmed_mean) -> ServerOpt` or `DPClippedMean -> ServerOpt`. Each stage is a
plain class with one `apply`; `build_strategy` is the one factory, and adding an algorithm or a defense is a new
stage and a line in it. `ServerPolicy` is what the config's defenses become for the run's client counts (the rules
assume a minority of liars; too few clients per round for a robust rule fall back to FedAvg), derived once — the
config keeps what the user wrote. The round state (`federation.state.RoundState`) owns the model, the round counter
and the checkpoint, and asks its strategy for each round's new weights.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from federation import defenses, privacy
from federation.aggregation import aggregate
from federation.algorithms import ServerOptimizer, fednova_rescale, local_steps
from fediot.config import FedIoTConfig

State = dict[str, torch.Tensor]


@dataclass
class RoundWork:
    """What the stages of one round read and write: the updates as (weight, weights) per client, the global weights
    before the round, and what the round's record and the console are told."""

    round: int  # the round being closed, 1-based
    updates: dict[str, tuple[int, State]]
    old: State
    new: State | None = None
    screened: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServerPolicy:
    """The defenses as they apply to this run's client counts (derived once; what was changed is said)."""

    defenses: Any  # fediot.config's Defenses, adjusted
    trimmed: int  # clients a trimmed rule leaves out of a merge (0: too few clients per round to tell liars apart)
    notices: tuple[str, ...]


def server_policy(cfg: FedIoTConfig) -> ServerPolicy:
    """The robust rules assume at most a minority of lying clients, and need enough clients per round to tell a liar
    from an honest device that is merely different: with fewer, they combine by FedAvg after screening."""
    d, notices = cfg.plan.defenses, []
    liars = defenses.effective_liars(d.byzantine_clients, len(cfg.clients))
    if d.robust and liars < d.byzantine_clients:
        notices.append(f"train_args.byzantine_clients = {d.byzantine_clients} with {len(cfg.clients)} clients: the robust "
                       f"rules assume at most {liars} lying client(s), a minority")
        d = dataclasses.replace(d, byzantine_clients=liars)
    trimmed = liars
    per_round = cfg.plan.clients_per_round
    if d.robust and per_round < defenses.robust_rule_minimum(liars):
        trimmed = 0
        rule = "FedAvg" if cfg.train.aggregation == "auto" else cfg.train.aggregation
        notices.append(
            f"{per_round} clients per round: too few for the robust rules to tell a liar from an honest device that "
            f"is merely different (they need {defenses.robust_rule_minimum(liars)} for {liars} lying client(s)); "
            f"updates are combined by {rule} after screening, feature statistics merged with row counts capped")
        if cfg.train.aggregation == "auto":
            d = dataclasses.replace(d, aggregation="fedavg")
    return ServerPolicy(d, trimmed, tuple(notices))


# ----------------------------------------------------------------------------------------------------- weight stages
@dataclass
class CappedWeights:
    """A client weighs at most the rows it announced in its hello, and at most count_ratio_limit x the median."""

    announced: Callable[[], dict[str, dict[str, Any]]]
    count_ratio_limit: float

    def apply(self, w: RoundWork) -> None:
        told = self.announced()
        counts = {c: min(n, told.get(c, {}).get("n_train", n)) for c, (n, _) in w.updates.items()}
        capped, cut = defenses.capped_counts(counts, self.count_ratio_limit)
        w.notices.extend(f"round {w.round} weights: {client}: {why}" for client, why in sorted(cut.items()))
        w.updates = {c: (capped[c], s) for c, (_, s) in w.updates.items()}


@dataclass
class FedNova:
    """Each update scaled to the round's effective local steps, before it is combined (Wang et al. 2020)."""

    epochs: int
    batch_size: int

    def apply(self, w: RoundWork) -> None:
        w.updates = fednova_rescale(w.updates, w.old, {c: local_steps(n, self.epochs, self.batch_size)
                                                       for c, (n, _) in w.updates.items()})


# ----------------------------------------------------------------------------------------------------- combining
@dataclass
class Screened:
    """Updates too far from the global model left out (`federation.defenses.screen`), the rest combined by `rule`."""

    rule: str
    trim_fraction: float
    byzantine_clients: int
    screen_norm_factor: float | None

    name = property(lambda self: self.rule)

    def apply(self, w: RoundWork) -> None:
        w.new, w.screened = aggregate(w.updates, w.old, self.rule, self.trim_fraction, self.byzantine_clients,
                                      self.screen_norm_factor)


@dataclass
class DPClippedMean:
    """DP-FedAvg: each update clipped to clip_norm, equal weights, Gaussian noise; epsilon in the record."""

    clip_norm: float
    noise_multiplier: float
    delta: float
    sample_rate: Callable[[], float]
    noise: torch.Generator

    name = "dp_mean"

    def apply(self, w: RoundWork) -> None:
        deltas, norms = privacy.clip_updates({c: s for c, (_, s) in w.updates.items()}, w.old, self.clip_norm)
        w.new = privacy.noisy_mean(deltas, w.old, self.clip_norm, self.noise_multiplier, self.noise)
        eps = privacy.epsilon(self.noise_multiplier, self.sample_rate(), w.round, self.delta)
        w.record["privacy"] = privacy.record(norms, self.clip_norm, self.noise_multiplier, len(deltas), eps, self.delta)


# ----------------------------------------------------------------------------------------------------- step stages
@dataclass
class ServerOpt:
    """FedOpt: the server's optimizer steps on what the combining stage agreed on (its state is checkpointed)."""

    optimizer: ServerOptimizer

    def apply(self, w: RoundWork) -> None:
        w.new = self.optimizer.step(w.old, w.new)


@dataclass
class Strategy:
    """Weight stages, one combining stage, step stages: a round's new global weights."""

    weights: list[Any]
    combine: Any
    steps: list[Any]

    def aggregate(self, w: RoundWork) -> RoundWork:
        for stage in self.weights:
            stage.apply(w)
        self.combine.apply(w)
        for stage in self.steps:
            stage.apply(w)
        return w

    @property
    def server_optimizer(self) -> ServerOptimizer | None:
        return next((s.optimizer for s in self.steps if isinstance(s, ServerOpt)), None)

    def describe(self) -> str:
        """E.g. "CappedWeights -> FedNova -> Screened(trimmed_mean) -> ServerOpt"."""
        parts = [type(s).__name__ for s in self.weights]
        c = self.combine
        parts.append(f"Screened({c.rule})" if isinstance(c, Screened) else type(c).__name__)
        return " -> ".join(parts + [type(s).__name__ for s in self.steps])


def build_strategy(cfg: FedIoTConfig, policy: ServerPolicy, announced: Callable[[], dict[str, dict[str, Any]]],
                   sample_rate: Callable[[], float]) -> Strategy:
    """The run's strategy from its config: the one place stages are chosen and ordered."""
    d, t = policy.defenses, cfg.train
    weights: list[Any] = []
    if d.robust:
        weights.append(CappedWeights(announced, d.count_ratio_limit))
    if t.federated_optimizer == "FedNova":
        weights.append(FedNova(t.epochs, t.batch_size))
    if cfg.privacy.dp:
        p = cfg.privacy
        # the noise must be unpredictable to the clients (a seed in the config would undo the guarantee): runs with dp
        # are not bit-reproducible
        combine: Any = DPClippedMean(p.clip_norm, p.noise_multiplier, p.delta, sample_rate,
                                     torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little")))
    else:
        combine = Screened(d.aggregation, d.trim_fraction, d.byzantine_clients, d.screen_norm_factor)
    steps: list[Any] = []
    if t.federated_optimizer == "FedOpt":
        steps.append(ServerOpt(ServerOptimizer(t.server_optimizer, t.server_lr, t.server_momentum, t.server_beta1,
                                               t.server_beta2, t.server_tau)))
    return Strategy(weights, combine, steps)
