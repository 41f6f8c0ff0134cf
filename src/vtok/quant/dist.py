"""Keep codebook state identical across DDP ranks (EMA sums, k-means init, restarts).

Every helper is a no-op in a single process, so quantizers call them unconditionally.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum `tensor` over ranks in place; every rank ends with the same bits."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    if world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


def all_gather_rows(rows: Tensor) -> Tensor:
    """Concatenate each rank's `[n_rank, ...]` rows in rank order; `n_rank` may differ."""
    world = world_size()
    if world == 1:
        return rows
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)])
