"""What every trainer shares: the learning-rate schedule, optimizer parameter groups, the EMA
of weights and a progress bar. Checkpoints live in `vtok.train.checkpoint`, logs in
`vtok.train.logs`; each trainer keeps only its own step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def lr_factor(step: int, steps: int, warmup: int = 0, min_ratio: float = 0.0,
              overlap: bool = False) -> float:
    """The multiple of the peak learning rate at `step` (0-based) of a `steps`-long run.

    Linear warmup `(step + 1) / warmup` over the first `warmup` steps, then a cosine from 1
    down to `min_ratio` at the last step. With `overlap` the cosine spans the whole run from
    step 0 and the warmup ramp multiplies it instead of preceding it (the token priors)."""
    if overlap:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * _cosine(min(1.0, step / steps), min_ratio)
    if step < warmup:
        return (step + 1) / warmup
    return _cosine(min(1.0, (step - warmup) / max(1, steps - warmup)), min_ratio)


def _cosine(t: float, min_ratio: float) -> float:
    """1 at t = 0 down to min_ratio at t = 1."""
    return min_ratio + (1 - min_ratio) * (0.5 * (1 + math.cos(math.pi * t)))


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: weight decay for matrices and kernels
    (ndim >= 2), none for biases, norms and the parameters named in `no_decay`."""
    skip = set(no_decay)
    decay, free = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and name not in skip else free).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": free, "weight_decay": 0.0}]


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` to hold its exponential moving average."""
    return copy.deepcopy(model).requires_grad_(False)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    """Move `ema` towards `model` after `step` (0-based). The decay is capped at
    (1 + step) / (10 + step), so early on the average is not dominated by the random initial
    weights. Frozen parameters are left alone (bit-identical); buffers (codebooks, EMA
    statistics, counters) take the live values."""
    decay = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        if p.requires_grad:
            e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def progress_bar(enabled: bool, total: int, desc: str, initial: int = 0):
    """A tqdm bar counting steps, or None when progress is off."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step")
