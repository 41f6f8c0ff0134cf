"""Exact nearest-code search that stays fast on CPU for large codebooks.

Two things make the naive `cdist(x, codes).argmin(1)` slow: it materializes an `N x K` float
matrix far larger than cache, and `argmin` over a long row is a scalar loop. Here rows are
processed in cache-sized chunks, the distance is one `addmm` (`|c|^2 - 2 x.c`; `|x|^2` does not
change the winner), and the row minimum is found in two vectorized steps: the minimum of each
block of codes, then `argmin` only inside the winning block. Ties resolve to the lowest index,
exactly like `argmin`.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 128  # codes per block for the two-step argmin
CHUNK_BYTES = {"cpu": 4 << 20}  # distance chunk size; accelerators take much larger chunks
DEFAULT_CHUNK_BYTES = 512 << 20


@torch.no_grad()
def nearest_code(x: Tensor, codes: Tensor, metric: str = "l2") -> Tensor:
    """Index of the nearest row of `codes` [K, d] for every row of `x` [N, d].

    metric "l2": smallest Euclidean distance; "dot": largest inner product (cosine distance
    when both sides are unit-normalized).
    """
    n, k = x.shape[0], codes.shape[0]
    x = x.to(codes.dtype)
    if metric == "l2":
        bias, alpha = (codes * codes).sum(1), -2.0
    else:
        bias, alpha = codes.new_zeros(k), -1.0
    blocked = k >= 2 * BLOCK
    if blocked and k % BLOCK:
        # pad with codes that can never win (infinite distance)
        pad = BLOCK - k % BLOCK
        codes = torch.cat([codes, codes.new_zeros(pad, codes.shape[1])])
        bias = torch.cat([bias, bias.new_full((pad,), float("inf"))])
    width = codes.shape[0]
    budget = CHUNK_BYTES.get(x.device.type, DEFAULT_CHUNK_BYTES)
    rows = max(1, min(n, budget // (4 * width)))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    buf = torch.empty(rows, width, dtype=codes.dtype, device=x.device)
    codes_t = codes.t()
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dist = torch.addmm(bias, x[start:stop], codes_t, alpha=alpha, out=buf[: stop - start])
        out[start:stop] = _block_argmin(dist) if blocked else dist.argmin(1)
    return out


def _block_argmin(dist: Tensor) -> Tensor:
    m, width = dist.shape
    blocks = dist.view(m, width // BLOCK, BLOCK)
    best_block = blocks.amin(2).argmin(1)  # first block holding the row minimum
    inside = blocks.gather(1, best_block.view(m, 1, 1).expand(m, 1, BLOCK)).squeeze(1)
    return best_block * BLOCK + inside.argmin(1)
