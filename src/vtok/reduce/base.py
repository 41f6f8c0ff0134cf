"""The reducer interface, the registry, keep-count rules and the prepared token batch."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vtok.reduce.plan import ReductionPlan, build_plan
from vtok.registry import Registry

REDUCERS: Registry[Reducer] = Registry("reducer")
Protected = int | Sequence[int]


def create_reducer(name: str, **options: Any) -> Reducer:
    """Build a registered reducer, e.g. `create_reducer("tome", r=8, protected=1)`."""
    return REDUCERS.create(name, **options)


def check_keep(keep: Any) -> float:
    """A keep ratio in (0, 1]; NaN, bools, strings and tensors are refused."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    return float(keep)


def check_r(r: Any) -> int:
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
        raise ValueError(f"r must be a non-negative integer (tokens to remove), got {r!r}")
    return int(r)


def kept_count(n: int, keep: float | None = None, r: int | None = None) -> int:
    """How many of `n` reducible tokens a reducer keeps (outputs it makes from them).

    keep: round half up, `floor(keep * n + 0.5)` in float64, at least 1 when n >= 1; so keep=0.5
    of 7 keeps 4 and keep=0.1 of 4 keeps 1. r: `n - r`, at least 1 (in a padded batch a short
    sample keeps one token rather than failing). Protected tokens are never counted in n.
    """
    if n <= 0:
        return 0
    k = math.floor(n * keep + 0.5) if keep is not None else n - r
    return min(max(k, 1), n)


def kept_counts(n: Tensor, keep: float | None = None, r: int | None = None) -> Tensor:
    """`kept_count` for every sample of `n` `[B]`, with the same float64 arithmetic."""
    k = torch.floor(n.double() * keep + 0.5).long() if keep is not None else n - r
    return torch.where(n > 0, k.clamp(min=1), 0).minimum(n)


@dataclass
class TokenBatch:
    """What a reducer's `select` sees: one batch, validated, with padding already neutralised.

    feats: float similarity features `[B, N, D]` (the keys if given, else x), zero on padding.
    protected / reducible: `[B, N]` bool; reducible = real and not protected.
    rank: `[B, N]` position of each reducible token among its sample's reducible tokens, -1
    elsewhere; methods that need an order use it, so padding anywhere changes nothing.
    n / counts: `[B]` reducible tokens and how many to keep; max_count: largest count (int).
    """

    feats: Tensor
    mask: Tensor
    sizes: Tensor
    protected: Tensor
    reducible: Tensor
    rank: Tensor
    n: Tensor
    counts: Tensor
    max_count: int
    num_protected: int
    attn: Tensor | None
    padded: bool


class Reducer:
    """Base class: call it on tokens `[B, N, C]` to get a `ReductionPlan`.

    Subclasses implement `select(batch) -> dest`, `dest[b, n]` being the input index token n
    joins (itself when kept, -1 when dropped); the plan, sizes and merging are shared code.
    Exactly one of `keep` (ratio of reducible tokens kept) and `r` (tokens removed per call)
    is given. `protected`: a count of leading tokens (CLS, registers) or a list of indices
    that are always kept unmerged and come first in the output (so after one reduction an
    index list becomes the count `len(list)`: pass that to later calls).
    """

    name = "reducer"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0) -> None:
        if (keep is None) == (r is None):
            raise ValueError(
                f"give exactly one of keep (ratio kept, in (0, 1]) or r (tokens removed), "
                f"got keep={keep!r}, r={r!r}"
            )
        self.keep = None if keep is None else check_keep(keep)
        self.r = None if r is None else check_r(r)
        self.protected = protected

    def __call__(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        sizes: Tensor | None = None,
        keys: Tensor | None = None,
        attn: Tensor | None = None,
        protected: Protected | None = None,
    ) -> ReductionPlan:
        """Decide the reduction of `x` `[B, N, C]`.

        mask: `[B, N]` bool, True = real token. sizes: `[B, N]` tokens each input stands for
        (from the previous plan). keys: `[B, N, D]` or `[B, H, N, D]` (heads averaged)
        similarity features instead of x. attn: `[B, N]` CLS attention row (`cls_attention`).
        protected overrides the reducer's own setting for this call. keep=1 (r=0, stride=1)
        returns the identity plan at once: nothing moves, not even index-list protected tokens.
        """
        mask, sizes, padded = check_tokens(x, mask, sizes)
        if self.is_identity():
            return ReductionPlan.identity_plan(mask, sizes)
        batch = self.prepare(x, mask, sizes, padded, keys, attn,
                             self.protected if protected is None else protected)
        dest = self.select(batch)
        return build_plan(dest, batch.mask, batch.sizes, batch.protected, self.num_outputs(batch))

    def select(self, batch: TokenBatch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def is_identity(self) -> bool:
        return self.keep == 1.0 or self.r == 0

    def count(self, n: Tensor) -> Tensor:
        return kept_counts(n, self.keep, self.r)

    def static_count(self, n: int) -> int:
        """`count` for a plain Python n (every sample of an unpadded batch), without a sync."""
        return kept_count(n, self.keep, self.r)

    def num_outputs(self, batch: TokenBatch) -> int | None:
        """Largest output count when known without a device sync (None: let the plan count)."""
        return batch.num_protected + batch.max_count

    def prepare(self, x: Tensor, mask: Tensor, sizes: Tensor, padded: bool, keys: Tensor | None,
                attn: Tensor | None, protected: Protected) -> TokenBatch:
        """Everything `select` needs, from checked tokens (see `check_tokens`)."""
        B, N, _ = x.shape
        prot, num_protected = protected_mask(protected, B, N, x.device)
        if padded and bool((prot & ~mask).any()):
            raise ValueError("protected tokens must be real tokens, but some are padding")
        reducible = mask & ~prot
        if self.r is not None and self.r > 0 and self.r >= N - num_protected:
            raise ValueError(
                f"r must be smaller than the {N - num_protected} reducible tokens, got r={self.r}"
            )
        feats = keys if keys is not None else x
        if feats.ndim == 4:  # [B, H, N, D]: ToMe averages the heads' keys
            feats = feats.mean(dim=1)
        if feats.ndim != 3 or feats.shape[:2] != (B, N):
            raise ValueError(f"keys must be [{B}, {N}, D] or [{B}, H, {N}, D], "
                             f"got {tuple(feats.shape)}")
        feats = feats.to(torch.promote_types(feats.dtype, torch.float32))
        # Padding may hold anything (even NaN); zero it so it cannot leak into any score.
        if padded:
            feats = torch.where(mask[..., None], feats, feats.new_zeros(()))
        if attn is not None and attn.shape != (B, N):
            raise ValueError(f"attn must be the CLS row [{B}, {N}], got {tuple(attn.shape)}")
        n = reducible.sum(1)
        counts = self.count(n)
        max_count = int(counts.max()) if padded else self.static_count(N - num_protected)
        rank = (reducible.cumsum(1) - 1).masked_fill(~reducible, -1)
        return TokenBatch(feats, mask, sizes, prot, reducible, rank, n, counts, max_count,
                          num_protected, attn, padded)

    def options(self) -> dict[str, Any]:
        opts = {"keep": self.keep} if self.keep is not None else {"r": self.r}
        return {**opts, "protected": self.protected}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({inner})"


def check_tokens(x: Tensor, mask: Tensor | None, sizes: Tensor | None
                 ) -> tuple[Tensor, Tensor, bool]:
    """Check `x` `[B, N, C]`; return the mask (all True if None), float sizes (0 on padding)
    and whether a mask was given."""
    if x.ndim != 3:
        raise ValueError(f"reducer input must be [batch, tokens, channels], got {tuple(x.shape)}")
    B, N, _ = x.shape
    padded = mask is not None
    if mask is None:
        mask = torch.ones(B, N, dtype=torch.bool, device=x.device)
    elif mask.shape != (B, N) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool [{B}, {N}] tensor, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    if sizes is None:
        sizes = torch.ones(B, N, device=x.device)
    elif sizes.shape != (B, N):
        raise ValueError(f"sizes must be [{B}, {N}], got {tuple(sizes.shape)}")
    sizes = sizes.to(torch.promote_types(sizes.dtype, torch.float32)).masked_fill(~mask, 0)
    return mask, sizes, padded


def protected_mask(protected: Protected, B: int, N: int, device: torch.device
                   ) -> tuple[Tensor, int]:
    """`[B, N]` bool for a count of leading tokens or a list of indices, and how many."""
    out = torch.zeros(B, N, dtype=torch.bool, device=device)
    if isinstance(protected, numbers.Integral) and not isinstance(protected, bool):
        if not 0 <= protected <= N:
            raise ValueError(f"protected must be a count in [0, {N}], got {protected!r}")
        out[:, : int(protected)] = True
        return out, int(protected)
    ok = isinstance(protected, Sequence) and not isinstance(protected, str) and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < N
        for i in protected
    )
    if not ok or len(set(protected)) != len(protected):
        raise ValueError(
            f"protected must be a count of leading tokens or a list of distinct indices in "
            f"[0, {N}), got {protected!r}"
        )
    out[:, list(protected)] = True
    return out, len(protected)


def keep_dest(batch: TokenBatch, keep: Tensor) -> Tensor:
    """Destinations for pruning: protected and `keep` tokens stay, the rest are dropped."""
    index = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    return index.masked_fill(~(keep | batch.protected) | ~batch.mask, -1)


def merge_dest(batch: TokenBatch, target: Tensor) -> Tensor:
    """Destinations for merging: reducible tokens join `target` (an input index, -1 = drop)."""
    index = torch.arange(target.shape[1], device=target.device).expand_as(target)
    dest = torch.where(batch.reducible, target, -1)
    return torch.where(batch.protected, index, dest)
