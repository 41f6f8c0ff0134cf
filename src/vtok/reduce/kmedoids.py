"""Segment-wise k-medoids token clustering for video (CenterCLIP, Zhao et al., SIGIR 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, keep_dest, merge_dest
from vtok.reduce.select import check_metric, pairwise_distance


@REDUCERS.register("kmedoids")
class SegmentKMedoids(Reducer):
    """k-medoids within temporal segments, after CenterCLIP's multi-segment token clustering.

    Video tokens `[B, T*n, C]` (frame-major) are split, in token order, into `segments`
    contiguous runs of near-equal length (temporal segments when T is a multiple of
    `segments`). Each segment gets a share of the kept count proportional to its length
    (shares sum exactly to the count). Medoids start deterministically (the token nearest the
    segment mean, then farthest-point picks) and `iters` alternating rounds follow: assign
    tokens to the nearest medoid of their segment, move each medoid to the member with the
    least total distance to its cluster. `merge=True` merges every cluster into its medoid
    (size-weighted); `merge=False` keeps only the medoids. A segment whose share is 0 (fewer
    kept tokens than segments) sends its tokens to the nearest medoid anywhere.
    Memory is O(B N^2): the distance matrix of the whole clip.
    """

    name = "kmedoids"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0, segments: int = 1, iters: int = 5,
                 merge: bool = True, distance: str = "l2") -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        for name, value, low in (("segments", segments, 1), ("iters", iters, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.segments, self.iters, self.merge = segments, iters, bool(merge)
        self.distance = check_metric(distance)

    def select(self, batch: TokenBatch) -> Tensor:
        feats, cand, S = batch.feats, batch.reducible, self.segments
        B, N, _ = feats.shape
        n = batch.n[:, None]
        seg = torch.where(cand, batch.rank * S // n.clamp(min=1), S)  # S = outside every segment
        # Segment s holds ranks [ceil(s n / S), ceil((s+1) n / S)); its share of the count
        # is the difference of floor(start * count / n), so shares never exceed lengths.
        starts = (torch.arange(S + 1, device=feats.device)[None] * n + S - 1) // S
        cum = starts * batch.counts[:, None] // n.clamp(min=1)
        share = cum.diff(dim=1)  # [B, S]
        in_seg = seg[:, None, :] == torch.arange(S, device=feats.device)[None, :, None]  # [B,S,N]
        dist = pairwise_distance(feats, self.distance)
        same = (seg[:, :, None] == seg[:, None, :]) & cand[:, :, None] & cand[:, None, :]
        medoids = self._initial_medoids(feats, dist, in_seg, share, seg)
        empty = torch.cat([share == 0, torch.ones(B, 1, dtype=torch.bool, device=feats.device)],
                          dim=1).gather(1, seg)  # [B, N]: token's segment got no medoid
        allowed = (same | (empty[:, :, None] & cand[:, None, :]))
        for _ in range(self.iters):
            target = self._assign(dist, medoids, allowed)
            moved = self._update(dist, medoids, target, cand, same)
            if torch.equal(moved, medoids):
                break
            medoids = moved
        if not self.merge:
            return keep_dest(batch, medoids)
        return merge_dest(batch, self._assign(dist, medoids, allowed))

    @staticmethod
    def _initial_medoids(feats: Tensor, dist: Tensor, in_seg: Tensor, share: Tensor,
                         seg: Tensor) -> Tensor:
        B, S, N = in_seg.shape
        w = in_seg.to(feats.dtype)
        means = (w @ feats) / w.sum(2, keepdim=True).clamp(min=1)  # [B, S, C]
        to_mean = (feats[:, None] - means[:, :, None]).norm(dim=-1)  # [B, S, N]
        steps = int(share.max()) if share.numel() else 0
        chosen = torch.zeros(B, N, dtype=torch.bool, device=feats.device)
        nearest = torch.full((B, N), float("inf"), dtype=feats.dtype, device=feats.device)
        seg_of = seg.clamp(max=S - 1)[:, None, :]
        for step in range(steps):
            if step == 0:
                score = -to_mean
            else:
                score = nearest[:, None, :].expand(B, S, N)
            pick = score.masked_fill(~in_seg | chosen[:, None], float("-inf")).argmax(dim=2)
            active = share > step  # [B, S]
            # Inactive segments write into a spare column, so they cannot undo a real pick.
            spare = torch.zeros(B, N + 1, dtype=torch.bool, device=feats.device)
            spare.scatter_(1, torch.where(active, pick, N), True)
            chosen |= spare[:, :N]
            # Distance of every token to its own segment's new medoid (inf where inactive).
            d_new = dist.gather(1, pick[..., None].expand(B, S, N))
            d_new = d_new.masked_fill(~active[..., None], float("inf"))
            nearest = torch.minimum(nearest, d_new.gather(1, seg_of)[:, 0])
        return chosen

    @staticmethod
    def _assign(dist: Tensor, medoids: Tensor, allowed: Tensor) -> Tensor:
        """Nearest allowed medoid of every token; medoids are their own cluster."""
        index = torch.arange(dist.shape[1], device=dist.device)[None]
        target = dist.masked_fill(~(allowed & medoids[:, None, :]), float("inf")).argmin(dim=2)
        return torch.where(medoids, index, target)

    @staticmethod
    def _update(dist: Tensor, medoids: Tensor, target: Tensor, cand: Tensor, same: Tensor
                ) -> Tensor:
        """Move each medoid to the member (of its own segment) with least total distance."""
        member = (target[:, :, None] == target[:, None, :]) & cand[:, :, None] & cand[:, None, :]
        cost = (dist * member).sum(dim=1)  # [B, N]: total distance from j to its cluster
        # cluster m (indexed by its medoid) -> candidate j: j in m's cluster and m's segment
        cluster = torch.arange(dist.shape[1], device=dist.device)[None, :, None]
        options = (target[:, None, :] == cluster) & same & cand[:, None, :]
        best = cost[:, None, :].masked_fill(~options, float("inf")).argmin(dim=2)  # [B, N]
        B, N = medoids.shape
        moved = torch.zeros(B, N + 1, dtype=torch.bool, device=dist.device)
        moved.scatter_(1, torch.where(medoids, best, N), True)
        return moved[:, :N]
