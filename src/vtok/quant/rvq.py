"""Residual quantization (Zeghidour et al., 2021, SoundStream; Lee et al., 2022, RQ-VAE)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vtok.quant.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    create_quantizer,
    mean_metrics,
    require_int,
    require_range,
)

DROPPED = -1  # index of a level skipped by quantize dropout or a lower bitrate


def build_single(name: str, dim: int, what: str, options: dict[str, Any]) -> Quantizer:
    """Build an inner quantizer that emits one index per vector (vq, fsq, lfq, bsq)."""
    if not isinstance(name, str) or name in ("rvq", "msrvq", "gvq"):
        raise ValueError(f"{what} quantizer must give one index per vector, got {name!r}")
    inner = create_quantizer(name, dim=dim, **options)
    if inner.num_codebooks != 1:
        raise ValueError(f"{what} quantizer must give one index per vector, got {name!r}")
    return inner


def inner_options(what: str, quantizer_options: Any, flat: dict[str, Any]) -> dict[str, Any]:
    """The inner quantizer's options: `quantizer_options={...}`, the convention tokenizers use,
    or the older flat form (the inner options mixed with the outer ones), still accepted."""
    if quantizer_options is None:
        return flat
    if not isinstance(quantizer_options, dict):
        raise ValueError(f"{what} quantizer_options must be a dict of the inner quantizer's "
                         f"options, got {quantizer_options!r}")
    if flat:
        raise ValueError(f"{what} has no option {', '.join(sorted(flat))}; give the inner "
                         f"quantizer's options in quantizer_options")
    return quantizer_options


@QUANTIZERS.register("rvq")
class ResidualQuantizer(Quantizer):
    """Residual quantization: level l quantizes what levels < l left over; indices `[..., Q]`.

    quantizer, quantizer_options: the inner quantizer's name (default "vq") and options, e.g.
    `create_quantizer("rvq", dim=32, num_quantizers=4, quantizer="vq",
    quantizer_options={"codebook_size": 256})`; options given flat (`codebook_size=256`) are
    still accepted. shared_codebook: all levels use one inner quantizer.
    quantize_dropout: probability that a training step keeps only the first n ~ U{1..Q}
    levels (variable bitrate); dropped levels get index -1 and decode to zero.
    `forward(z, num_levels=n)` codes with the first n levels only.
    """

    def __init__(
        self,
        dim: int,
        num_quantizers: int,
        quantizer: str = "vq",
        shared_codebook: bool = False,
        quantize_dropout: float = 0.0,
        quantizer_options: dict[str, Any] | None = None,
        **flat_options: Any,
    ) -> None:
        super().__init__()
        self.dim = require_int("dim", dim, 1)
        self.num_codebooks = require_int("num_quantizers", num_quantizers, 1)
        self.shared_codebook = bool(shared_codebook)
        self.quantize_dropout = require_range("quantize_dropout", quantize_dropout, 0.0, 1.0)
        options = inner_options("rvq", quantizer_options, flat_options)
        count = 1 if self.shared_codebook else num_quantizers
        self.levels = nn.ModuleList(
            build_single(quantizer, dim, "rvq's inner", options) for _ in range(count)
        )
        self.codebook_size = self.levels[0].codebook_size

    @property
    def num_quantizers(self) -> int:
        return self.num_codebooks

    def level(self, i: int) -> Quantizer:
        return self.levels[0 if self.shared_codebook else i]

    def quantize(self, z: Tensor, num_levels: int | None = None) -> QuantizerOutput:
        used = self._levels_used(num_levels)
        residual, z_q = z, None
        indices, metrics, loss = [], [], z.new_zeros(())
        for i in range(used):
            out = self.level(i)(residual)
            residual = residual - out.z_q.detach()
            z_q = out.z_q if z_q is None else z_q + out.z_q
            indices.append(out.indices)
            metrics.append(out.metrics)
            loss = loss + out.loss
        idx = torch.stack(indices, -1)
        if used < self.num_codebooks:
            pad = idx.new_full((*idx.shape[:-1], self.num_codebooks - used), DROPPED)
            idx = torch.cat([idx, pad], -1)
        summary = mean_metrics(metrics)
        summary["levels_used"] = float(used)
        for i, m in enumerate(metrics):
            summary[f"usage_level_{i}"] = m["usage"]
        return QuantizerOutput(z_q, idx, loss, summary)

    def _levels_used(self, num_levels: int | None) -> int:
        if num_levels is not None:
            return require_int("num_levels", num_levels, 1, self.num_codebooks)
        if self.training and self.quantize_dropout > 0 and torch.rand(()) < self.quantize_dropout:
            return int(torch.randint(1, self.num_codebooks + 1, ()))
        return self.num_codebooks

    def decode(self, indices: Tensor) -> Tensor:
        z_q = None
        for i in range(indices.shape[-1]):
            idx = indices[..., i]
            if bool((idx == DROPPED).all()):
                break
            part = self.level(i).decode(idx.clamp_min(0))
            part = part * (idx != DROPPED).unsqueeze(-1)
            z_q = part if z_q is None else z_q + part
        if z_q is None:  # every level dropped
            return torch.zeros(*indices.shape[:-1], self.dim, device=indices.device)
        return z_q
