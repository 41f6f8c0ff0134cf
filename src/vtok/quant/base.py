"""The quantizer interface every family implements, its output type and shared helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vtok.registry import Registry

QUANTIZERS: Registry[Quantizer] = Registry("quantizer")
BINCOUNT_MAX_CODES = 1 << 20


def create_quantizer(name: str, **options: Any) -> Quantizer:
    """Build a registered quantizer, e.g. `create_quantizer("vq", dim=32, codebook_size=8192)`."""
    return QUANTIZERS.create(name, **options)


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    z_q: same shape as the input; its value is exactly the decoded code, its gradient reaches
    the input (straight-through or rotation trick). indices: LongTensor, `[...]` for one code per
    vector or `[..., num_codebooks]`. loss: scalar, already weighted. metrics: plain floats.
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Base class: channels-last `[..., dim]` in, `QuantizerOutput` out, always in fp32.

    Subclasses set `dim`, `codebook_size` (alphabet of each index) and `num_codebooks`
    (indices per vector), and implement `quantize(z)` on fp32 input and `decode(indices)`.
    """

    dim: int
    codebook_size: int
    num_codebooks: int = 1

    @property
    def bits_per_token(self) -> float:
        return self.num_codebooks * math.log2(self.codebook_size)

    def forward(self, z: Tensor, **kwargs: Any) -> QuantizerOutput:
        check_channels(z, self.dim)
        # Nearest-code search and rounding are ill-conditioned in bf16/fp16: quantize in fp32
        # whatever the surrounding autocast says, then hand back the caller's dtype.
        with torch.autocast(device_type=z.device.type, enabled=False):
            out = self.quantize(z.float(), **kwargs)
        if out.z_q.dtype != z.dtype:
            out.z_q = out.z_q.to(z.dtype)
        return out

    def quantize(self, z: Tensor, **kwargs: Any) -> QuantizerOutput:  # pragma: no cover
        raise NotImplementedError

    def decode(self, indices: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, "
            f"num_codebooks={self.num_codebooks}"
        )


def check_channels(z: Tensor, dim: int) -> None:
    if z.ndim < 2:
        raise ValueError(f"quantizer input must be [batch, ..., {dim}], got {tuple(z.shape)}")
    if z.shape[-1] != dim:
        raise ValueError(
            f"quantizer input has {z.shape[-1]} channels in its last dimension "
            f"but the quantizer was built with dim={dim}"
        )


def require_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Validate an integer option, naming it and the allowed range in the error."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return value


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def require_range(name: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """Forward value is exactly `value`; the gradient is that of `surrogate`.

    `x - x.detach()` is exactly zero, so unlike `x + (q - x).detach()` no rounding creeps in and
    `decode(indices)` equals the returned `z_q` bit for bit.
    """
    return value.detach() + (surrogate - surrogate.detach())


@torch.no_grad()
def code_metrics(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """Usage (fraction of codes hit), perplexity and entropy (bits) of one batch of indices."""
    flat = indices.reshape(-1)
    if flat.numel() == 0:
        return {"usage": 0.0, "perplexity": 0.0, "entropy": 0.0}
    if codebook_size <= BINCOUNT_MAX_CODES:
        counts = torch.bincount(flat, minlength=codebook_size)
    else:  # sign codebooks can have 2**32 entries and more: count only what occurs
        counts = torch.unique(flat, return_counts=True)[1]
    p = counts / flat.numel()
    entropy = -torch.special.xlogy(p, p).sum()
    used = (counts > 0).sum() / codebook_size
    values = torch.stack([used, entropy.exp(), entropy / math.log(2)]).tolist()
    return dict(zip(("usage", "perplexity", "entropy"), values))


SUMMED_METRICS = {"restarts"}  # counts add up over sub-quantizers; rates are averaged


def mean_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine metric dicts of sub-quantizers (levels, groups, scales) key by key."""
    combined = {}
    for key in parts[0]:
        total = sum(p[key] for p in parts)
        combined[key] = total if key in SUMMED_METRICS else total / len(parts)
    return combined
