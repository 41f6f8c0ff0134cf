"""Tiled encoding and decoding: bounded memory and work for images of any size.

A conv net's output at a point depends on its input within the receptive field only, so a
large map can be cut into tiles, each processed with a halo of context around it, and put back
together: the encoder keeps each tile's core (crop), the decoder cross-fades neighbouring tiles
over part of their overlap (blend), so that no seam shows. Tiles are cut on the latent grid, so
the strided convs of every tile see the same pixel phase as the whole image does.

GroupNorm is the one layer whose output depends on more than its receptive field. Its
statistics are measured first, on windows about a training crop's size, and every tile is
normalised with those of the windows around each point (`LocalGroupNorm`): tiles neither
drift apart nor differ from an untiled run, and a large photo keeps its colours.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from tqdm import tqdm


def spans(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Cut `length` cells into near-equal cores of at most `tile` cells:
    `(start, stop, lo, hi)` per core, `[lo, hi)` being the core plus `halo` cells each side
    (clipped to the map)."""
    count = max(1, math.ceil(length / tile))
    bounds = [i * length // count for i in range(count + 1)]
    return [(s, e, max(0, s - halo), min(length, e + halo)) for s, e in zip(bounds, bounds[1:])]


def tiles(grid: tuple[int, int], tile: int,
          halo: int) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """Row-major (rows, cols) spans of the tiles covering a `grid`."""
    for row in spans(grid[0], tile, halo):
        for col in spans(grid[1], tile, halo):
            yield row, col


def _over_tiles(net: nn.Module, x: Tensor, scale: int, grid: tuple[int, int], tile: int,
                halo: int, bounds: tuple[list[int], list[int]]
                ) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int], Tensor]]:
    """`net` on every tile of `x` (`scale` input pixels per grid cell), GroupNorm statistics
    measured first on the normalisation windows cut by `bounds` (grid cells): the spans and
    output of each tile."""
    with LocalGroupNorm(net, bounds) as norms:
        norms.measure(net, x, scale)
        todo = list(tiles(grid, tile, halo))
        for row, col in tqdm(todo, desc="tiles", unit="tile", leave=False,
                             disable=len(todo) < 4 or not sys.stderr.isatty()):
            (_, _, lo, hi), (_, _, lo2, hi2) = row, col
            part = x[..., lo * scale : hi * scale, lo2 * scale : hi2 * scale]
            yield row, col, norms.run(net, part, (lo, hi, lo2, hi2))


def encode_tiled(encoder: nn.Module, images: Tensor, factor: int, tile: int, halo: int,
                 bounds: tuple[list[int], list[int]]) -> Tensor:
    """`encoder` (pixels -> a grid `factor` times smaller) over tiles of `tile` x `tile` grid
    cells with `halo` cells of context, normalised with the statistics of the windows cut by
    `bounds`; each tile's core is kept. `images` is padded to a multiple of `factor`."""
    grid = (images.shape[-2] // factor, images.shape[-1] // factor)
    out: Tensor | None = None
    for (s, e, lo, _), (s2, e2, lo2, _), z in _over_tiles(encoder, images, factor, grid, tile,
                                                          halo, bounds):
        if out is None:
            out = z.new_empty(*z.shape[:2], *grid)
        out[..., s:e, s2:e2] = z[..., s - lo : e - lo, s2 - lo2 : e2 - lo2]
    assert out is not None
    return out


def _ramp(size: int, start: int, stop: int, lo: int, hi: int, length: int, fade: int,
          factor: int) -> Tensor:
    """Weights along one axis of a decoded tile covering grid cells `[lo, hi)` (`size` pixels):
    1 over the core, linear cross-fades `2 * fade` pixels wide centred on the core's inner
    edges, 0 beyond them; neighbouring tiles' weights sum to 1."""
    pos = torch.arange(size, dtype=torch.float32) + lo * factor + 0.5
    w = torch.ones(size)
    if start > 0:
        w = torch.minimum(w, ((pos - start * factor + fade) / (2 * fade)).clamp(0, 1))
    if stop < length:
        w = torch.minimum(w, ((stop * factor + fade - pos) / (2 * fade)).clamp(0, 1))
    return w


def decode_tiled(decoder: nn.Module, z: Tensor, factor: int, tile: int, halo: int, fade: int,
                 bounds: tuple[list[int], list[int]]) -> Tensor:
    """`decoder` (a grid -> pixels `factor` times larger) over tiles of `tile` x `tile` grid
    cells with `halo` cells of context, normalised with the statistics of the windows cut by
    `bounds`; tiles cross-fade over `2 * fade` pixels around each inner core edge
    (`fade` <= halo * factor)."""
    grid = tuple(z.shape[-2:])
    out: Tensor | None = None
    for (s, e, lo, hi), (s2, e2, lo2, hi2), x in _over_tiles(decoder, z, 1, grid, tile, halo,
                                                             bounds):
        if out is None:
            out = x.new_zeros(*x.shape[:2], grid[0] * factor, grid[1] * factor)
        wy = _ramp(x.shape[-2], s, e, lo, hi, grid[0], fade, factor).to(x)
        wx = _ramp(x.shape[-1], s2, e2, lo2, hi2, grid[1], fade, factor).to(x)
        # only the part with weight > 0 is added: the tile edges, spoilt by padding, never are
        y0, y1 = max(s * factor - fade, lo * factor), min(e * factor + fade, hi * factor)
        x0, x1 = max(s2 * factor - fade, lo2 * factor), min(e2 * factor + fade, hi2 * factor)
        part = x[..., y0 - lo * factor : y1 - lo * factor, x0 - lo2 * factor : x1 - lo2 * factor]
        weight = (wy[y0 - lo * factor : y1 - lo * factor, None]
                  * wx[None, x0 - lo2 * factor : x1 - lo2 * factor])
        out[..., y0:y1, x0:x1] += part * weight
    assert out is not None
    return out


def window_bounds(length: int, window: int, most: int | None = None) -> list[int]:
    """Bounds of near-equal windows of about `window` cells (and at most `most`, when given)
    covering `length` cells: `[0, ..., length]`."""
    count = max(1, round(length / window))
    if most is not None:
        count = max(count, -(-length // most))
    return [i * length // count for i in range(count + 1)]


def _blend(position: Tensor, centres: Tensor) -> Tensor:
    """`[len(position), len(centres)]` weights interpolating linearly between the two
    centres around each position (the nearest one beyond the first and last)."""
    weights = position.new_zeros(len(position), len(centres))
    if len(centres) == 1:
        return weights + 1
    right = torch.searchsorted(centres, position).clamp(1, len(centres) - 1)
    left = right - 1
    t = ((position - centres[left]) / (centres[right] - centres[left])).clamp(0, 1)
    rows = torch.arange(len(position))
    weights[rows, left] = 1 - t
    weights[rows, right] += t
    return weights


class LocalGroupNorm:
    """Makes every `nn.GroupNorm` of a net normalise with local statistics: those of the
    window (about a training crop's size) around each point, not of the whole image.

    A net trained on crops has only seen the statistics of crops: normalising a large photo
    with its whole-image statistics casts its colours (conv2d-f8 on a 4032x3024 photo: 22.0
    dB with whole-image statistics, 26.1 dB coding 512-pixel pieces on their own). `measure`
    runs the net on every window as an image of its own and keeps each layer's statistics per
    window; every later call (`run`, on the whole map or on a tile of it) normalises each
    point with the statistics of the windows around it, interpolated linearly between window
    centres, so no seam shows and a tile is normalised exactly as the whole map would be.
    """

    def __init__(self, net: nn.Module, bounds: tuple[list[int], list[int]]) -> None:
        self.norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
        self.bounds = bounds  # window bounds in grid cells, (rows, columns)
        self.centres = tuple(torch.tensor([(a + b) / 2 for a, b in zip(c, c[1:])],
                                          dtype=torch.float64) for c in bounds)
        self.parts: dict[int, list[tuple[Tensor, Tensor]]] = {}  # layer -> (mean, var) [B, G]
        self.stats: dict[int, tuple[Tensor, Tensor]] = {}  # layer -> [B, G, rows, cols]
        self._area: tuple[int, int, int, int] | None = None  # grid cells of the current run

    @torch.no_grad()
    def measure(self, net: nn.Module, x: Tensor, scale: int) -> None:
        """Keep each layer's statistics of every window of `x` (`scale` pixels a cell)."""
        (rows, cols), self._area = self.bounds, None
        for r0, r1 in zip(rows, rows[1:]):
            for c0, c1 in zip(cols, cols[1:]):
                net(x[..., r0 * scale : r1 * scale, c0 * scale : c1 * scale])
        shape = (len(rows) - 1, len(cols) - 1)
        for i, parts in self.parts.items():
            mean, var = (torch.stack([p[k] for p in parts], -1) for k in (0, 1))
            self.stats[i] = (mean.unflatten(-1, shape), var.unflatten(-1, shape))
        self.parts.clear()

    def run(self, net: nn.Module, x: Tensor, area: tuple[int, int, int, int]) -> Tensor:
        """`net(x)` for `x` covering grid cells `[area[0], area[1]) x [area[2], area[3])`."""
        self._area = area
        try:
            return net(x)
        finally:
            self._area = None

    def _forward(self, i: int, gn: nn.GroupNorm, x: Tensor) -> Tensor:
        groups = x.unflatten(1, (gn.num_groups, -1))
        if self._area is None:  # measuring: the window's own statistics, kept
            var, mean = torch.var_mean(groups.flatten(2), -1, unbiased=False)
            self.parts.setdefault(i, []).append((mean.double(), var.double()))
            return nn.GroupNorm.forward(gn, x)
        lo, hi, lo2, hi2 = self._area
        weights = [_blend(a + (torch.arange(n, dtype=torch.float64) + 0.5) * (b - a) / n, c)
                   .to(x.dtype) for a, b, n, c in ((lo, hi, x.shape[-2], self.centres[0]),
                                                    (lo2, hi2, x.shape[-1], self.centres[1]))]
        mean, var = (torch.einsum("hy,bgyx,wx->bghw", weights[0], s.to(x.dtype), weights[1])
                     for s in self.stats[i])
        rstd = var.add_(gn.eps).rsqrt_()
        shift = mean.mul_(rstd).neg_()
        # one temporary the size of x (large tiles at full resolution are most of the memory)
        out = torch.addcmul(shift[:, :, None], groups, rstd[:, :, None]).flatten(1, 2)
        if gn.affine:
            out.mul_(gn.weight[:, None, None]).add_(gn.bias[:, None, None])
        return out

    def __enter__(self) -> LocalGroupNorm:
        for i, gn in enumerate(self.norms):
            gn.forward = functools.partial(self._forward, i, gn)
        return self

    def __exit__(self, *exc: object) -> None:
        for gn in self.norms:
            del gn.forward
