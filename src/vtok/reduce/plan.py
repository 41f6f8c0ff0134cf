"""ReductionPlan: what a token reducer decided for one batch, and how to apply or undo it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from vtok.reduce.attention import proportional_attention_bias
from vtok.reduce.rows import add_rows, take_rows


@dataclass(frozen=True)
class ReductionPlan:
    """A merge/prune decision for a batch of `N` input tokens giving `M` output tokens.

    assign: `[B, N]` long, the output slot each input token goes into; -1 means dropped
        (pruned, or padding). Several inputs sharing one slot are merged.
    kept: `[B, M]` long, the input index of the token that represents each output (the kept
        token, or the cluster centre / merge target); -1 on padded output slots.
    mask: `[B, M]` bool, True for real outputs. Real outputs come first in every sample:
        protected tokens first, then the others in the order of their representative.
    sizes: `[B, M]` float, how many original tokens each output stands for (0 on padding).
    input_sizes: `[B, N]` float, the sizes the plan was built with (0 on padding); they weight
        the merge in `apply`.
    input_mask: `[B, N]` bool, True for real input tokens.
    identity: True for the keep-everything plan; `apply` and `unmerge` then return their input
        unchanged (the same tensor), so a reducer with keep=1 or r=0 changes nothing, bit for bit.
    """

    assign: Tensor
    kept: Tensor
    mask: Tensor
    sizes: Tensor
    input_sizes: Tensor
    input_mask: Tensor
    identity: bool = False

    @property
    def num_inputs(self) -> int:
        return self.assign.shape[1]

    @property
    def num_outputs(self) -> int:
        return self.kept.shape[1]

    @property
    def num_kept(self) -> Tensor:
        """`[B]` real outputs per sample (protected tokens included)."""
        return self.mask.sum(1)

    def apply(self, t: Tensor, sizes: Tensor | None = None, mode: str | None = None) -> Tensor:
        """Reduce any per-token tensor `[B, N, ...]` to `[B, M, ...]`; padded outputs are zero.

        mode "mean" (default for floating tensors): size-weighted average of the merged inputs,
        weighted by `sizes` (default: the plan's `input_sizes`); an output made of one input is
        that input exactly. mode "take" (default for integer/bool tensors, e.g. index
        bookkeeping): the value of each output's representative token. mode "sum": the
        unweighted sum, e.g. to count or accumulate.
        """
        self._check_tokens(t, self.num_inputs, "apply")
        if self.identity:
            return t
        if mode is None:
            mode = "mean" if t.is_floating_point() or t.is_complex() else "take"
        if mode not in ("mean", "take", "sum"):
            raise ValueError(f"mode must be one of 'mean', 'take', 'sum', got {mode!r}")
        flat = t.reshape(*t.shape[:2], -1)
        taken = take_rows(flat, self.kept)
        if mode == "take":
            # padded outputs read row 0 of their sample
            out = taken if self.full else torch.where(self.mask[..., None], taken,
                                                      taken.new_zeros(()))
        elif mode == "sum":  # no input goes to a padded output: those sums are zero
            out = self._merge(flat, torch.ones_like(self.input_sizes), taken, average=False)
        else:
            weights = self.input_sizes if sizes is None else sizes
            out = self._merge(flat, weights, taken, average=True)
        return out.reshape(t.shape[0], self.num_outputs, *t.shape[2:])

    def unmerge(self, y: Tensor, fill: float = 0.0) -> Tensor:
        """Copy each output `[B, M, ...]` back to every input token that went into it.

        Gives `[B, N, ...]`; dropped and padded input tokens get `fill`.
        """
        self._check_tokens(y, self.num_outputs, "unmerge")
        if self.identity:
            return y
        flat = y.reshape(*y.shape[:2], -1)
        out = take_rows(flat, self.assign)
        if not self.complete:
            out = torch.where((self.assign >= 0)[..., None], out, flat.new_full((), fill))
        return out.reshape(y.shape[0], self.num_inputs, *y.shape[2:])

    @cached_property
    def full(self) -> bool:
        """True when no output is padding (every sample has all M outputs)."""
        return bool(self.mask.all())

    @cached_property
    def complete(self) -> bool:
        """True when every input token goes to an output (nothing dropped, no padding)."""
        return bool((self.assign >= 0).all())

    def attention_bias(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """`[B, 1, 1, M]` additive bias log(size) (-inf on padding) for proportional attention."""
        return proportional_attention_bias(self.sizes, self.mask, dtype=dtype)

    def then(self, other: ReductionPlan) -> ReductionPlan:
        """The plan doing `self` and then `other` (built on self's outputs), as one plan."""
        if other.num_inputs != self.num_outputs:
            raise ValueError(
                f"cannot compose: the second plan takes {other.num_inputs} tokens but the first "
                f"gives {self.num_outputs}"
            )
        if other.identity:
            return self
        if self.identity:
            return ReductionPlan(
                other.assign.masked_fill(~self.input_mask, -1), other.kept, other.mask,
                other.sizes, self.input_sizes, self.input_mask,
            )
        assign = other.assign.gather(1, self.assign.clamp(min=0)).masked_fill(self.assign < 0, -1)
        kept = self.kept.gather(1, other.kept.clamp(min=0)).masked_fill(other.kept < 0, -1)
        return ReductionPlan(assign, kept, other.mask, other.sizes, self.input_sizes,
                             self.input_mask)

    @staticmethod
    def identity_plan(mask: Tensor, sizes: Tensor) -> ReductionPlan:
        """The plan that keeps every token where it is (padding stays padding)."""
        index = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        index = index.masked_fill(~mask, -1)
        return ReductionPlan(index, index, mask, sizes, sizes, mask, identity=True)

    def _merge(self, flat: Tensor, weights: Tensor, taken: Tensor, average: bool) -> Tensor:
        # Accumulate in at least fp32 so merging in bf16 still conserves the weighted sum.
        acc = torch.promote_types(flat.dtype, torch.float32)
        B, M = flat.shape[0], self.num_outputs
        dropped = self.assign < 0
        w = weights.to(acc).masked_fill(dropped, 0)
        # Dropped and padded inputs (which may hold anything, NaN too) are summed into one
        # spare slot per sample, M, which is cut off.
        slot = self.assign.masked_fill(dropped, M)
        total = add_rows(flat.to(acc) * w[..., None], slot, M + 1)[:, :M]
        if not average:
            return total.to(flat.dtype)
        norm = w.new_zeros(B, M + 1).scatter_add_(1, slot, w)[:, :M]
        mean = total / norm.clamp(min=torch.finfo(acc).tiny)[..., None]
        # An output made of one input is that input exactly, not x * w / w.
        members = torch.zeros(B, M + 1, dtype=torch.long, device=flat.device)
        members.scatter_add_(1, slot, (~dropped).long())
        return torch.where((members[:, :M] == 1)[..., None], taken, mean.to(flat.dtype))

    def _check_tokens(self, t: Tensor, n: int, what: str) -> None:
        if t.ndim < 2 or t.shape[0] != self.assign.shape[0] or t.shape[1] != n:
            raise ValueError(
                f"{what} expects a [batch={self.assign.shape[0]}, tokens={n}, ...] tensor, "
                f"got {tuple(t.shape)}"
            )


def build_plan(
    dest: Tensor,
    mask: Tensor,
    sizes: Tensor,
    protected: Tensor,
    num_outputs: int | None = None,
) -> ReductionPlan:
    """Make a plan from destinations: `dest[b, n]` is the input index of the token that token n
    joins (itself when kept, -1 when dropped). Tokens with `dest[n] == n` become outputs:
    protected ones first, then the rest in index order. `num_outputs` skips a device sync when
    the caller already knows the largest output count.
    """
    B, N = dest.shape
    index = torch.arange(N, device=dest.device).expand(B, N)
    dest = dest.masked_fill(~mask, -1)
    is_rep = dest == index
    # One sort key: protected representatives, then other representatives, then the rest.
    key = torch.where(is_rep, torch.where(protected, index, index + N), index + 2 * N)
    order = key.argsort(dim=1)
    slot_of = torch.empty_like(order).scatter_(1, order, index.contiguous())
    count = is_rep.sum(1)
    m = int(count.max()) if num_outputs is None else num_outputs
    m = min(m, N)
    kept = order[:, :m]
    out_mask = torch.arange(m, device=dest.device)[None, :] < count[:, None]
    kept = kept.masked_fill(~out_mask, -1)
    assign = slot_of.gather(1, dest.clamp(min=0)).masked_fill(dest < 0, -1)
    in_sizes = sizes.masked_fill(~mask, 0)
    out_sizes = in_sizes.new_zeros(B, m).scatter_add_(
        1, assign.clamp(min=0), in_sizes.masked_fill(assign < 0, 0)
    )
    return ReductionPlan(assign, kept, out_mask, out_sizes, in_sizes, mask)
