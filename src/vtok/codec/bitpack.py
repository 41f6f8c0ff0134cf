"""Fixed-width bit packing: each index in exactly ceil(log2 K) bits, most significant bit first,
the last byte padded with zero bits."""

from __future__ import annotations

import math

import numpy as np


def bits_per_index(codebook_size: int) -> int:
    """ceil(log2 K), at least 1 bit (a codebook of one code still needs a place per token)."""
    if not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"codebook_size must be an integer >= 1, got {codebook_size!r}")
    return max(1, math.ceil(math.log2(codebook_size)))


def packed_size(count: int, codebook_size: int) -> int:
    """Bytes that `count` packed indices take."""
    return -(-count * bits_per_index(codebook_size) // 8)


def pack(indices: np.ndarray, codebook_size: int) -> bytes:
    """Pack non-negative integers < codebook_size into ceil(log2 K) bits each."""
    values = np.asarray(indices).reshape(-1)
    if values.size and (values.min() < 0 or values.max() >= codebook_size):
        raise ValueError(f"indices must lie in [0, {codebook_size}), "
                         f"got values in [{values.min()}, {values.max()}]")
    width = bits_per_index(codebook_size)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def unpack(data: bytes, count: int, codebook_size: int) -> np.ndarray:
    """Inverse of `pack`: `count` int64 indices. Raises ValueError if `data` has the wrong
    length, a padding bit is set or a value is >= codebook_size."""
    width = bits_per_index(codebook_size)
    if len(data) != packed_size(count, codebook_size):
        raise ValueError(f"{count} indices of {width} bits need {packed_size(count, codebook_size)}"
                         f" bytes, got {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    tail = count * width % 8  # bits of the last byte that belong to indices
    if tail and np.unpackbits(raw[-1:])[tail:].any():
        raise ValueError("padding bits after the last index are not zero")
    weights = np.int64(1) << np.arange(width - 1, -1, -1, dtype=np.int64)
    values = np.empty(count, dtype=np.int64)
    step = 1 << 16  # indices per chunk: whole bytes (8 | step), bounded temporaries
    for start in range(0, count, step):
        n = min(step, count - start)
        first, last = start * width // 8, -(-(start + n) * width // 8)
        bits = np.unpackbits(raw[first:last])[: n * width].reshape(n, width)
        values[start : start + n] = bits @ weights
    if values.size and values.max() >= codebook_size:
        raise ValueError(f"index {values.max()} is outside the codebook of {codebook_size}")
    return values
