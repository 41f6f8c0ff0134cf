"""Metric definitions, pinned so every report means the same thing.

- PSNR: per image on 8-bit RGB (values rounded to 0..255), then averaged over images.
- LPIPS: `vtok.losses.LPIPS` (AlexNet v0.1 by default) on [0, 1] images.
- Raw index bits: tokens x log2(codebook size) per index (no entropy coding, no header).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vtok.models import Tokens


def to_uint8(images: Tensor) -> Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def psnr(reference: Tensor, test: Tensor) -> Tensor:
    """Per-image PSNR (dB) on 8-bit RGB, inf for identical images; inputs [B, 3, H, W] in [0, 1]."""
    if reference.shape != test.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(reference.shape)} "
                         f"and {tuple(test.shape)}")
    a, b = to_uint8(reference).double(), to_uint8(test).double()
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


def raw_bits(tokens: Tokens, codebook_size: int) -> float:
    """Bits per image of the raw indices: tokens x indices per token x log2(codebook size)."""
    per_token = tokens.indices[0].numel() / tokens.num_tokens
    return tokens.num_tokens * per_token * math.log2(codebook_size)
