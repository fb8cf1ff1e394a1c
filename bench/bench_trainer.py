"""Local training throughput: a FedIoT client's round (federation.client.LocalClient) vs a bare PyTorch loop.

    .venv/bin/python bench/bench_trainer.py [--rows 20000] [--epochs 3] [--repeats 3]
Goal: ratio (client / bare) >= 0.5.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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


def client_round(raw: np.ndarray, epochs: int, batch: int, lr: float) -> float:
    """What a client does for one round (normalised rows cached, the plan it was sent, train)."""
    from data.loader import DeviceSplit
    from federation.client import LocalClient
    from federation.messages import RoundPlan
    from model.autoencoder import state_of

    split = DeviceSplit("Danmini_Doorbell", raw, raw[:10], raw[:10], {}, [])
    client = LocalClient(split, "log1p")
    normalizer = Normalizer.fit(raw, "log1p", "zscore").to_dict()
    torch.manual_seed(0)
    model = state_of(AutoEncoder(raw.shape[1]))
    plan = RoundPlan(round_idx=0, lr=lr, epochs=epochs, batch_size=batch, weight_decay=0.0, seed=0)
    client.train(model, normalizer, RoundPlan(0, lr, 1, batch, 0.0, 0))  # first round normalises the rows once
    start = time.perf_counter()
    client.train(model, normalizer, plan)
    return len(raw) * epochs / (time.perf_counter() - start)


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
    ours = max(client_round(raw, a.epochs, a.batch, 0.003) for _ in range(a.repeats))
    print(f"rows={a.rows} epochs={a.epochs} batch={a.batch} threads={a.threads} (best of {a.repeats})")
    print(f"| loop | samples/s |\n|---|---|\n| bare PyTorch (DataLoader) | {bare:,.0f} |\n"
          f"| FedIoT client round (LocalClient.train) | {ours:,.0f} |")
    print(f"ratio client/bare = {ours / bare:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
