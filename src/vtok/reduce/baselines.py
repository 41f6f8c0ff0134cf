"""Baselines every reduction method should beat: random pruning and uniform-stride pruning."""

from __future__ import annotations

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, keep_dest
from vtok.reduce.select import evenly_spaced, top_k_mask

_MASK32 = 0xFFFFFFFF


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer mix (xor-shift-multiply) on int64 tensors holding values < 2**32.

    The products stay below 2**63, so it is exact on every device and in every batch.
    """
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


@REDUCERS.register("random")
class RandomPrune(Reducer):
    """Keep a random subset of the reducible tokens.

    The draw is a hash of (seed, token rank), not a stateful generator, so a sample gets the
    same subset in any batch and with any padding; with the same seed every sample of equal
    length keeps the same ranks. Pass `generator` to draw a fresh seed from it on every call
    (different subsets per layer or step, reproducible from the generator's seed).
    """

    name = "random"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0, seed: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed, self.generator = seed, generator

    def select(self, batch: TokenBatch) -> Tensor:
        seed = self.seed
        if self.generator is not None:
            seed = int(torch.randint(0, 2**31, (1,), generator=self.generator))
        salt = int(hash32(torch.tensor(seed & _MASK32)))
        priority = hash32((batch.rank.clamp(min=0) * 0x9E3779B1 + salt) & _MASK32)
        keep = top_k_mask(priority, batch.reducible, batch.counts)
        return keep_dest(batch, keep)

    def options(self) -> dict:
        return {**super().options(), "seed": self.seed}


@REDUCERS.register("stride")
class StridePrune(Reducer):
    """Keep evenly spaced reducible tokens: ranks floor(i * n / k) for i < k (always rank 0)."""

    name = "stride"

    def select(self, batch: TokenBatch) -> Tensor:
        return keep_dest(batch, evenly_spaced(batch.rank, batch.n, batch.counts))
