"""The raw coding: every index in exactly ceil(log2 K) bits (the baseline a prior must beat)."""

from __future__ import annotations

import math

import numpy as np

from vtok.codec import bitpack


class RawCoder:
    name = "raw"

    def __init__(self, codebook_size: int) -> None:
        self.codebook_size = codebook_size

    def encode(self, indices: np.ndarray) -> bytes:
        return bitpack.pack(indices, self.codebook_size)

    def decode(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
        return bitpack.unpack(payload, math.prod(shape), self.codebook_size).reshape(shape)
