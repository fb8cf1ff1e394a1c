"""Adam for the autoencoder: `torch.optim.Adam(fused=True)`'s arithmetic without `torch.optim.Optimizer`.

Why: every `torch.optim.Optimizer` imports `torch._dynamo` the first time it is built and at every step (its methods
are wrapped to keep torch.compile out; FedIoT never compiles). That import cost each training process 1.2 s of CPU
and 147 MB of RSS (torch 2.14.1, x86_64, 2026-12-08) — a board's client, each MPI rank, each process the tests start.
`FusedAdam` keeps the same state and calls the same public functional kernel (`torch.optim.adam.adam`, fused) with
the same arguments: the weights are bit-identical (tests/test_detector_math.py).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim.adam import adam

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
EPS = 1e-8


class FusedAdam:
    """Adam (Kingma & Ba), one fused kernel per step over every parameter; `zero_grad` and `step` as torch's."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        for p in self.params:
            if p.is_sparse or p.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                raise ValueError(f"FusedAdam: a {p.dtype} parameter (the fused kernel takes dense floating point)")
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # the fused kernel's step counters: one float32 scalar per parameter, on its device (as torch.optim.Adam's)
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        """Drop the gradients (torch's set_to_none=True)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step for every parameter that has a gradient."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        adam([self.params[i] for i in live], [self.params[i].grad for i in live], [self.exp_avg[i] for i in live],
             [self.exp_avg_sq[i] for i in live], [], [self.steps[i] for i in live], foreach=None, capturable=False,
             differentiable=False, fused=True, grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
             beta1=BETAS[0], beta2=BETAS[1], lr=self.lr, weight_decay=self.weight_decay, eps=EPS, maximize=False)
