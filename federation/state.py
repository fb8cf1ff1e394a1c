"""The round state: the server's side of a federated run as pure rules (no console, no files, no transport).

`federation.driver.run_federation` is the one place that says in which order these are applied; every run path
(MPI simulation, gRPC deployment, the in-process grid, the Flower adapter) runs that driver. The state owns:

- the round's hyperparameters (`RoundPlan`: lr from the one learning-rate schedule, epochs, batch size, seed),
  sent to each client, which trains with exactly what it was sent; which clients train (`sample`);
- the normaliser from the clients' merged feature statistics;
- asking its strategy (`federation.strategy`: stages built once from the config) for each round's new weights;
- what a lying client's numbers may do (`cfg.plan.defenses`, the rules in `federation.defenses`);
- the per-round record (a dict for rounds.jsonl: lr, client losses and seconds, dropped clients, evaluation)
  and its summary line (returned, not printed); notices about what the defenses did (`take_notices`);
- which rounds evaluate (`is_eval_round`) and the evaluated model (tail average, `evaluated_state`); thresholds,
  the checks of the count reports and the metrics are its `evaluator`'s (`federation.evaluator.Evaluator`), which
  writes into the open round's record;
- the checkpoint payload and what the final outputs hold (written by `federation.outputs`).
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import torch

from data import nbaiot
from federation import defenses, privacy
from federation.evaluator import Evaluator
from federation.strategy import RoundWork, build_strategy, server_policy
from federation.messages import Hello, RoundPlan, Update
from fediot.config import FedIoTConfig, client_part, device_number, device_of_client
from fediot.console import round_bar
from fediot.errors import ConfigError
from model.autoencoder import AutoEncoder, state_of
from model.detector import ErrorStats
from model.normalization import FeatureStats, Normalizer

SERVER_CHECKPOINT_FORMAT = "fediot-server-checkpoint-v1"


def learning_rate_for_round(base_lr: float, decay: float, min_lr: float, round_idx: int) -> float:
    """FedDetect-style cross-round schedule: base_lr * decay**round, floored at min_lr."""
    return max(base_lr * decay ** round_idx, min_lr)


def is_eval_round(round_idx: int, n_rounds: int, frequency: int) -> bool:
    """Evaluate after every `frequency` rounds (1-based) and always after the last round."""
    return (round_idx + 1) % frequency == 0 or round_idx == n_rounds - 1


class RoundState:
    """Server-side state of a federated run: global model, normaliser, round counter, thresholds."""

    def __init__(self, cfg: FedIoTConfig, data_info: dict[str, Any], kind: str) -> None:
        self.cfg, self.data_info, self.kind = cfg, data_info, kind
        self.n_rounds = cfg.train.comm_round
        torch.manual_seed(cfg.common.random_seed)
        self.model = AutoEncoder(len(nbaiot.feature_columns(cfg.data.dataset)))
        self.normalizer: Normalizer | None = None
        # device -> its widened feature scales (`Normalizer.widened_for`), only for devices whose own rows lie beyond
        # the bounded normaliser's reach; its clients are sent them and its detector uses them
        self.device_scales: dict[str, list[float]] = {}
        self.normalization: dict[str, Any] | None = None  # what the normaliser was fitted on (metrics.json)
        self.round = 0  # rounds completed
        self.record: dict[str, Any] = {}  # the current round's line for rounds.jsonl
        self.sampled: list[str] = []  # the clients that train in the open round (`sample()`, drawn once per round)
        # the global models of the last model_average_rounds rounds; their mean is what is evaluated and saved
        self.recent: deque[dict[str, torch.Tensor]] = deque(maxlen=cfg.plan.model_average_rounds)
        self.evaluated: dict[str, torch.Tensor] | None = None  # the weights of the last evaluation
        self.started = time.monotonic()
        self.round_started = self.started
        self.eval_started = self.started
        self.notices: list[str] = []  # what the defenses did, for the console (`take_notices`)
        policy = server_policy(cfg)  # the defenses as they apply to this run's client counts
        self.defenses, self.trimmed = policy.defenses, policy.trimmed
        self.notices.extend(policy.notices)
        self.announced: dict[str, dict[str, Any]] = {}  # device -> n_train and held_out rows (from its hello)
        self.algorithm = cfg.train.federated_optimizer
        self.privacy = cfg.privacy if cfg.privacy.dp else None
        if self.privacy is not None:
            self.notices.append(
                f"privacy_args.dp: each update clipped to norm {self.privacy.clip_norm}, averaged with equal weights, "
                f"Gaussian noise {self.privacy.noise_multiplier} x {self.privacy.clip_norm} / clients; aggregation "
                f"{self.defenses.aggregation} and screening are not used (their influence per client is not bounded)")
        self.strategy = build_strategy(cfg, policy, lambda: self.announced, lambda: self.sample_rate)
        self.server_opt = self.strategy.server_optimizer
        self.evaluator = Evaluator(cfg.validation, self.defenses)  # thresholds -> report checks -> metrics

    def client_joined(self, hello: Hello) -> None:
        """What a client announced when it (re)joined: the counts its later messages must agree with."""
        self.announced[hello.device] = {"n_train": hello.n_train, "held_out": hello.held_out}

    def take_notices(self) -> list[str]:
        """The notices since the last call (count cuts, left-out statistics and reports), oldest first."""
        notices, self.notices = self.notices + self.evaluator.take_notices(), []
        return notices

    def _notice(self, what: str, cut: dict[str, str]) -> None:
        self.notices.extend(f"{what}: {client}: {why}" for client, why in sorted(cut.items()))

    # -- state
    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `checkpoint()`."""
        self.model.load_state_dict(checkpoint["model"])
        self.normalizer = Normalizer.from_dict(checkpoint["normalizer"])
        self.normalization = checkpoint.get("normalization")
        self.device_scales = dict(checkpoint.get("device_scales") or {})
        self.round = int(checkpoint["round_done"])
        self.evaluator.thresholds = checkpoint.get("thresholds")
        self.record = checkpoint.get("pending_record") or {}
        self.recent.clear()
        for state in checkpoint.get("recent") or [checkpoint["model"]]:
            self.recent.append(self._checked_state(state))
        if self.server_opt is not None and checkpoint.get("server_optimizer") is not None:
            try:
                self.server_opt.load_state_dict(checkpoint["server_optimizer"], state_of(self.model))
            except ValueError as exc:
                raise ConfigError(f"checkpoint: {exc} (not this run's?)") from None

    def _checked_state(self, state: Any) -> dict[str, torch.Tensor]:
        """A checkpointed set of global weights, as the model's own (names, shapes, finite)."""
        own = self.model.state_dict()
        if not isinstance(state, dict) or set(state) != set(own) or any(
                not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape
                or not bool(torch.isfinite(state[k]).all()) for k in own):
            raise ConfigError("checkpoint: its recent global models do not fit the autoencoder (not this run's?)")
        return {k: state[k].detach().to(own[k].dtype).clone() for k in own}

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume after the last completed round (plain types and tensors only)."""
        return {"format": SERVER_CHECKPOINT_FORMAT, "round_done": self.round, "model": state_of(self.model),
                "normalizer": self.normalizer.to_dict(), "normalization": self.normalization,
                "device_scales": self.device_scales, "thresholds": self.evaluator.thresholds,
                "recent": list(self.recent) if self.recent.maxlen > 1 else None,  # None: just `model`
                "pending_record": self.record or None,  # a round whose evaluation is still to come
                "server_optimizer": self.server_opt.state_dict() if self.server_opt is not None else None,
                "config": self.cfg.values}

    @property
    def sample_rate(self) -> float:
        """The share of clients that train in a round (the privacy accountant's sampling rate)."""
        return min(1.0, self.cfg.plan.clients_per_round / len(self.cfg.clients))

    @property
    def done(self) -> bool:
        return self.round >= self.n_rounds

    @property
    def evaluation_pending(self) -> bool:
        """Resumed after a round whose evaluation had not finished, or after the last round."""
        return self.done or bool(self.record)

    # -- normalisation
    def fit_normalizer(self, stats: dict[str, FeatureStats]) -> None:
        """The global normaliser from the clients' merged training-row statistics (once per run)."""
        if self.normalizer is not None:
            return
        m, d = self.cfg.model, self.defenses
        if d.robust:
            self.normalizer, merged, how, cut = defenses.robust_normalizer(
                stats, d.count_ratio_limit, self.trimmed, d.scale_ratio_limit, m.feature_transform, m.normalization)
            self._notice("feature statistics", cut)
            if self.trimmed:
                how += self._widen(stats)
        else:
            merged = FeatureStats.merge(list(stats.values()))
            self.normalizer = Normalizer.from_stats(merged, m.feature_transform, m.normalization)
            how = "training benign rows of all clients (merged statistics)"
        self.normalization = {"method": m.normalization, "transform": m.feature_transform, "fitted_on": how,
                              "train_rows": merged.count, "clients": sorted(stats)}

    def _widen(self, stats: dict[str, FeatureStats]) -> str:
        """Each device's own normaliser: the bounded one widened for the device's own statistics (its clients'
        merged) where its rows lie beyond scale_ratio_limit scales (`Normalizer.widened_for`); what metrics.json says."""
        by_device: dict[str, list[FeatureStats]] = {}
        for client in sorted(stats):
            by_device.setdefault(device_of_client(client), []).append(stats[client])
        widened = {}
        for device, parts in by_device.items():
            scale = self.normalizer.widened_for(FeatureStats.merge(parts), self.defenses.scale_ratio_limit).scale
            n = int(np.count_nonzero(scale > self.normalizer.scale))
            if n:
                self.device_scales[device], widened[device] = scale.tolist(), n
        self.notices.extend(f"feature normalisation of {d} widened on {n} feature(s): its own rows lie beyond "
                            f"{self.defenses.scale_ratio_limit:g} scales of the bounded normalisation"
                            for d, n in sorted(widened.items()))
        return ("; widened for a device's own rows where they lie beyond that many scales (its detector uses "
                "its own scales): " + ", ".join(f"{d} on {n} feature(s)" for d, n in sorted(widened.items()))) if widened else ""

    def own_fields(self, clients: list[str]) -> dict[str, dict[str, Any]]:
        """What a request carries for each client besides what is common: its device's widened scales, if any."""
        return {c: {"scale": self.device_scales[device_of_client(c)]} if device_of_client(c) in self.device_scales
                else {} for c in clients}

    # -- training
    def lr(self) -> float:
        """This round's learning rate (the only place the lr schedule is applied)."""
        t = self.cfg.train
        return learning_rate_for_round(t.learning_rate, t.lr_decay, t.min_learning_rate, self.round)

    def plan(self, client: str) -> RoundPlan:
        """This round's hyperparameters for one client; the seed differs per client and round."""
        t = self.cfg.train
        client_index = device_number(device_of_client(client)) + len(nbaiot.DEVICES) * client_part(client)
        return RoundPlan(round_idx=self.round, lr=self.lr(), epochs=t.epochs, batch_size=t.batch_size,
                         weight_decay=t.weight_decay, prox_mu=t.fedprox_mu if self.algorithm == "FedProx" else 0.0,
                         seed=self.cfg.common.random_seed * 100003 + self.round * 101 + client_index)

    def sample(self) -> list[str]:
        """The clients that train this round: all of them, or `client_num_per_round` chosen by FedML's rule
        (`FedMLAggregator.client_sampling`: np.random.seed(round index), choice without replacement), so a
        run samples the same clients round by round as FedML would, and a resumed run as the original."""
        clients, per_round = self.cfg.clients, self.cfg.plan.clients_per_round
        if per_round >= len(clients):
            return list(clients)
        picked = np.random.RandomState(self.round).choice(range(len(clients)), per_round, replace=False)
        return [clients[i] for i in sorted(int(i) for i in picked)]

    def begin_round(self) -> dict[str, Any]:
        """Open a round (its clients in `sampled`); returns what every client is sent besides its plan."""
        self.round_started = time.monotonic()
        self.record = {"round": self.round + 1, "data_source": self.data_info["source"], "lr": self.lr()}
        self.sampled = self.sample()
        if self.cfg.plan.clients_per_round < len(self.cfg.clients):
            self.record["sampled"] = self.sampled
        return self._global()

    def plans(self) -> dict[str, dict[str, Any]]:
        """What differs per sampled client in this round's TRAIN request: its plan (and its widened scales)."""
        own = self.own_fields(self.sampled)
        return {c: {"plan": self.plan(c).to_dict(), **own[c]} for c in self.sampled}

    def finish_round(self, updates: dict[str, Update], dropped: list[str],
                     traffic: dict[str, Any] | None = None) -> str:
        """Aggregate the answers (client -> update), complete the round's record; the summary line."""
        work = self.strategy.aggregate(RoundWork(self.round + 1, {c: (u.n, u.model) for c, u in updates.items()},
                                                 state_of(self.model)))
        self.notices.extend(work.notices)
        self.record.update(work.record)
        new_state, screened = work.new, work.screened
        self.model.load_state_dict(new_state)
        if self.round <= self.n_rounds // 2:  # rounds 1..n/2: no mean (`evaluated_state`)
            self.recent.clear()
        self.recent.append(state_of(self.model))
        now = time.monotonic()
        self.record.update({
            "wall_time_s": round(now - self.round_started, 4),
            "elapsed_s": round(now - self.started, 4),
            "clients": sorted(updates),
            "dropped": sorted(dropped),
            "client_losses": {d: updates[d].loss for d in sorted(updates)},
            "client_train_seconds": {d: updates[d].train_seconds for d in sorted(updates)},
            "aggregation": self.strategy.combine.name,
            **({"algorithm": self.algorithm} if self.algorithm != "FedAvg" else {}),
            **({"screened_out": screened} if screened else {}),
            **(traffic or {}),
        })
        self.round += 1
        losses = self.record["client_losses"].values()
        line = (f"{round_bar(self.round, self.n_rounds)}round {self.round}/{self.n_rounds}  clients {len(updates)}  "
                f"mean loss {sum(losses) / len(losses):.5f}  ({self.record['wall_time_s']:.1f}s)")
        if dropped:
            line += f"  dropped: {', '.join(sorted(dropped))}"
        for device, why in sorted(screened.items()):
            line += f"\n  update of {device} left out: {why}"
        return line

    def evaluate_now(self) -> bool:
        """Whether the round just completed is followed by an evaluation."""
        return is_eval_round(self.round - 1, self.n_rounds, self.cfg.validation.frequency_of_the_test)

    # -- evaluation (clients' counts only)
    def begin_eval(self) -> dict[str, Any]:
        """Open an evaluation of `evaluated_state()`; returns what every client is sent to score its held-out rows."""
        self.eval_started = time.monotonic()
        self.evaluated = self.evaluated_state()
        if len(self.recent) > 1:
            self.record["eval_model_rounds"] = self.averaged_rounds()
        return self._global(self.evaluated)

    def set_thresholds(self, val_stats: dict[str, ErrorStats]) -> None:
        """The evaluator's thresholds from the clients' validation statistics (checked against their hellos)."""
        self.evaluator.set_thresholds(val_stats, self.announced, self.record)

    def counts_request(self, clients: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """What `clients` are sent to count their rows (`Evaluator.counts_request`)."""
        return self.evaluator.counts_request(self.round, clients)

    def finish_eval(self, reports: dict[str, dict[str, Any]]) -> str:
        """The evaluator's metrics from the count reports, into this round's record; the summary line."""
        return self.evaluator.combine(reports, self.announced, self.record, self.round, self.eval_started)

    def averaged_rounds(self) -> list[int]:
        """The first and last round (1-based) whose global models `evaluated_state()` averages."""
        return [self.round - max(len(self.recent), 1) + 1, self.round]

    def evaluated_state(self) -> dict[str, torch.Tensor]:
        """The model that is evaluated and saved: the mean of the global models after the last
        model_average_rounds rounds of the second half of the run (tail averaging). When a round trains a few of
        many clients, the latest global model leans towards whichever clients trained last (measured at 1,008
        clients, 10 per round: the global FPR of successive evaluations swung 0.001-0.023 with one device's
        rows); the mean of recent rounds evens that out. Not in the first half, and by default not when the rounds
        cover every client: a mean of models that are still learning lags behind them (measured at 18 clients, 10
        per round, 20 rounds: FPR 0.007 -> 0.068). Clients keep training from the latest global model."""
        if len(self.recent) <= 1:
            return state_of(self.model)
        return {k: torch.stack([s[k] for s in self.recent]).mean(0) for k in self.recent[0]}

    def _global(self, state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """The round, the global weights (or `state`, the evaluated model) and normaliser, as every client is sent
        them."""
        return {"round": self.round, "model": state_of(self.model) if state is None else state,
                "normalizer": self.normalizer.to_dict()}

    # -- records and what the outputs hold
    def close_record(self, rejected: int = 0, rejections: list[dict[str, str]] | None = None,
                     rejected_by: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
        """The current round's record for rounds.jsonl, with the number of messages rejected since the previous
        record, the first few reasons and the count per sender and kind; empty when no round is open. A new record
        starts."""
        record, self.record = self.record, {}
        if not record.get("round"):
            return {}
        record["rejected"] = rejected
        if rejections:
            record["rejections"] = rejections
        if rejected_by:
            record["rejected_by"] = rejected_by
        return record

    def final_model(self) -> AutoEncoder:
        """The evaluated (and saved) model of the run."""
        final = AutoEncoder(self.model.input_dim)
        final.load_state_dict(self.evaluated if self.evaluated is not None else self.evaluated_state())
        return final

    def final_meta(self) -> dict[str, Any]:
        """The detector's metadata in model.pt."""
        return {"kind": self.kind, "devices": sorted(self.evaluator.metrics["devices"]), "rounds": self.n_rounds,
                "data": self.data_info}

    def final_metrics(self) -> dict[str, Any]:
        """metrics.json of the run, from the last evaluation."""
        out = {"data": self.data_info, "kind": self.kind, "normalization": self.normalization,
               "model": {"average_of_rounds": self.averaged_rounds(), "rule": "mean of the global models after these "
                         "rounds (train_args.model_average_rounds)"}, **self.evaluator.metrics}
        if self.privacy is not None:
            p = self.privacy
            out["privacy"] = {"mechanism": "DP-FedAvg: clipped updates, equally weighted mean, Gaussian noise",
                              "clip_norm": p.clip_norm, "noise_multiplier": p.noise_multiplier,
                              "sample_rate": self.sample_rate, "rounds": self.round, "delta": p.delta,
                              "epsilon": privacy.epsilon(p.noise_multiplier, self.sample_rate, self.round, p.delta),
                              "accountant": "Opacus RDP", "covers": "model updates (not feature or validation statistics)"}
        return out
