"""The tokenizer's training loss: reconstruction (L1, L2, LPIPS) + quantizer + GAN terms, on
images `[B, 3, H, W]` or clips `[B, T, 3, H, W]` (L1/L2 over every frame, LPIPS per frame)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vtok.losses.gan import LeCam, adaptive_weight, hinge_d_loss, hinge_g_loss


@dataclass
class LossWeights:
    l1: float = 1.0
    l2: float = 0.0
    lpips: float = 0.0
    gan: float = 0.0
    lecam: float = 0.0


def generator_loss(x: Tensor, out: dict[str, Tensor], weights: LossWeights,
                   lpips: nn.Module | None = None, disc: nn.Module | None = None,
                   gan_on: bool = False, last_layer: Tensor | None = None,
                   lpips_frames: int = 0) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """(total loss, its terms, the float reconstruction) of a tokenizer's `out = model(x)`.

    LPIPS compares clips frame by frame: all of them, or `lpips_frames` random frames of each
    clip (drawn from the global generator) to bound its cost on long clips.
    With a discriminator the terms always hold `gan_g` and `gan_d` (zero until `gan_on`), so a
    log keeps one set of columns; once on, the GAN term is weighted adaptively against the
    reconstruction loss at `last_layer` (the critic's weights take no gradient from it)."""
    recon = out["recon"].float()
    terms = {"l1": (recon - x).abs().mean(), "l2": (recon - x).pow(2).mean()}
    rec = weights.l1 * terms["l1"] + weights.l2 * terms["l2"]
    if lpips is not None:
        terms["lpips"] = lpips(*frames_of(recon, x, lpips_frames)).mean()
        rec = rec + weights.lpips * terms["lpips"]
    terms["quant"] = out["quant_loss"]
    total = rec + out["quant_loss"]
    if disc is not None:
        terms["gan_g"] = terms["gan_d"] = torch.zeros((), device=x.device)
    if gan_on:
        disc.requires_grad_(False)  # the generator step must not train the critic
        terms["gan_g"] = hinge_g_loss(disc(recon))
        weight = adaptive_weight(rec, terms["gan_g"], last_layer)
        total = total + weights.gan * weight * terms["gan_g"]
        disc.requires_grad_(True)
    return total, terms, recon


def critic_loss(disc: nn.Module, lecam: LeCam, x: Tensor, recon: Tensor, weights: LossWeights
                ) -> tuple[Tensor, Tensor]:
    """(discriminator loss, its hinge term): hinge on real `x` vs detached `recon`, + LeCam."""
    real, fake = disc(x), disc(recon.detach())
    hinge = hinge_d_loss(real, fake)
    return hinge + weights.lecam * lecam(real, fake), hinge


def frames_of(recon: Tensor, x: Tensor, count: int = 0) -> tuple[Tensor, Tensor]:
    """Clips `[B, T, 3, H, W]` as frames `[B * k, 3, H, W]`: all T of each clip (`count` 0 or
    at least T), else `count` random frames of each, the same ones of `recon` and `x`. Images
    pass as they are."""
    if x.ndim == 4:
        return recon, x
    b, t = x.shape[:2]
    if 0 < count < t:
        pick = torch.rand(b, t, device=x.device).argsort(1)[:, :count]
        rows = torch.arange(b, device=x.device)[:, None]
        recon, x = recon[rows, pick], x[rows, pick]
    return recon.flatten(0, 1), x.flatten(0, 1)
