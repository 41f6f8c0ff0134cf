"""Multi-scale residual quantization over a grid (Tian et al., 2024, VAR; I2-World).

Scale s quantizes the residual averaged down to s's grid, upsamples its codes back to the full
grid and subtracts them, so coarse scales carry layout and fine scales carry detail. One shared
inner quantizer (codebook) serves every scale. Indices: every scale's grid flattened in raster
order and concatenated coarse to fine, `[..., T]` with T = sum of the scales' cell counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vtok.quant.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    code_metrics,
    mean_metrics,
    require_int,
)
from vtok.quant.rvq import build_single, inner_options


def _parse_scales(scales: Sequence[Any]) -> list[tuple[int, ...]]:
    """Normalize scales to tuples (an int means a square 2D grid); refuse anything else."""
    problem = f"got {scales!r}"
    parsed: list[tuple[int, ...]] = []
    if isinstance(scales, Sequence) and not isinstance(scales, str):
        for s in scales:
            shape = (s, s) if isinstance(s, int) else tuple(s) if isinstance(s, Sequence) else ()
            if not 1 <= len(shape) <= 2 or not all(isinstance(v, int) and v >= 1 for v in shape):
                parsed, problem = [], f"got {s!r} in {scales!r}"
                break
            parsed.append(shape)
    for a, b in zip(parsed, parsed[1:]):
        if len(a) != len(b) or any(x > y for x, y in zip(a, b)):
            parsed, problem = [], f"{b} follows {a}"
            break
    if not parsed:
        raise ValueError(
            "scales must be a non-empty list of grid sizes that never shrink, each an int "
            f"(square 2D grid) or a tuple of 1 or 2 positive ints; {problem}"
        )
    return parsed


@QUANTIZERS.register("msrvq")
class MultiScaleResidualQuantizer(Quantizer):
    """Multi-scale residual quantization: input `[..., *grid, dim]` with grid = scales[-1].

    scales: e.g. (1, 2, 4, 8) for a 2D 8x8 grid, ((1,), (2,), (4,)) for a 1D length-4 grid.
    quantizer, quantizer_options: the shared inner quantizer's name (default "vq") and options
    (as for rvq; options given flat are still accepted).
    """

    def __init__(
        self,
        dim: int,
        scales: Sequence[Any] = (1, 2, 4, 8),
        quantizer: str = "vq",
        quantizer_options: dict[str, Any] | None = None,
        **flat_options: Any,
    ) -> None:
        super().__init__()
        self.dim = require_int("dim", dim, 1)
        self.scales = _parse_scales(scales)
        self.grid = self.scales[-1]
        options = inner_options("msrvq", quantizer_options, flat_options)
        self.inner = build_single(quantizer, dim, "msrvq's inner", options)
        self.codebook_size = self.inner.codebook_size
        self.num_tokens = sum(math.prod(s) for s in self.scales)

    def _downsample(self, x: Tensor, scale: tuple[int, ...]) -> Tensor:
        if scale == self.grid:
            return x
        pool = F.adaptive_avg_pool2d if len(scale) == 2 else F.adaptive_avg_pool1d
        return pool(x, scale)

    def _upsample(self, q: Tensor) -> Tensor:
        """[B, *scale, D] codes -> [B, D, *grid] on the full grid."""
        q = q.movedim(-1, 1).contiguous()
        if tuple(q.shape[2:]) == self.grid:
            return q
        mode = "bicubic" if len(self.grid) == 2 else "linear"
        return F.interpolate(q, size=self.grid, mode=mode, align_corners=False)

    def quantize(self, z: Tensor) -> QuantizerOutput:
        rank = len(self.grid)
        if tuple(z.shape[-1 - rank : -1]) != self.grid or z.ndim < rank + 2:
            raise ValueError(
                f"msrvq with scales ending at {self.grid} expects input [..., "
                f"{', '.join(map(str, self.grid))}, {self.dim}], got {tuple(z.shape)}"
            )
        lead = z.shape[: -1 - rank]
        residual = z.reshape(-1, *self.grid, self.dim).movedim(-1, 1)  # [B, D, *grid]
        z_hat, loss = None, z.new_zeros(())
        indices, metrics = [], []
        for scale in self.scales:
            out = self.inner(self._downsample(residual, scale).movedim(1, -1))
            up = self._upsample(out.z_q)
            z_hat = up if z_hat is None else z_hat + up
            residual = residual - up.detach()
            indices.append(out.indices.reshape(out.indices.shape[0], -1))
            metrics.append(out.metrics)
            loss = loss + out.loss
        idx = torch.cat(indices, 1).reshape(*lead, self.num_tokens)
        z_q = z_hat.movedim(1, -1).reshape(z.shape)
        summary = mean_metrics(metrics)
        summary.update(code_metrics(idx, self.codebook_size))  # the shared codebook over all scales
        return QuantizerOutput(z_q, idx, loss, summary)

    def decode(self, indices: Tensor) -> Tensor:
        if indices.shape[-1] != self.num_tokens:
            raise ValueError(
                f"msrvq indices must end with {self.num_tokens} tokens for scales "
                f"{self.scales}, got {tuple(indices.shape)}"
            )
        lead = indices.shape[:-1]
        flat = indices.reshape(-1, self.num_tokens)
        z_hat, start = None, 0
        for scale in self.scales:
            n = math.prod(scale)
            part = flat[:, start : start + n].reshape(-1, *scale)
            up = self._upsample(self.inner.decode(part))
            z_hat = up if z_hat is None else z_hat + up
            start += n
        return z_hat.movedim(1, -1).reshape(*lead, *self.grid, self.dim)
