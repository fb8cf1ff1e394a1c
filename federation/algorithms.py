"""Federated optimisation algorithms (train_args.federated_optimizer, FedML's names and keys): what the server does
with the clients' updates besides the aggregation rule, and what a client adds to its local objective.

- FedAvg: the rule's result is the new global model.
- FedProx (Li et al., 2020): clients minimise their loss + fedprox_mu / 2 * ||w - w_global||^2
  (`model.detector.train_autoencoder`, the term FedML's FedProxModelTrainer adds); the server is FedAvg's.
- FedOpt (Reddi et al., 2021, "Adaptive Federated Optimization", Algorithm 2): the server treats
  delta = aggregate - global as a pseudo-gradient and steps with `server_optimizer`: sgd (with server_momentum > 0:
  FedAvgM, Hsu et al., 2019; FedML's FedOptAggregator with torch's SGD), adam (FedAdam), yogi (FedYogi), adagrad
  (FedAdagrad), at server_lr, with server_beta1, server_beta2 and server_tau for the adaptive three.
- FedNova (Wang et al., 2020): each client's update is divided by its number of local steps tau_i and multiplied by
  the round's effective number tau_eff = sum_i p_i tau_i (p_i: row weights), so that clients that ran more steps
  do not pull the model further; tau_i = epochs x ceil(rows / batch_size) is computed by the server from the row
  counts it already bounds (a client cannot claim more steps than its rows give).

Composed with the robust rules in this order: FedNova rescales each update, then screening and the aggregation rule
(`federation.aggregation.aggregate`) combine them, then FedOpt's server optimizer steps on what the rule produced:
the robust rule decides which direction the clients agree on, the server optimizer only how far to go.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from federation.aggregation import State

ALGORITHMS = ("FedAvg", "FedProx", "FedOpt", "FedNova")
SERVER_OPTIMIZERS = ("sgd", "adam", "yogi", "adagrad")


def local_steps(rows: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps a client takes in a round (`train_autoencoder`: every epoch passes over all rows in batches)."""
    return epochs * max(1, math.ceil(rows / batch_size))


def fednova_rescale(updates: dict[str, tuple[int, State]], global_state: State, steps: dict[str, int]
                    ) -> dict[str, tuple[int, State]]:
    """FedNova's normalised updates: w_i' = w_g + (tau_eff / tau_i) (w_i - w_g) with tau_eff = sum_i p_i tau_i and
    p_i = n_i / sum n. FedAvg over the w_i' is FedNova's new global model (Wang et al. 2020, eq. 7 with a_i = tau_i:
    local solvers without momentum; with Adam a step count is the usual stand-in)."""
    total = sum(n for n, _ in updates.values())
    if total <= 0:
        raise ValueError("FedNova needs at least one update with a positive sample count")
    tau_eff = sum(n / total * steps[c] for c, (n, _) in updates.items())
    out = {}
    for c, (n, state) in updates.items():
        scale = tau_eff / steps[c]
        out[c] = (n, {k: global_state[k] + scale * (state[k] - global_state[k]) for k in state})
    return out


class ServerOptimizer:
    """FedOpt's server step on the pseudo-gradient, over every weight of the model. State: the momentum (m) and
    second-moment (v) tensors, kept in the server's checkpoint (`state_dict`), so a resumed run steps as the original."""

    def __init__(self, name: str, lr: float, momentum: float, beta1: float, beta2: float, tau: float) -> None:
        if name not in SERVER_OPTIMIZERS:
            raise ValueError(f"server_optimizer {name!r}; expected one of {SERVER_OPTIMIZERS}")
        self.name, self.lr, self.momentum, self.beta1, self.beta2, self.tau = name, lr, momentum, beta1, beta2, tau
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}
        self.steps = 0

    def step(self, global_state: State, aggregate: State) -> State:
        """The new global model from the current one and the aggregation rule's result."""
        out = {}
        for k, w in global_state.items():
            delta = (aggregate[k] - w).to(torch.float64)
            if self.name == "sgd":
                # torch.optim.SGD on the gradient g = w - aggregate (FedML's FedOptAggregator): buf = momentum * buf + g
                # (the first step: buf = g); w <- w - lr * buf
                g = -delta
                if self.momentum > 0:
                    g = g if k not in self.m else self.momentum * self.m[k] + g
                    self.m[k] = g
                new = w.to(torch.float64) - self.lr * g
            else:
                m = delta * (1 - self.beta1) if k not in self.m else self.beta1 * self.m[k] + (1 - self.beta1) * delta
                v_old = self.v.get(k, torch.zeros_like(delta))
                sq = delta * delta
                if self.name == "adagrad":
                    v = v_old + sq
                elif self.name == "adam":
                    v = self.beta2 * v_old + (1 - self.beta2) * sq
                else:  # yogi
                    v = v_old - (1 - self.beta2) * sq * torch.sign(v_old - sq)
                self.m[k], self.v[k] = m, v
                new = w.to(torch.float64) + self.lr * m / (torch.sqrt(v) + self.tau)
            out[k] = new.to(w.dtype)
        self.steps += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "m": {k: t.clone() for k, t in self.m.items()},
                "v": {k: t.clone() for k, t in self.v.items()}}

    def load_state_dict(self, state: dict[str, Any], like: State) -> None:
        """Resume from `state_dict()`; refuses one of another optimizer or whose tensors do not fit the model."""
        if not isinstance(state, dict) or state.get("name") != self.name:
            raise ValueError(f"the checkpoint's server optimizer state is not {self.name!r}'s")
        for part in ("m", "v"):
            got = state.get(part)
            if not isinstance(got, dict) or not set(got) <= set(like) or any(
                    not isinstance(t, torch.Tensor) or t.shape != like[k].shape or not bool(torch.isfinite(t).all())
                    for k, t in got.items()):
                raise ValueError(f"the checkpoint's server optimizer {part} does not fit the model")
        self.m = {k: t.to(torch.float64).clone() for k, t in state["m"].items()}
        self.v = {k: t.to(torch.float64).clone() for k, t in state["v"].items()}
        self.steps = int(state.get("steps", 0))

