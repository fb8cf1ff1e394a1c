"""Local training throughput: FedML ClientTrainer adapter vs a bare PyTorch loop on the same rows.

    .venv/bin/python bench/bench_trainer.py [--rows 20000] [--epochs 3] [--repeats 3]
Goal: ratio (adapter / bare) >= 0.5.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from data import synthetic  # noqa: E402
from model.autoencoder import AutoEncoder  # noqa: E402
from model.normalization import Normalizer  # noqa: E402


def bare_loop(rows: np.ndarray, epochs: int, batch: int, lr: float) -> float:
    """The plain PyTorch way: DataLoader over a TensorDataset, Adam, MSE."""
    torch.manual_seed(0)
    model = AutoEncoder(rows.shape[1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.as_tensor(rows)), batch_size=batch,
                                         shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    start = time.perf_counter()
    for _ in range(epochs):
        for (x,) in loader:
            opt.zero_grad()
            loss = loss_fn(model(x), x)
            loss.backward()
            opt.step()
    return len(rows) * epochs / (time.perf_counter() - start)


def fedml_trainer(rows: np.ndarray, epochs: int, batch: int, lr: float) -> float:
    """Our FedDetectTrainer (a fedml.core.ClientTrainer) training the same rows."""
    from trainer.client_data import ClientRows
    from trainer.fed_detect_trainer import FedDetectTrainer

    torch.manual_seed(0)
    model = AutoEncoder(rows.shape[1])
    args = SimpleNamespace(learning_rate=lr, lr_decay=1.0, min_learning_rate=0.0, epochs=epochs, batch_size=batch,
                           weight_decay=0.0, random_seed=0, round_idx=0)
    trainer = FedDetectTrainer(model, args)
    data = ClientRows("Danmini_Doorbell", len(rows), lambda: None, None, _rows=rows)
    start = time.perf_counter()
    trainer.train(data, torch.device("cpu"), args)
    return len(rows) * epochs / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    raw = synthetic.generate_rows(synthetic.device_profile("Danmini_Doorbell", 0), a.rows, np.random.default_rng(0))
    rows = Normalizer.fit(raw, "log1p", "zscore")(raw)
    bare = max(bare_loop(rows, a.epochs, a.batch, 0.003) for _ in range(a.repeats))
    ours = max(fedml_trainer(rows, a.epochs, a.batch, 0.003) for _ in range(a.repeats))
    print(f"rows={a.rows} epochs={a.epochs} batch={a.batch} threads={a.threads} (best of {a.repeats})")
    print(f"| loop | samples/s |\n|---|---|\n| bare PyTorch (DataLoader) | {bare:,.0f} |\n"
          f"| FedDetectTrainer (FedML ClientTrainer) | {ours:,.0f} |")
    print(f"ratio trainer/bare = {ours / bare:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
