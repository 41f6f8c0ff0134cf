"""CLS-attention top-k plus contextual merging (VisionZip, Yang et al., 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from vtok.reduce.attention import cls_attention
from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, merge_dest
from vtok.reduce.select import evenly_spaced, normalize, top_k_mask


@REDUCERS.register("cls_attn")
class ClsAttentionMerge(Reducer):
    """VisionZip-style reduction ("VisionZip: Longer is Better but Not Necessary", 2024).

    Of the k tokens kept, `floor(contextual * k + 0.5)` are contextual and the rest dominant. The
    dominant tokens are those the CLS token attends to most (`attn`, the CLS row over all N
    tokens, e.g. from `cls_attention`). Among the remaining tokens, evenly spaced ones
    (in token order) become contextual targets and every other remaining token is merged
    into its most cosine-similar target (on `keys` if given), size-weighted. Without `attn`
    the row is recomputed single-head from the features (keys if given), with the first
    protected token as the query, so at least one token must be protected then.
    """

    name = "cls_attn"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0, contextual: float = 0.15) -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        if isinstance(contextual, bool) or not isinstance(contextual, (int, float)) or not (
            0 <= contextual <= 1
        ):
            raise ValueError(f"contextual must be a fraction in [0, 1], got {contextual!r}")
        self.contextual = float(contextual)

    def select(self, batch: TokenBatch) -> Tensor:
        attn = batch.attn if batch.attn is not None else self._attention(batch)
        counts = batch.counts
        num_ctx = torch.floor(counts.double() * self.contextual + 0.5).long().minimum(counts)
        dominant = top_k_mask(attn, batch.reducible, counts - num_ctx)
        rest = batch.reducible & ~dominant
        rest_rank = (rest.cumsum(1) - 1).masked_fill(~rest, -1)
        targets = evenly_spaced(rest_rank, rest.sum(1), num_ctx)
        g = normalize(batch.feats)
        sim = (g @ g.transpose(1, 2)).masked_fill(~targets[:, None, :], float("-inf"))
        N = attn.shape[1]
        index = torch.arange(N, device=attn.device)[None]
        target = sim.argmax(dim=2)
        target = torch.where(targets.any(dim=1, keepdim=True), target, -1)
        target = torch.where(dominant | targets, index, target.masked_fill(~rest, -1))
        return merge_dest(batch, target)

    @staticmethod
    def _attention(batch: TokenBatch) -> Tensor:
        if batch.num_protected == 0:
            raise ValueError(
                "cls_attn needs attn= (the CLS attention row, see cls_attention) or at least one "
                "protected token to use as the query"
            )
        first = int(batch.protected[0].nonzero()[0])
        f = batch.feats
        return cls_attention(f[:, first], f, batch.mask)

    def options(self) -> dict:
        return {**super().options(), "contextual": self.contextual}



@REDUCERS.register("fastv")
class AttentionTopK(ClsAttentionMerge):
    """Keep the tokens one query attends to most; drop the rest unmerged (FastV's rule, "An
    Image is Worth 1/2 Tokens After Layer 2", Chen et al., 2024).

    Inside a language model (`vtok.reduce.attach(..., where="llm")`) `attn` is the last prompt
    token's attention row; elsewhere it is `cls_attn` with no contextual tokens.
    """

    name = "fastv"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0) -> None:
        super().__init__(keep=keep, r=r, protected=protected, contextual=0.0)

    def options(self) -> dict:
        return Reducer.options(self)
