"""What a token prior predicts each token from (its context), for each token layout.

- "grid" `(h, w)`: six causal neighbours in the same grid.
- "sequence" `(k,)`: the previous `context` tokens (and the position, added by the prior).
- "grid3d" `(t, h, w)`, the latent frames of a video tokenizer: the same six neighbours in the
  same latent frame, the co-located token and its 3x3 neighbourhood in the previous latent
  frame, and for each of the six neighbours whether it equals the previous frame's token at its
  own position (0 same, 1 changed, 2 unknown: outside the frame, or no previous frame). The
  first latent frame sees "outside" symbols for the previous frame.

A context is a row of small integers, one per slot; slot s takes `slot_sizes(...)[s]` values.
Symbol slots take K + 1 values, K meaning "outside". A grid3d prior can also copy: the tokens
of its previous-frame slots get a learned bonus on their own logits (`copy_slots`), which is
how a static region comes to cost almost nothing, whatever its codes.

Every neighbour of a grid token lies in an earlier wave of equal 2*row + col, so a wave's
tokens can be coded at once. A grid3d token at latent frame f is in wave 2*row + col + 4*f:
the latest token it reads from the previous frame (down-right) is in wave 2*row + col + 3 of
that frame, so each frame can run four waves behind the one before instead of waiting for it
to finish: T*h*w tokens in 2h + w + 4T - 6 waves rather than T * (2h + w - 2), which is what
keeps a long clip's coding time close to one frame's.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("grid", "sequence", "grid3d")
RANKS = {"grid": 2, "sequence": 1, "grid3d": 3}  # token shape rank of each layout
# (d_row, d_col) of the neighbours a grid token is predicted from; every one lies in an
# earlier wave (2 * d_row + d_col < 0), so the waves of equal 2 * row + col can be coded at once
# (twelve neighbours fitted the 400-crop trial worse than these six: 15.8 % vs 19.3 % saved)
GRID_NEIGHBOURS = ((0, -1), (0, -2), (-1, -1), (-1, 0), (-1, 1), (-2, 0))
ROWS_ABOVE, COLS_AROUND = 2, 2  # the margin of outside symbols a grid needs
# grid3d: the previous latent frame's 3x3 neighbourhood of the token's position
PREVIOUS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1))
ROWS_BELOW = 1  # grid3d also reads one row below (in the previous frame)
SAME, CHANGED, UNKNOWN = 0, 1, 2  # a neighbour against the previous frame
_SPATIAL = slice(0, len(GRID_NEIGHBOURS))
_COPY = slice(len(GRID_NEIGHBOURS), len(GRID_NEIGHBOURS) + len(PREVIOUS))


def slot_sizes(layout: str, codebook_size: int, context: int = 1) -> list[int]:
    """How many values each context slot takes (`context`: a sequence's previous tokens)."""
    symbol = codebook_size + 1
    if layout == "grid":
        return [symbol] * len(GRID_NEIGHBOURS)
    if layout == "sequence":
        return [symbol] * context
    if layout == "grid3d":
        return [symbol] * (len(GRID_NEIGHBOURS) + len(PREVIOUS)) + [3] * len(GRID_NEIGHBOURS)
    raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")


def copy_slots(layout: str) -> range:
    """The slots whose symbols get a learned logit bonus (their token is likely again)."""
    return range(_COPY.start, _COPY.stop) if layout == "grid3d" else range(0)


def waves(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Flat positions in coding order, grouped into waves whose members are independent:
    one position at a time for a sequence, equal 2*row + col for a grid, and equal
    2*row + col + 4*frame for latent frames (each wave in flat order)."""
    if len(shape) == 1:
        return [np.array([i]) for i in range(shape[0])]
    frames, rows, cols = np.meshgrid(*(np.arange(n) for n in (1, *shape)[-3:]), indexing="ij")
    wave = (2 * rows + cols + 4 * frames).reshape(-1)
    order = np.argsort(wave, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(wave[order])) + 1)


def _padded(frames: np.ndarray, outside: int) -> np.ndarray:
    """`[..., T, h, w]` -> `[..., T + 1, h + 3, w + 4]`: a frame of outside symbols first (the
    previous frame of frame 0) and a margin of outside symbols around every frame."""
    pad = [(0, 0)] * (frames.ndim - 3) + [(1, 0), (ROWS_ABOVE, ROWS_BELOW),
                                          (COLS_AROUND, COLS_AROUND)]
    return np.pad(frames.astype(np.int64), pad, constant_values=outside)


def _gather(cells: np.ndarray, f: np.ndarray, r: np.ndarray, c: np.ndarray,
            outside: int) -> np.ndarray:
    """`[M, 21]` grid3d contexts of the tokens at padded frame `f`, row `r`, column `c` of
    `cells` `[F, h + 3, w + 4]` (frame f - 1 is their previous frame)."""
    f, r, c = f[:, None], r[:, None] + ROWS_ABOVE, c[:, None] + COLS_AROUND
    near = np.array(GRID_NEIGHBOURS)
    back = np.array(PREVIOUS)
    rows, cols = r + near[:, 0], c + near[:, 1]
    spatial = cells[f, rows, cols]
    earlier = cells[f - 1, rows, cols]
    unknown = (spatial == outside) | (earlier == outside)
    flags = np.where(unknown, UNKNOWN, np.where(spatial == earlier, SAME, CHANGED))
    previous = cells[f - 1, r + back[:, 0], c + back[:, 1]]
    return np.concatenate([spatial, previous, flags], 1)


def video_contexts(indices: np.ndarray, codebook_size: int) -> np.ndarray:
    """`[B, T, h, w]` tokens -> `[B, T, h, w, 21]` grid3d contexts of every token (training)."""
    b, t, h, w = indices.shape
    cells = _padded(indices, codebook_size).reshape(b * (t + 1), h + 3, w + 4)
    clip, frame, r, c = (a.reshape(-1) for a in np.meshgrid(
        np.arange(b), np.arange(t), np.arange(h), np.arange(w), indexing="ij"))
    ctx = _gather(cells, clip * (t + 1) + frame + 1, r, c, codebook_size)
    return ctx.reshape(b, t, h, w, -1)


class VideoBoard:
    """The latent frames of one clip as they are coded, with margins of outside symbols, so the
    context of any position is a plain lookup (cost per wave: its own positions only)."""

    def __init__(self, shape: tuple[int, int, int], outside: int) -> None:
        self.shape, self.outside = shape, outside
        self.cells = _padded(np.full(shape, outside), outside)

    def _where(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, h, w = self.shape
        frame, rest = np.divmod(positions, h * w)
        r, c = np.divmod(rest, w)
        return frame + 1, r, c

    def put(self, positions: np.ndarray, values: np.ndarray) -> None:
        f, r, c = self._where(positions)
        self.cells[f, r + ROWS_ABOVE, c + COLS_AROUND] = values

    def get(self) -> np.ndarray:
        return self.cells[1:, ROWS_ABOVE:-ROWS_BELOW, COLS_AROUND:-COLS_AROUND].copy()

    def context(self, positions: np.ndarray) -> np.ndarray:
        """`[M, 21]` contexts of flat `positions`, from what has been put so far."""
        return _gather(self.cells, *self._where(positions), self.outside)
