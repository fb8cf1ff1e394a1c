"""The FedIoT / N-BaIoT deep autoencoder."""
from __future__ import annotations

import math

import torch
from torch import nn

# Hidden widths relative to the input width (115 -> 86 -> 58 -> 38 -> 29).
HIDDEN_RATIOS: tuple[float, ...] = (0.75, 0.5, 0.33, 0.25)


def hidden_sizes(input_dim: int) -> list[int]:
    """Encoder widths for an input width, rounded half up (115 -> [86, 58, 38, 29])."""
    return [max(1, math.floor(input_dim * r + 0.5)) for r in HIDDEN_RATIOS]


class AutoEncoder(nn.Module):
    """Symmetric Tanh autoencoder; the decoder output is linear."""

    def __init__(self, input_dim: int = 115) -> None:
        super().__init__()
        self.input_dim = input_dim
        widths = [input_dim, *hidden_sizes(input_dim)]
        enc: list[nn.Module] = []
        for i in range(len(widths) - 1):
            enc.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                enc.append(nn.Tanh())
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for i in range(len(rev) - 1):
            dec.append(nn.Linear(rev[i], rev[i + 1]))
            if i < len(rev) - 2:
                dec.append(nn.Tanh())
        self.enc = nn.Sequential(*enc)
        self.dec = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's weights (what travels between server and clients)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
