"""Finite scalar quantization (Mentzer et al., 2023): round each bounded channel to a few levels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vtok.quant.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    code_metrics,
    require_int,
)


class RoundStraightThrough(torch.autograd.Function):
    """round() whose gradient is the identity; the value stays exactly round(x)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.round()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


@QUANTIZERS.register("fsq")
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization: channel i takes one of levels[i] values in [-1, 1].

    Codes: odd L gives {-1, ..., 0, ..., 1} in steps of 2/(L-1); even L gives
    {-1, ..., 1 - 2/L} in steps of 2/L. Index: mixed radix, channel 0 least significant.
    `dim` defaults to len(levels); another dim adds linear projections in and out.
    """

    def __init__(self, levels: Sequence[int], dim: int | None = None) -> None:
        super().__init__()
        if (
            isinstance(levels, (str, bytes))
            or not isinstance(levels, Sequence)
            or len(levels) == 0
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in levels)
        ):
            raise ValueError(
                f"levels must be a non-empty list of integers >= 2 (e.g. [8, 5, 5, 5]), "
                f"got {levels!r}"
            )
        self.levels = list(levels)
        n = len(self.levels)
        self.dim = require_int("dim", dim if dim is not None else n, 1)
        self.codebook_size = math.prod(self.levels)
        if self.codebook_size > 2**62:
            raise ValueError(f"levels give {self.codebook_size} codes; at most 2**62 fit an index")
        self.project_in = nn.Linear(self.dim, n) if self.dim != n else None
        self.project_out = nn.Linear(n, self.dim) if self.dim != n else None
        lv = torch.tensor(self.levels, dtype=torch.float32)
        half = torch.tensor([v // 2 for v in self.levels], dtype=torch.float32)
        radix = torch.tensor([math.prod(self.levels[:i]) for i in range(n)], dtype=torch.long)
        # even L: shift by half a step so that rounding yields L values, centred on 0 at z=0
        offset = (1 - lv % 2) * 0.5
        # a hair over (L-1)/2 keeps atanh finite for L=2 while rounding still gives L values
        span = (lv - 1) * (1 + 1e-3) / 2
        self.register_buffer("half_width", half, persistent=False)
        self.register_buffer("radix", radix, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("span", span, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / span), persistent=False)
        # index of the all-zero code, in plain Python so the quantizer builds on the meta device
        self.index_base = float(sum(v // 2 * math.prod(self.levels[:i])
                                    for i, v in enumerate(self.levels)))

    def bound(self, x: Tensor) -> Tensor:
        """Squash x so that rounding gives integers in [-(L//2), L - 1 - L//2]."""
        return torch.addcmul(-self.offset, torch.tanh(x + self.shift), self.span)

    def quantize(self, z: Tensor) -> QuantizerOutput:
        x = z.reshape(-1, self.dim)
        if self.project_in is not None:
            x = self.project_in(x)
        centred = RoundStraightThrough.apply(self.bound(x))
        idx = self._index(centred.detach())
        z_q = centred / self.half_width
        if self.project_out is not None:
            z_q = self.project_out(z_q)
        return QuantizerOutput(
            z_q.reshape(z.shape),
            idx.reshape(z.shape[:-1]),
            z.new_zeros(()),
            code_metrics(idx, self.codebook_size),
        )


    def _index(self, centred: Tensor) -> Tensor:
        if self.codebook_size <= 1 << 24:  # a float32 dot product is exact below 2**24
            return torch.mv(centred, self.radix.float()).add_(self.index_base).long()
        return ((centred + self.half_width).long() * self.radix).sum(-1)

    def indices_to_digits(self, indices: Tensor) -> Tensor:
        lv = self.radix.new_tensor(self.levels)
        return torch.div(indices.unsqueeze(-1), self.radix, rounding_mode="floor") % lv

    def decode(self, indices: Tensor) -> Tensor:
        digits = self.indices_to_digits(indices.reshape(-1))
        values = (digits.float() - self.half_width) / self.half_width  # same ops as quantize
        if self.project_out is not None:
            values = self.project_out(values)
        return values.reshape(*indices.shape, self.dim)
