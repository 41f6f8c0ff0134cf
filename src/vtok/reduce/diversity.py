"""Diversity pruning by greedy farthest-point picking: DivPrune and k-center (ToDRE stage 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, keep_dest
from vtok.reduce.select import check_metric, farthest_point, pairwise_distance


@REDUCERS.register("divprune")
class DivPrune(Reducer):
    """DivPrune (Alvar et al., CVPR 2025): keep a max-min diverse subset, prune the rest.

    Greedy answer to the max-min diversity problem on cosine distance (1 - cos): the first
    token kept is the most isolated one (largest cosine distance to its nearest neighbour),
    then each step keeps the token whose minimum distance to the kept ones is largest.
    """

    name = "divprune"

    def select(self, batch: TokenBatch) -> Tensor:
        dist = pairwise_distance(batch.feats, "cosine")
        N = dist.shape[1]
        eye = torch.eye(N, dtype=torch.bool, device=dist.device)
        pair_ok = batch.reducible[:, :, None] & batch.reducible[:, None, :] & ~eye
        isolation = dist.masked_fill(~pair_ok, float("inf")).amin(dim=2)
        first = isolation.masked_fill(~batch.reducible, float("-inf")).argmax(dim=1)
        keep = farthest_point(batch.feats, batch.reducible, batch.counts, first,
                              batch.max_count, "cosine")
        return keep_dest(batch, keep)


@REDUCERS.register("kcenter")
class KCenter(Reducer):
    """Greedy k-center (Gonzalez 1985), the diversity stage of ToDRE (Li et al., 2025).

    Keeps k tokens so that every token is close to a kept one (a 2-approximation of the
    k-center objective), on L2 distance by default (`distance="cosine"` for 1 - cos). It
    starts from the most central token (nearest to the mean of the reducible tokens) and then
    adds the farthest token from the kept set. The selection rule is DivPrune's; they differ
    only in the start (DivPrune starts from the most isolated token, an outlier) and the
    default distance (DivPrune: cosine).
    """

    name = "kcenter"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0, distance: str = "l2") -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        self.distance = check_metric(distance)

    def select(self, batch: TokenBatch) -> Tensor:
        feats, cand = batch.feats, batch.reducible
        w = cand.to(feats.dtype)[..., None]
        mean = (feats * w).sum(1) / w.sum(1).clamp(min=1)
        if self.distance == "cosine":
            dist = 1 - torch.nn.functional.cosine_similarity(feats, mean[:, None], dim=-1)
        else:
            dist = (feats - mean[:, None]).norm(dim=-1)
        first = dist.masked_fill(~cand, float("inf")).argmin(dim=1)
        keep = farthest_point(feats, cand, batch.counts, first, batch.max_count, self.distance)
        return keep_dest(batch, keep)

    def options(self) -> dict:
        return {**super().options(), "distance": self.distance}
