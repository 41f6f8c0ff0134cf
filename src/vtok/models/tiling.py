"""Tiled encoding and decoding: bounded memory and work for images of any size.

A conv net's output at a point depends on its input within the receptive field only, so a
large map can be cut into tiles, each processed with a halo of context around it, and put back
together: the encoder keeps each tile's core (crop), the decoder cross-fades neighbouring tiles
over part of their overlap (blend), so that no seam shows. Tiles are cut on the latent grid, so
the strided convs of every tile see the same pixel phase as the whole image does.
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
                halo: int, budget: int) -> Iterator[tuple[tuple[int, int, int, int],
                                                          tuple[int, int, int, int], Tensor]]:
    """`net` on every tile of `x` (`scale` input pixels per grid cell), GroupNorm statistics
    measured first on sample windows of at most `budget` grid cells: the spans and output of
    each tile."""
    windows = sample_windows(grid, tile, halo, budget)
    cores = [(slice(0 if y == 0 else halo, h if y + h == grid[0] else h - halo),
              slice(0 if x0 == 0 else halo, w if x0 + w == grid[1] else w - halo))
             for y, x0, h, w in windows]
    batch = torch.cat([x[..., y * scale : (y + h) * scale, x0 * scale : (x0 + w) * scale]
                       for y, x0, h, w in windows])
    with SharedGroupNorm(net) as norms:
        norms.measure(net, batch, cores, windows[0][2:])
        del batch
        todo = list(tiles(grid, tile, halo))
        for row, col in tqdm(todo, desc="tiles", unit="tile", leave=False,
                             disable=len(todo) < 4 or not sys.stderr.isatty()):
            (_, _, lo, hi), (_, _, lo2, hi2) = row, col
            yield row, col, net(x[..., lo * scale : hi * scale, lo2 * scale : hi2 * scale])


def encode_tiled(encoder: nn.Module, images: Tensor, factor: int, tile: int, halo: int,
                 budget: int) -> Tensor:
    """`encoder` (pixels -> a grid `factor` times smaller) over tiles of `tile` x `tile` grid
    cells with `halo` cells of context; each tile's core is kept. `images` is padded to a
    multiple of `factor` already."""
    grid = (images.shape[-2] // factor, images.shape[-1] // factor)
    out: Tensor | None = None
    for (s, e, lo, _), (s2, e2, lo2, _), z in _over_tiles(encoder, images, factor, grid, tile,
                                                          halo, budget):
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
                 budget: int) -> Tensor:
    """`decoder` (a grid -> pixels `factor` times larger) over tiles of `tile` x `tile` grid
    cells with `halo` cells of context; tiles cross-fade over `2 * fade` pixels around each
    inner core edge (`fade` <= halo * factor)."""
    grid = tuple(z.shape[-2:])
    out: Tensor | None = None
    for (s, e, lo, hi), (s2, e2, lo2, hi2), x in _over_tiles(decoder, z, 1, grid, tile, halo,
                                                             budget):
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


class SharedGroupNorm:
    """Makes every `nn.GroupNorm` of a net normalise each tile with statistics of the whole
    map (GroupNorm is the one layer whose output depends on more than its receptive field:
    tile-local statistics shift each tile's colours and, in the encoder, its tokens).

    `measure` runs sample windows of the map as one batch, each GroupNorm pooling its
    statistics over the windows' cores (halos excluded) and keeping them; every later call
    normalises with the kept statistics. When one window holds the whole map, these are the
    untiled statistics exactly; otherwise an estimate from the windows' share of the map.
    """

    def __init__(self, net: nn.Module) -> None:
        self.norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
        self.stats: dict[int, tuple[Tensor, Tensor]] = {}  # layer -> (mean, rstd) [B, G]
        self._cores: list[tuple[slice, slice]] | None = None  # per window, in grid cells
        self._cells = (1, 1)

    @torch.no_grad()
    def measure(self, net: nn.Module, windows: Tensor, cores: list[tuple[slice, slice]],
                cells: tuple[int, int]) -> None:
        """Keep the statistics of `windows` `[n * B, C, h, w]` (window-major), whose cores
        (in grid cells of the `cells` the windows span) are `cores`."""
        self._cores, self._cells = cores, cells
        try:
            net(windows)
        finally:
            self._cores = None

    def _pooled(self, gn: nn.GroupNorm, x: Tensor) -> tuple[Tensor, Tensor]:
        assert self._cores is not None
        n = len(self._cores)
        groups = x.view(n, x.shape[0] // n, gn.num_groups, -1, *x.shape[2:])
        sy, sx = x.shape[-2] // self._cells[0], x.shape[-1] // self._cells[1]
        count, total, squares = 0, 0.0, 0.0
        for k, (ry, rx) in enumerate(self._cores):
            core = groups[k, ..., ry.start * sy : ry.stop * sy, rx.start * sx : rx.stop * sx]
            flat = core.reshape(*core.shape[:2], -1).double()
            count += flat.shape[-1]
            total, squares = total + flat.sum(-1), squares + flat.square().sum(-1)
        mean = total / count
        var = (squares / count - mean * mean).clamp(min=0)
        return mean, (var + gn.eps).rsqrt()

    def _forward(self, i: int, gn: nn.GroupNorm, x: Tensor) -> Tensor:
        if self._cores is not None:
            self.stats[i] = self._pooled(gn, x)
        mean, rstd = (s.to(x.dtype) for s in self.stats[i])
        if self._cores is not None:  # all windows of an image share the pooled statistics
            mean, rstd = mean.repeat(len(self._cores), 1), rstd.repeat(len(self._cores), 1)
        per = x.shape[1] // gn.num_groups
        scale, shift = rstd.repeat_interleave(per, 1), (-mean * rstd).repeat_interleave(per, 1)
        if gn.affine:
            scale, shift = scale * gn.weight, shift * gn.weight + gn.bias
        return x * scale[..., None, None] + shift[..., None, None]

    def __enter__(self) -> SharedGroupNorm:
        for i, gn in enumerate(self.norms):
            gn.forward = functools.partial(self._forward, i, gn)
        return self

    def __exit__(self, *exc: object) -> None:
        for gn in self.norms:
            del gn.forward


def sample_windows(grid: tuple[int, int], tile: int, halo: int,
                   budget: int) -> list[tuple[int, int, int, int]]:
    """Windows `(top, left, height, width)` in grid cells, all of one size, spread evenly
    over the map, together at most `budget` cells (the whole map when it fits)."""
    if grid[0] * grid[1] <= budget:
        return [(0, 0, *grid)]
    h, w = min(grid[0], tile + 2 * halo), min(grid[1], tile + 2 * halo)
    n = max(1, budget // (h * w))
    ny = max(1, min(round((n * grid[0] * w / (grid[1] * h)) ** 0.5), n, -(-grid[0] // h)))
    nx = max(1, min(n // ny, -(-grid[1] // w)))
    ys = [round(i * (grid[0] - h) / max(1, ny - 1)) for i in range(ny)]
    xs = [round(i * (grid[1] - w) / max(1, nx - 1)) for i in range(nx)]
    return [(y, x, h, w) for y in ys for x in xs]
