"""Metric definitions, pinned so every report means the same thing.

- PSNR: per image on 8-bit RGB (values rounded to 0..255), then averaged over images.
- SSIM: per image on 8-bit RGB, Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03 (Wang et al.
  2004), the mean of the three channels' SSIM; computed by scikit-image.
- MS-SSIM: per image on 8-bit RGB, the same window, Wang et al. 2003's five scales and
  weights; computed by pytorch-msssim. It needs more than 160 pixels a side.
- Flicker (video): the mean absolute difference between the frame-to-frame changes of a
  reconstruction and of its source, on 8-bit RGB (0..255).
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
    _same_shape("psnr", reference, test)
    a, b = to_uint8(reference).double(), to_uint8(test).double()
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


def ssim(reference: Tensor, test: Tensor) -> Tensor:
    """Per-image SSIM on 8-bit RGB (1 for identical images); inputs [B, 3, H, W] in [0, 1], at
    least 11 pixels a side. Needs scikit-image (`pip install 'vtok[data]'`)."""
    from skimage.metrics import structural_similarity

    _same_shape("ssim", reference, test)
    if min(reference.shape[-2:]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels (its window), got "
                         f"{reference.shape[-1]}x{reference.shape[-2]}")
    a = to_uint8(reference).permute(0, 2, 3, 1).numpy()
    b = to_uint8(test).permute(0, 2, 3, 1).numpy()
    return torch.tensor([structural_similarity(x, y, channel_axis=-1, data_range=255,
                                               gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False)
                         for x, y in zip(a, b)], dtype=torch.float64)


MS_SSIM_MIN_SIDE = 161  # 11-pixel window after 4 halvings: (11 - 1) * 2**4 < side


def ms_ssim(reference: Tensor, test: Tensor) -> Tensor:
    """Per-image MS-SSIM on 8-bit RGB (1 for identical images); inputs [B, 3, H, W] in [0, 1],
    more than 160 pixels a side. Needs pytorch-msssim (`pip install 'vtok[eval]'`)."""
    from pytorch_msssim import ms_ssim as library_ms_ssim

    _same_shape("ms_ssim", reference, test)
    if min(reference.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"ms_ssim needs images of at least {MS_SSIM_MIN_SIDE} pixels a side "
                         f"(5 scales of an 11-pixel window), got "
                         f"{reference.shape[-1]}x{reference.shape[-2]}")
    a, b = to_uint8(reference).double(), to_uint8(test).double()
    return library_ms_ssim(a, b, data_range=255, size_average=False, win_size=11,
                           win_sigma=1.5).cpu()


def flicker(reference: Tensor, test: Tensor) -> Tensor:
    """Temporal flicker of a reconstructed clip, per frame transition: the mean over pixels and
    channels of |(r_t - r_{t-1}) - (s_t - s_{t-1})| on the 8-bit scale, for t = 1..T-1 (source
    s = `reference`, reconstruction r = `test`). It is the change of the error e = r - s from
    one frame to the next: an error that stays put, however large, scores 0; one that differs
    from frame to frame (shimmer, popping at chunk or keyframe boundaries) scores its size.
    Inputs: clips [T, 3, H, W] in [0, 1], T >= 2; returns [T - 1]."""
    _same_shape("flicker", reference, test)
    if reference.ndim != 4 or reference.shape[0] < 2:
        raise ValueError(f"flicker needs clips [T, 3, H, W] of at least 2 frames, got "
                         f"{tuple(reference.shape)}")
    error = to_uint8(test).double() - to_uint8(reference).double()
    return (error[1:] - error[:-1]).abs().flatten(1).mean(1)


def _same_shape(name: str, reference: Tensor, test: Tensor) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"{name} needs equal shapes, got {tuple(reference.shape)} "
                         f"and {tuple(test.shape)}")


def raw_bits(tokens: Tokens, codebook_size: int) -> float:
    """Bits per image of the raw indices: tokens x indices per token x log2(codebook size)."""
    per_token = tokens.indices[0].numel() / tokens.num_tokens
    return tokens.num_tokens * per_token * math.log2(codebook_size)
