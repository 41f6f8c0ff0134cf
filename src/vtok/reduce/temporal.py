"""Reducers for video tokens: frames of an h x w token grid, stacked frame after frame.

- `static_gate` keeps the tokens that changed most since the previous frame; a token that did
  not change joins the token at its place in the last frame where that place was kept (skip
  static tokens, as GRT does; the first frame is kept before any other).
- `pool3d` averages windows of frames x rows x columns (PPLLaVA-style pooling; over time
  first, since neighbouring frames repeat each other most).

Both take `frames=T` (the reducible tokens of a sample are T equal frames); `pool3d` also the
frame's `grid=(h, w)` (default: a square). Merging across frames by similarity needs no
special reducer: `tome`, `dpc_knn` (Chat-UniVi's clustering) and `kmedoids` run on all of a
video's tokens at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, check_keep, merge_dest
from vtok.reduce.pool import _pair
from vtok.reduce.select import normalize, top_k_mask


def _check_frames(frames: object) -> int:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    return frames


def _per_frame(n: int, frames: int) -> int:
    if n % frames:
        raise ValueError(f"{n} tokens do not split into frames={frames} equal frames")
    return n // frames


def _frame_sides(n: int, frames: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """The (h, w) of one frame of `n` reducible tokens."""
    per = _per_frame(n, frames)
    if grid is not None:
        if grid[0] * grid[1] != per:
            raise ValueError(f"grid={grid} needs {grid[0] * grid[1]} tokens a frame, got {per}")
        return grid
    side = math.isqrt(per)
    if side * side != per:
        raise ValueError(f"give grid=(h, w): a frame of {per} tokens is not a square")
    return side, side


def _samples(batch: TokenBatch) -> Iterator[tuple[int, Tensor]]:
    """(sample, its reducible token indices in rank order) for every sample that has any."""
    for b in range(batch.rank.shape[0]):
        idx = batch.reducible[b].nonzero().flatten()
        if idx.numel():
            yield b, idx


@REDUCERS.register("static_gate")
class StaticGate(Reducer):
    """Keep the tokens that changed most from the previous frame (1 - cosine similarity at the
    same place); every frame-0 token ranks above any later one. A dropped token joins the
    kept token at its place in the nearest earlier frame (dropped, in frame 0)."""

    name = "static_gate"

    def __init__(self, keep: float | None = None, r: int | None = None, frames: int = 1,
                 protected: Protected = 0) -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        self.frames = _check_frames(frames)

    def select(self, batch: TokenBatch) -> Tensor:
        dest = torch.full_like(batch.rank, -1)
        for b, idx in _samples(batch):
            per = _per_frame(idx.numel(), self.frames)
            g = normalize(batch.feats[b, idx]).view(self.frames, per, -1)
            change = torch.full(g.shape[:2], 3.0, device=g.device)  # frame 0 first: 1-cos <= 2
            change[1:] = 1 - (g[1:] * g[:-1]).sum(-1)
            every = torch.ones_like(idx, dtype=torch.bool)[None]
            kept = top_k_mask(change.flatten()[None], every, batch.counts[b:b + 1])[0]
            kept = kept.view(change.shape)
            target = torch.arange(idx.numel(), device=g.device).view(change.shape)
            target = target.masked_fill(~kept, -1)
            for f in range(1, self.frames):  # a dropped place joins its previous frame's target
                target[f] = torch.where(kept[f], target[f], target[f - 1])
            target = target.flatten()
            dest[b, idx] = torch.where(target >= 0, idx[target.clamp(min=0)], -1)
        return merge_dest(batch, dest)

    def options(self) -> dict:
        return {**super().options(), "frames": self.frames}


@REDUCERS.register("pool3d")
class Pool3d(Reducer):
    """Average windows of `stride=(frames, rows, columns)` tokens. With `keep`, time is pooled
    first: windows of ceil(1/keep) frames (at most all of them), then space as `pool2d` does
    for what is left of the ratio. The first token of each window represents it."""

    name = "pool3d"

    def __init__(self, keep: float | None = None, stride: Sequence[int] | None = None,
                 frames: int = 1, grid: Sequence[int] | None = None,
                 protected: Protected = 0) -> None:
        if (keep is None) == (stride is None):
            raise ValueError(f"pool3d takes exactly one of keep or stride, got keep={keep!r}, "
                             f"stride={stride!r}")
        self.keep = None if keep is None else check_keep(keep)
        self.r = None
        if stride is not None and not (
            isinstance(stride, Sequence) and len(stride) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in stride)
        ):
            raise ValueError(f"stride must be (frames, rows, columns), positive integers, "
                             f"got {stride!r}")
        self.stride = None if stride is None else tuple(stride)
        self.frames = _check_frames(frames)
        self.grid = None if grid is None else _pair("grid", grid)
        self.protected = protected

    def is_identity(self) -> bool:
        return self.keep == 1.0 or self.stride == (1, 1, 1)

    def _windows(self, n: int) -> tuple[int, int, int, int, int, int]:
        """(h, w, kt, kh, kw, outputs) for a sample of n reducible tokens."""
        if n == 0:
            return 1, 1, 1, 1, 1, 0
        T = self.frames
        h, w = _frame_sides(n, T, self.grid)
        if self.stride is not None:
            kt, kh, kw = self.stride
        else:
            kt = min(T, math.ceil(1 / self.keep - 1e-9))
            scale = math.sqrt(min(self.keep * kt, 1.0))
            ho = min(max(math.floor(h * scale + 0.5), 1), h)
            wo = min(max(math.floor(w * scale + 0.5), 1), w)
            kh, kw = math.ceil(h / ho), math.ceil(w / wo)
        out = math.ceil(T / kt) * math.ceil(h / kh) * math.ceil(w / kw)
        return h, w, kt, kh, kw, out

    def count(self, n: Tensor) -> Tensor:
        return torch.tensor([self._windows(int(v))[-1] for v in n.tolist()], device=n.device)

    def static_count(self, n: int) -> int:
        return self._windows(n)[-1]

    def select(self, batch: TokenBatch) -> Tensor:
        dest = torch.full_like(batch.rank, -1)
        for b, idx in _samples(batch):
            h, w, kt, kh, kw, _ = self._windows(idx.numel())
            rank = torch.arange(idx.numel(), device=idx.device)
            f, r, c = rank // (h * w), rank % (h * w) // w, rank % w
            # each window is represented by its first token: first frame, row and column
            first = (f // kt * kt) * h * w + (r // kh * kh) * w + (c // kw * kw)
            dest[b, idx] = idx[first]
        return merge_dest(batch, dest)

    def options(self) -> dict:
        opts = {"keep": self.keep} if self.keep is not None else {"stride": self.stride}
        return {**opts, "frames": self.frames, "grid": self.grid, "protected": self.protected}
