"""Grouped (factorized) quantization: one sub-codebook per channel group.

A vector of `dim` channels is split into `groups` equal slices, each quantized by its own inner
quantizer, so G sub-codebooks of K codes express K**G combinations (product quantization,
Jegou et al., 2011; FQGAN, Bai et al., 2024). FQGAN's disentanglement regularizer pushes the
sub-codes apart: the mean squared cosine similarity between every pair of groups' codes.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.quant.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    mean_metrics,
    require_int,
    require_range,
)
from vtok.quant.rvq import build_single, inner_options


@QUANTIZERS.register("gvq")
class GroupedQuantizer(Quantizer):
    """Grouped sub-codebooks over channel groups; indices `[..., groups]`.

    quantizer, quantizer_options: every group's inner quantizer name (default "vq") and options
    (as for rvq; options given flat are still accepted). disentangle_weight: weight of FQGAN's
    regularizer.
    """

    def __init__(
        self,
        dim: int,
        groups: int = 2,
        quantizer: str = "vq",
        disentangle_weight: float = 0.0,
        quantizer_options: dict[str, Any] | None = None,
        **flat_options: Any,
    ) -> None:
        super().__init__()
        self.dim = require_int("dim", dim, 1)
        self.num_codebooks = require_int("groups", groups, 1)
        if dim % groups:
            raise ValueError(f"groups must divide dim={dim}, got groups={groups}")
        self.disentangle_weight = require_range("disentangle_weight", disentangle_weight, 0, 1e6)
        self.group_dim = dim // groups
        options = inner_options("gvq", quantizer_options, flat_options)
        self.quantizers = nn.ModuleList(
            build_single(quantizer, self.group_dim, "gvq's inner", options) for _ in range(groups)
        )
        self.codebook_size = self.quantizers[0].codebook_size

    def quantize(self, z: Tensor) -> QuantizerOutput:
        outs = [q(part) for q, part in zip(self.quantizers, z.split(self.group_dim, -1))]
        z_q = torch.cat([o.z_q for o in outs], -1)
        idx = torch.stack([o.indices for o in outs], -1)
        loss = sum((o.loss for o in outs), z.new_zeros(()))
        metrics = mean_metrics([o.metrics for o in outs])
        if self.disentangle_weight > 0 and len(outs) > 1:
            reg = self.disentanglement([o.z_q for o in outs])
            loss = loss + self.disentangle_weight * reg
            metrics["disentanglement"] = reg.item()
        return QuantizerOutput(z_q, idx, loss, metrics)

    @staticmethod
    def disentanglement(parts: list[Tensor]) -> Tensor:
        """Mean over group pairs and vectors of the squared cosine similarity of their codes."""
        unit = [F.normalize(p.reshape(-1, p.shape[-1]), dim=-1) for p in parts]
        terms = [((a * b).sum(-1) ** 2).mean() for a, b in combinations(unit, 2)]
        return torch.stack(terms).mean()

    def decode(self, indices: Tensor) -> Tensor:
        return torch.cat([q.decode(indices[..., i]) for i, q in enumerate(self.quantizers)], -1)
