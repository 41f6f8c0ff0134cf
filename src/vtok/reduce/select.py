"""Shared selection blocks: masked top-k, even spacing, distances and farthest-point picking."""

from __future__ import annotations

import torch
from torch import Tensor

METRICS = ("l2", "cosine")


def top_k_mask(score: Tensor, candidates: Tensor, counts: Tensor) -> Tensor:
    """`[B, N]` bool: in each sample the `counts[b]` candidates with the highest score.

    Ties go to the lower index and NaN scores rank last, so the choice never depends on
    padding or on the batch a sample sits in.
    """
    wide = torch.promote_types(score.dtype, torch.float32)
    s = score.to(wide if score.is_floating_point() else torch.float64)
    s = s.nan_to_num(nan=float("-inf")).masked_fill(~candidates, float("-inf"))
    order = s.argsort(dim=1, descending=True, stable=True)
    # A second stable sort puts every candidate ahead of non-candidates, even at -inf.
    order = order.gather(1, (~candidates.gather(1, order)).byte().argsort(dim=1, stable=True))
    index = torch.arange(score.shape[1], device=score.device).expand_as(order).contiguous()
    position = torch.empty_like(order).scatter_(1, order, index)
    return candidates & (position < counts[:, None])


def evenly_spaced(rank: Tensor, total: Tensor, count: Tensor) -> Tensor:
    """`[B, N]` bool: tokens whose rank is `floor(i * total / count)` for some i < count.

    rank: `[B, N]` (-1 for non-members); total, count: `[B]` with count <= total. Exactly
    `count` members are hit, spread evenly and always including rank 0.
    """
    t = total[:, None].clamp(min=1)
    c = count[:, None]
    # The only i that can map to this rank is ceil(rank * count / total).
    i = (rank * c + t - 1) // t
    hit = (i < c) & ((i * t) // c.clamp(min=1) == rank)
    return hit & (rank >= 0) & (c > 0)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"distance must be one of 'l2', 'cosine', got {metric!r}")
    return metric


def normalize(f: Tensor) -> Tensor:
    return f / f.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def pairwise_distance(f: Tensor, metric: str = "l2") -> Tensor:
    """`[B, N, N]` distances: L2, or cosine distance 1 - cos."""
    if metric == "cosine":
        g = normalize(f)
        return (1 - g @ g.transpose(1, 2)).clamp(min=0)
    # The non-matmul path is exact (no |a|^2 + |b|^2 - 2ab cancellation), so a token is at
    # distance 0 from itself and from its duplicates.
    return torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist")


def distance_to(f: Tensor, c: Tensor, metric: str = "l2") -> Tensor:
    """`[B, N]` distance from every token of `f` `[B, N, D]` to one point `c[b]` per sample."""
    if metric == "cosine":
        return (1 - (normalize(f) * normalize(c)[:, None]).sum(-1)).clamp(min=0)
    return (f - c[:, None]).norm(dim=-1)


def farthest_point(
    feats: Tensor, candidates: Tensor, counts: Tensor, first: Tensor, steps: int, metric: str
) -> Tensor:
    """Greedy farthest-point (Gonzalez 1985) selection: `[B, N]` bool with `counts[b]` picks.

    Starts from `first` `[B]` and then repeatedly adds the candidate whose distance to the
    nearest pick is largest (lower index on ties); `steps` is max(counts).
    """
    B, N, _ = feats.shape
    rows = torch.arange(B, device=feats.device)
    selected = torch.zeros(B, N, dtype=torch.bool, device=feats.device)
    nearest = torch.full((B, N), float("inf"), dtype=feats.dtype, device=feats.device)
    current = first
    for step in range(steps):
        if step > 0:
            current = nearest.masked_fill(selected | ~candidates, float("-inf")).argmax(dim=1)
        active = counts > step
        selected[rows, current] |= active
        nearest = torch.minimum(nearest, distance_to(feats, feats[rows, current], metric))
    return selected & candidates
