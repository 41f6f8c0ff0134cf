"""DPC-KNN clustering merge (Chat-UniVi, Jin et al., CVPR 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, merge_dest
from vtok.reduce.select import pairwise_distance, top_k_mask


@REDUCERS.register("dpc_knn")
class DensityPeakMerge(Reducer):
    """Density-peak clustering with k nearest neighbours (DPC-KNN, as used by Chat-UniVi).

    Each token's local density is exp(-mean squared distance to its `k` nearest neighbours);
    its separation is the distance to the nearest denser token (the densest token gets the
    largest distance in its sample). The tokens with the highest density * separation become
    centres, every token joins its nearest centre, and each cluster is merged into one token
    (size-weighted mean). Distances are L2 divided by sqrt(channels) so the density does not
    underflow for wide features. Equal densities are ordered by index (Chat-UniVi adds tiny
    random noise instead), which keeps the result deterministic.
    """

    name = "dpc_knn"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0, k: int = 5) -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1 (neighbours for the density), got {k!r}")
        self.k = k

    def select(self, batch: TokenBatch) -> Tensor:
        feats, cand = batch.feats, batch.reducible
        B, N, C = feats.shape
        dist = pairwise_distance(feats, "l2") / C**0.5
        inf = float("inf")
        pair_ok = cand[:, :, None] & cand[:, None, :]
        eye = torch.eye(N, dtype=torch.bool, device=feats.device)
        # Local density from the k nearest neighbours (fewer in samples with few tokens).
        kk = min(self.k, max(N - 1, 1))
        near = dist.masked_fill(~pair_ok | eye, inf).topk(kk, dim=2, largest=False).values
        k_eff = (batch.n - 1).clamp(min=0, max=self.k)[:, None, None]
        used = torch.arange(kk, device=feats.device)[None, None] < k_eff
        sq_mean = (near.masked_fill(~used, 0) ** 2).sum(2) / k_eff[..., 0].clamp(min=1)
        density = torch.exp(-sq_mean)
        # Separation: distance to the nearest token that is denser (ties: lower index wins).
        index = torch.arange(N, device=feats.device)
        d_i, d_j = density[:, :, None], density[:, None, :]
        denser = (d_j > d_i) | ((d_j == d_i) & (index[None, None, :] < index[None, :, None]))
        denser &= pair_ok
        farthest = dist.masked_fill(~pair_ok, 0).flatten(1).amax(dim=1)
        separation = dist.masked_fill(~denser, inf).amin(dim=2)
        separation = torch.where(denser.any(dim=2), separation, farthest[:, None])
        centres = top_k_mask(density * separation, cand, batch.counts)
        target = dist.masked_fill(~centres[:, None, :], inf).argmin(dim=2)
        # A centre always stays its own cluster, even when a duplicate sits at distance 0.
        target = torch.where(centres, index[None], target)
        return merge_dest(batch, target)

    def options(self) -> dict:
        return {**super().options(), "k": self.k}
