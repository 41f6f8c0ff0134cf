"""Per-sample row gathers and sums on `[B, N, D]` token tensors, as flat row operations.

On the CPU, `gather` / `scatter_add_` along the token dim with an index expanded over the
channels are about 10x slower than one `index_select` / `index_add_` over the B*N rows with
per-sample offsets; these two helpers are the fast form, used by every plan and by ToMe.
"""

from __future__ import annotations

import torch
from torch import Tensor


def take_rows(t: Tensor, index: Tensor) -> Tensor:
    """`t[b, index[b, m], ...]` for `t` `[B, N, ...]` and `index` `[B, M]`; a negative index
    reads row 0 of its sample (callers mask those)."""
    B, N = t.shape[:2]
    flat = t.reshape(B * N, -1)
    rows = index.clamp(min=0) + torch.arange(B, device=index.device)[:, None] * N
    return flat.index_select(0, rows.reshape(-1)).view(B, index.shape[1], *t.shape[2:])


def add_rows(values: Tensor, slot: Tensor, size: int) -> Tensor:
    """`out[b, slot[b, n]] += values[b, n]`: `[B, size, D]` sums of the rows of `values`
    `[B, N, D]` by the slots `[B, N]` (each in [0, size))."""
    B, N, D = values.shape
    rows = (slot + torch.arange(B, device=slot.device)[:, None] * size).reshape(-1)
    out = values.new_zeros(B * size, D).index_add_(0, rows, values.reshape(B * N, D))
    return out.view(B, size, D)
