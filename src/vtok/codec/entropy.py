"""Entropy coding of tokens: range coding (constriction) under an integer token prior.

Coding walks the tokens in waves of positions that do not depend on each other (for a grid,
the positions with equal 2*row + column; for a sequence, one position at a time; for the latent
frames of a video, equal 2*row + column + 4*frame, see `vtok.codec.context`). The prior's
frequencies are exact integers (`vtok.codec.intprior`), so an encoder and a decoder on any
machine, with any thread count, device or batch of images, see the same numbers and the range
coder inverts exactly. Images of the same token shape are coded together, wave by wave, each
into its own payload.
"""

from __future__ import annotations

from collections.abc import Sequence

import constriction
import numpy as np
import torch

from vtok.codec.context import (
    COLS_AROUND,
    GRID_NEIGHBOURS,
    RANKS,
    ROWS_ABOVE,
    VideoBoard,
    waves,
)
from vtok.codec.intprior import IntegerPrior

__all__ = ["EntropyCoder", "waves"]


class _Board:
    """The tokens of one image with a margin of "outside" symbols, so that the neighbours of
    any position are plain lookups (cost per wave: its own positions only)."""

    def __init__(self, shape: tuple[int, ...], slots: int, outside: int) -> None:
        self.shape = shape
        if len(shape) == 2:
            self.cells = np.full((shape[0] + ROWS_ABOVE, shape[1] + 2 * COLS_AROUND), outside,
                                 dtype=np.int64)
            self.offsets = np.array(GRID_NEIGHBOURS)
        else:
            self.cells = np.full(shape[0] + slots, outside, dtype=np.int64)
            self.slots = slots

    def put(self, positions: np.ndarray, values: np.ndarray) -> None:
        if len(self.shape) == 2:
            rows, cols = np.divmod(positions, self.shape[1])
            self.cells[rows + ROWS_ABOVE, cols + COLS_AROUND] = values
        else:
            self.cells[positions + self.slots] = values

    def get(self) -> np.ndarray:
        if len(self.shape) == 2:
            return self.cells[ROWS_ABOVE:, COLS_AROUND:-COLS_AROUND].copy()
        return self.cells[self.slots :].copy()

    def context(self, positions: np.ndarray) -> np.ndarray:
        """`[M, slots]` neighbour symbols of flat `positions`."""
        if len(self.shape) == 2:
            rows, cols = np.divmod(positions, self.shape[1])
            return self.cells[rows[:, None] + ROWS_ABOVE + self.offsets[:, 0],
                              cols[:, None] + COLS_AROUND + self.offsets[:, 1]]
        back = np.arange(1, self.slots + 1)
        return self.cells[positions[:, None] + self.slots - back]


class EntropyCoder:
    """Range coding of tokens under an `IntegerPrior`; `encode`/`decode` code one image,
    `encode_batch`/`decode_batch` several of one token shape at once (same bytes)."""

    name = "entropy"

    def __init__(self, prior: IntegerPrior) -> None:
        self.prior = prior
        self.family = constriction.stream.model.Categorical(perfect=False)

    @property
    def prior_id(self) -> str:
        return self.prior.prior_id

    def _frequencies(self, boards: Sequence[_Board | VideoBoard],
                     positions: np.ndarray) -> np.ndarray:
        """`[len(boards) * M, K]` frequencies (as float64: exact integers below 2**53) of the
        tokens at flat `positions` of every board, from earlier waves only."""
        ctx = torch.from_numpy(np.concatenate([b.context(positions) for b in boards]))
        pos = None
        if self.prior.config.layout == "sequence":
            pos = torch.from_numpy(np.tile(positions, len(boards)))
        return self.prior.frequencies(ctx, pos).astype(np.float64)

    def _boards(self, shape: tuple[int, ...], count: int) -> list[_Board | VideoBoard]:
        c = self.prior.config
        if len(shape) != RANKS[c.layout]:
            raise ValueError(f"a {c.layout} prior cannot code tokens of shape {shape}")
        if c.layout == "sequence" and shape[0] > c.max_len:
            raise ValueError(f"{shape[0]} tokens exceed the prior's {c.max_len}")
        if c.layout == "grid3d":
            return [VideoBoard(tuple(shape), c.codebook_size) for _ in range(count)]
        return [_Board(tuple(shape), c.slots, c.codebook_size) for _ in range(count)]

    def encode(self, indices: np.ndarray) -> bytes:
        return self.encode_batch([indices])[0]

    def decode(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
        return self.decode_batch([payload], shape)[0]

    def encode_batch(self, grids: Sequence[np.ndarray]) -> list[bytes]:
        """One payload per token array; all arrays must share one shape."""
        grids = [np.asarray(g, dtype=np.int64) for g in grids]
        shapes = {g.shape for g in grids}
        if len(shapes) != 1:
            raise ValueError(f"encode_batch needs one token shape, got {sorted(shapes)}")
        (shape,) = shapes
        k = self.prior.config.codebook_size
        if any(g.size and (g.min() < 0 or g.max() >= k) for g in grids):
            raise ValueError(f"token indices must lie in [0, {k})")
        boards = self._boards(shape, len(grids))
        for board, grid in zip(boards, grids):
            board.put(np.arange(grid.size), grid.reshape(-1))  # only earlier waves are read
        encoders = [constriction.stream.queue.RangeEncoder() for _ in grids]
        for positions in waves(shape):
            probs = np.split(self._frequencies(boards, positions), len(grids))
            for encoder, grid, p in zip(encoders, grids, probs):
                encoder.encode(grid.reshape(-1)[positions].astype(np.int32), self.family, p)
        return [e.get_compressed().tobytes() for e in encoders]

    def decode_batch(self, payloads: Sequence[bytes], shape: tuple[int, ...]) -> list[np.ndarray]:
        """Token arrays of `shape` from payloads; ValueError naming the first bad payload
        (not whole words, invalid for the prior, or not consumed exactly)."""
        shape = tuple(shape)
        for i, payload in enumerate(payloads):
            if len(payload) % 4:
                raise ValueError(f"payload {i}: an entropy-coded payload is whole 32-bit words, "
                                 f"got {len(payload)} bytes")
        boards = self._boards(shape, len(payloads))
        decoders = [constriction.stream.queue.RangeDecoder(np.frombuffer(p, np.uint32).copy())
                    for p in payloads]
        for positions in waves(shape):
            probs = np.split(self._frequencies(boards, positions), len(payloads))
            for i, (decoder, board, p) in enumerate(zip(decoders, boards, probs)):
                try:
                    board.put(positions, np.asarray(decoder.decode(self.family, p)))
                except Exception as err:  # constriction asserts on data its model cannot hold
                    raise ValueError(f"payload {i}: the entropy-coded data is corrupt "
                                     f"({err})") from None
        for i, decoder in enumerate(decoders):
            if not decoder.maybe_exhausted():
                raise ValueError(f"payload {i}: data left over after the last token "
                                 f"(corrupt or not coded with this prior)")
        return [b.get() for b in boards]
