"""FedML ServerAggregator adapter: FedAvg of autoencoder weights, evaluation hook per round."""
from __future__ import annotations

from typing import Any, Callable

import torch
from fedml.core import ServerAggregator


def fedavg(updates: list[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Sample-weighted average of state dicts: sum_i n_i * w_i / sum_i n_i."""
    total = sum(n for n, _ in updates)
    if total <= 0:
        raise ValueError("FedAvg needs at least one update with a positive sample count")
    keys = updates[0][1].keys()
    return {k: sum(p[k].double() * (n / total) for n, p in updates).to(updates[0][1][k].dtype) for k in keys}


class FedDetectAggregator(ServerAggregator):
    """Holds the global model; `test_all` hands it to `on_round_end(model, round_idx)`."""

    def __init__(self, model, args, on_round_end: Callable[[torch.nn.Module, int], None]) -> None:
        super().__init__(model, args)
        self.on_round_end = on_round_end

    def get_model_params(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def set_model_params(self, model_parameters: dict[str, Any]) -> None:
        self.model.load_state_dict(model_parameters)

    def aggregate(self, raw_client_model_or_grad_list: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        return fedavg(raw_client_model_or_grad_list)

    def test(self, test_data, device, args) -> dict[str, Any]:
        return {}

    def test_all(self, train_data_local_dict, test_data_local_dict, device, args) -> bool:
        """Called by FedML after every aggregation; returning True skips FedML's own testing."""
        self.on_round_end(self.model, int(args.round_idx))
        return True
