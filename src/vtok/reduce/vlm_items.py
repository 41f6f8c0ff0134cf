"""The images and videos inside a VLM's token sequence: how many tokens each holds, items of
equal size grouped for one batched reducer call, and reduced tokens put back in their slots."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vtok.reduce.plan import ReductionPlan
from vtok.reduce.vlm_parts import VlmParts


def item_counts(parts: VlmParts, where: Tensor, encoded: Any, pixels: Tensor | None,
                grid_thw: Tensor | None, image_sizes: Tensor | None = None) -> list[int] | None:
    """Tokens per image (or video) of one kind in a forward, in their sequence order.

    `where` is the kind's [B, L] placeholder mask, `encoded` the features generate encoded
    beforehand (or None), `grid_thw` Qwen's t x h x w patch grid per item (or None),
    `image_sizes` LLaVA-NeXT's size per image (or None). None when the forward brings no
    pixels of this kind. ValueError when runs of placeholders cannot be told apart.
    """
    if encoded is not None:  # features encoded beforehand (generate does that)
        return [int(f.shape[0]) for f in encoded.pooler_output]
    if grid_thw is not None:  # Qwen: t x h x w patches, merged m x m
        m = parts.merge_size
        return [int(t) * (int(h) // m) * (int(w) // m) for t, h, w in grid_thw.tolist()]
    if pixels is not None and parts.features_packed:  # LLaVA: equal shares
        images = pixels.shape[0]
        return [int(where.sum()) // images] * images
    if pixels is not None:  # other layouts: each run of placeholders is one item
        runs = []
        for row in where.int():
            edges = torch.diff(row, prepend=row.new_zeros(1), append=row.new_zeros(1))
            runs += ((edges == -1).nonzero() - (edges == 1).nonzero()).flatten().tolist()
        items = (len(image_sizes) if image_sizes is not None
                 else pixels.shape[0] if pixels.ndim == 5 else len(runs))
        if len(runs) != items:
            raise ValueError(f"visual-token reduction takes each run of placeholder tokens as "
                             f"one item, but the prompts hold {len(runs)} runs for {items} "
                             f"items: put a text token between images that follow each other")
        return runs
    return None


def equal_groups(kind: str, counts: list[int] | None, grids: list[Any] | None, total: int,
                 device: torch.device) -> list[tuple[int, Any, Tensor]]:
    """Items of one kind as (tokens each, grid, start offsets) groups of equal size; `total`
    is the number of the kind's tokens in the sequence."""
    if counts is None:  # no pixel values came with this forward: the whole run is one
        counts, grids = [total], [None]
    if sum(counts) != total:
        raise RuntimeError(f"{kind} items hold {sum(counts)} tokens, the sequence {total}")
    starts = torch.tensor([0, *counts[:-1]], device=device).cumsum(0)
    groups: dict[tuple[int, Any], list[int]] = {}
    for i, (n, g) in enumerate(zip(counts, grids, strict=True)):
        groups.setdefault((n, g), []).append(i)
    return [(n, g, starts[idx]) for (n, g), idx in groups.items()]


def scatter_back(plan: ReductionPlan, reduced: Tensor) -> tuple[Tensor, Tensor]:
    """Reduced tokens `[B, M, C]` back into `[B, N, C]` at their representatives' slots.

    Returns the full tensor (zeros on dropped slots) and the `[B, N]` keep mask.
    """
    B, N = plan.assign.shape
    full = reduced.new_zeros(B, N, reduced.shape[-1])
    keep = torch.zeros(B, N, dtype=torch.bool, device=reduced.device)
    rep = plan.kept.clamp(min=0)
    rows = torch.arange(B, device=reduced.device)[:, None].expand_as(rep)
    ok = plan.mask
    full[rows[ok], rep[ok]] = reduced[ok]
    keep[rows[ok], rep[ok]] = True
    return full, keep
