"""FedML ClientTrainer adapter: local training of the autoencoder on one device's benign rows."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedml.core import ClientTrainer

from data import nbaiot
from fediot.rundir import append_jsonl
from model.detector import learning_rate_for_round, train_autoencoder
from trainer.client_data import ClientRows


class FedDetectTrainer(ClientTrainer):
    """Calls model.detector.train_autoencoder with the cross-round learning-rate schedule."""

    def __init__(self, model, args, record_dir: Path | None = None) -> None:
        super().__init__(model, args)
        self.record_dir = record_dir
        self.last_losses: list[float] = []

    def get_model_params(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def set_model_params(self, model_parameters: dict[str, Any]) -> None:
        self.model.load_state_dict(model_parameters)

    def train(self, train_data: ClientRows, device, args) -> None:
        round_idx = int(getattr(args, "round_idx", 0) or 0)
        lr = learning_rate_for_round(args.learning_rate, args.lr_decay, args.min_learning_rate, round_idx)
        started = time.monotonic()
        self.model.to(device)
        losses = train_autoencoder(self.model, train_data.rows, args.epochs, args.batch_size, lr,
                                   args.weight_decay, seed=args.random_seed * 100003 + round_idx * 101
                                   + nbaiot.device_index(train_data.device))
        self.last_losses = losses
        if self.record_dir is not None:
            append_jsonl(self.record_dir / f"{train_data.device}.jsonl", {
                "round": round_idx + 1, "device": train_data.device, "loss": losses[-1],
                "epoch_losses": losses, "lr": lr, "samples": len(train_data),
                "train_seconds": round(time.monotonic() - started, 4)})

    def test(self, test_data, device, args) -> dict[str, Any]:
        """Not used: evaluation is done by the server aggregator on held-out rows."""
        return {}
