"""Sign quantizers: lookup-free (LFQ) and binary spherical (BSQ) quantization.

Each channel's sign is one bit, so the implicit codebook has 2**dim codes and no lookup table.
Index bit order: channel 0 is the most significant bit; a positive channel is a 1.

The entropy regularizer (MAGVIT-v2, Yu et al. 2023) uses p(c|x) proportional to
exp(-inv_temperature * |x - c|^2). Over sign codes this distribution factorizes into one
independent Bernoulli per channel, so the per-sample entropy is a sum of binary entropies and
costs O(dim) instead of O(2**dim). The codebook (batch-averaged) entropy is the sum of the
per-channel entropies of the averaged bits, the factorized form used by BSQ (Zhao et al., 2024);
it is an upper bound of the exact joint entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vtok.quant.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    code_metrics,
    require_int,
    require_range,
    straight_through,
)

MAX_BITS = 62  # indices are int64


def bits_to_indices(bits: Tensor) -> Tensor:
    """`[..., D]` 0/1 (or bool) -> `[...]` int64, channel 0 most significant."""
    d = bits.shape[-1]
    weights = 2 ** torch.arange(d - 1, -1, -1, device=bits.device, dtype=torch.long)
    return (bits.long() * weights).sum(-1)


def indices_to_bits(indices: Tensor, dim: int) -> Tensor:
    shifts = torch.arange(dim - 1, -1, -1, device=indices.device, dtype=torch.long)
    return (indices.unsqueeze(-1) >> shifts) & 1


def binary_entropy_terms(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(mean per-sample entropy, factorized codebook entropy) in nats for per-bit logits [N, D]."""
    p = torch.sigmoid(logits)
    # H(p) = p*softplus(-l) + (1-p)*softplus(l): stable for large |l|
    per_sample = (p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).sum(-1).mean()
    avg = p.mean(0).clamp(1e-7, 1 - 1e-7)
    codebook = -(avg * avg.log() + (1 - avg) * (1 - avg).log()).sum()
    return per_sample, codebook


def _check_codebook(dim: int, codebook_size: int | None) -> int:
    require_int("dim", dim, 1, MAX_BITS)
    if codebook_size is not None and codebook_size != 2**dim:
        raise ValueError(
            f"codebook_size must be 2**dim = {2**dim} for a sign quantizer with dim={dim}, "
            f"got {codebook_size!r}"
        )
    return 2**dim


@QUANTIZERS.register("lfq")
class LookupFreeQuantizer(Quantizer):
    """Lookup-free quantization (Yu et al., 2023): channel signs scaled by codebook_scale.

    Loss: commitment_weight * |z - q|^2 + entropy_loss_weight * (per-sample entropy
    - diversity_gamma * codebook entropy), the entropy terms computed while training.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int | None = None,
        codebook_scale: float = 1.0,
        entropy_loss_weight: float = 0.1,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
        commitment_weight: float = 0.25,
    ) -> None:
        super().__init__()
        self.codebook_size = _check_codebook(dim, codebook_size)
        self.dim = dim
        self.codebook_scale = require_range("codebook_scale", codebook_scale, 1e-12, 1e12)
        self.entropy_loss_weight = require_range("entropy_loss_weight", entropy_loss_weight, 0, 1e6)
        self.diversity_gamma = require_range("diversity_gamma", diversity_gamma, 0, 1e6)
        self.inv_temperature = require_range("inv_temperature", inv_temperature, 1e-12, 1e12)
        self.commitment_weight = require_range("commitment_weight", commitment_weight, 0, 1e6)

    @property
    def scale(self) -> float:
        return self.codebook_scale

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def values(self, bits: Tensor) -> Tensor:
        return (bits.float() * 2 - 1) * self.scale

    def quantize(self, z: Tensor) -> QuantizerOutput:
        x = self.prepare(z.reshape(-1, self.dim))
        bits = x > 0
        q = self.values(bits)
        idx = bits_to_indices(bits)
        loss = self.commitment_weight * F.mse_loss(x, q)
        metrics = code_metrics(idx, self.codebook_size)
        if self.training and self.entropy_loss_weight > 0:
            # -inv_T*((x-s)^2 - (x+s)^2) = 4*inv_T*s*x is the log-odds of each bit being 1
            logits = 4 * self.inv_temperature * self.scale * x
            per_sample, codebook = binary_entropy_terms(logits)
            loss = loss + self.entropy_loss_weight * (per_sample - self.diversity_gamma * codebook)
            metrics["sample_entropy"] = per_sample.item() / math.log(2)
            metrics["codebook_entropy"] = codebook.item() / math.log(2)
        z_q = straight_through(q, x)
        return QuantizerOutput(z_q.reshape(z.shape), idx.reshape(z.shape[:-1]), loss, metrics)

    def decode(self, indices: Tensor) -> Tensor:
        return self.values(indices_to_bits(indices, self.dim))


@QUANTIZERS.register("bsq")
class BinarySphericalQuantizer(LookupFreeQuantizer):
    """Binary spherical quantization (Zhao et al., 2024): normalize to the unit sphere, then
    take signs scaled by 1/sqrt(dim), so every code lies on the sphere too.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int | None = None,
        entropy_loss_weight: float = 0.1,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
        commitment_weight: float = 0.25,
    ) -> None:
        super().__init__(
            dim,
            codebook_size,
            entropy_loss_weight=entropy_loss_weight,
            diversity_gamma=diversity_gamma,
            inv_temperature=inv_temperature,
            commitment_weight=commitment_weight,
        )

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.dim)

    def prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)
