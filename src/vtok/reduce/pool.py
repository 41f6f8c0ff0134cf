"""2D average pooling of a token grid (Matryoshka Multimodal Models, Cai et al., 2024)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, check_keep, merge_dest


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(pair, Sequence) and len(pair) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    )):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


@REDUCERS.register("pool2d")
class GridPool(Reducer):
    """Average-pool the reducible tokens as an h x w grid (row-major), as Matryoshka
    Multimodal Models do to nest 24x24 -> 12x12 -> 6x6 -> 3x3 -> 1x1 visual tokens.

    `stride`: pooling windows of stride x stride (kernel = stride); a grid side that is not a
    multiple keeps a smaller last window (avg_pool2d with ceil_mode=True, padding not counted).
    `keep`: output sides `floor(h * sqrt(keep) + 0.5)` by `floor(w * sqrt(keep) + 0.5)` (at
    least 1), windows splitting the grid as evenly as possible; the kept count is that
    product, close to but not always exactly keep * n. `grid=(h, w)` gives the input grid;
    without it every sample's reducible tokens must form a square (padded samples may differ).
    Protected tokens (CLS, registers) sit outside the grid and are kept first. Merges are
    size-weighted, which is plain avg_pool2d while every size is 1.
    """

    name = "pool2d"

    def __init__(self, keep: float | None = None, stride: int | Sequence[int] | None = None,
                 grid: Sequence[int] | None = None, protected: Protected = 0) -> None:
        if (keep is None) == (stride is None):
            raise ValueError(
                f"pool2d takes exactly one of keep (ratio in (0, 1]) or stride, "
                f"got keep={keep!r}, stride={stride!r}"
            )
        self.keep = None if keep is None else check_keep(keep)
        self.r = None
        self.stride = None if stride is None else _pair("stride", stride)
        self.grid = None if grid is None else _pair("grid", grid)
        self.protected = protected

    def is_identity(self) -> bool:
        return self.keep == 1.0 or self.stride == (1, 1)

    def count(self, n: Tensor) -> Tensor:
        _, _, ho, wo = self._sides(n)
        return ho * wo

    def static_count(self, n: int) -> int:
        _, _, ho, wo = self._sides_of(n)
        return ho * wo

    def select(self, batch: TokenBatch) -> Tensor:
        h, w, ho, wo = (s[:, None] for s in self._sides(batch.n))
        rank = batch.rank.clamp(min=0)
        row, col = rank // w.clamp(min=1), rank % w.clamp(min=1)
        if self.stride is not None:
            sh, sw = self.stride
            row0, col0 = row // sh * sh, col // sw * sw
        else:
            # Window j covers rows [floor(j h / ho), floor((j+1) h / ho)).
            rj = ((row + 1) * ho - 1) // h.clamp(min=1)
            cj = ((col + 1) * wo - 1) // w.clamp(min=1)
            row0, col0 = rj * h // ho.clamp(min=1), cj * w // wo.clamp(min=1)
        B, N = rank.shape
        # Each window is represented by its top-left token; find that token's input index.
        index = torch.arange(N, device=rank.device).expand(B, N).contiguous()
        by_rank = torch.zeros(B, N + 1, dtype=torch.long, device=rank.device)
        by_rank.scatter_(1, torch.where(batch.reducible, batch.rank, N), index)
        target = by_rank.gather(1, row0 * w + col0)
        return merge_dest(batch, target)

    def _sides(self, n: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-sample input sides h, w and output sides ho, wo, as `[B]` long tensors."""
        sides = [self._sides_of(int(v)) for v in n.tolist()]
        return tuple(torch.tensor(s, dtype=torch.long, device=n.device) for s in zip(*sides))

    def _sides_of(self, n: int) -> tuple[int, int, int, int]:
        if n == 0:
            return 0, 0, 0, 0
        if self.grid is not None:
            h, w = self.grid
            if h * w != n:
                raise ValueError(f"pool2d grid={self.grid} needs {h * w} tokens, got {n}")
        else:
            h = w = math.isqrt(n)
            if h * h != n:
                raise ValueError(
                    f"pool2d needs grid=(h, w) or a square number of reducible tokens, got {n}"
                )
        if self.stride is not None:
            return h, w, -(-h // self.stride[0]), -(-w // self.stride[1])
        scale = math.sqrt(self.keep)
        side = lambda s: min(max(math.floor(s * scale + 0.5), 1), s)
        return h, w, side(h), side(w)

    def options(self) -> dict:
        opts = {"keep": self.keep} if self.keep is not None else {"stride": self.stride}
        return {**opts, "grid": self.grid, "protected": self.protected}
