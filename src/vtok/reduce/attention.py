"""Attention helpers for reduced tokens: proportional-attention bias and one CLS attention row."""

from __future__ import annotations

import torch
from torch import Tensor


def proportional_attention_bias(
    sizes: Tensor, mask: Tensor | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Additive key bias log(size), -inf on padded keys, shaped `[B, 1, 1, M]` for SDPA.

    Proportional attention (ToMe, Bolya et al. 2023): a merged key standing for s tokens gets
    log(s) added to its logit, so softmax weighs it as s duplicate keys would be weighed. Pass
    it as `attn_mask` to `torch.nn.functional.scaled_dot_product_attention`; it broadcasts over
    heads and queries.
    """
    if mask is None:
        mask = sizes > 0
    # log in the wider of the sizes' and the requested precision (then cast once)
    wide = torch.promote_types(torch.promote_types(sizes.dtype, torch.float32), dtype)
    bias = sizes.to(wide).clamp(min=torch.finfo(wide).tiny).log()
    bias = bias.masked_fill(~mask, float("-inf"))
    return bias.to(dtype)[:, None, None, :]


def cls_attention(
    q_cls: Tensor,
    k: Tensor,
    mask: Tensor | None = None,
    sizes: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Attention of the CLS query over all keys, averaged over heads: `[B, N]`, rows sum to 1.

    Computes just this one row, so the block's own attention can stay a fused SDPA call that
    never materialises the full map (VisionZip, Yang et al. 2024, ranks tokens by this row).
    q_cls: `[B, H, D]` or `[B, D]`; k: `[B, H, N, D]` or `[B, N, D]`; mask: `[B, N]` (True =
    real key); sizes: `[B, N]` adds the proportional-attention bias log(size); scale defaults
    to D**-0.5 as in SDPA.
    """
    if k.ndim == 3:
        k = k[:, None]
    if q_cls.ndim == 2:
        q_cls = q_cls[:, None]
    if q_cls.ndim != 3 or k.ndim != 4 or q_cls.shape[:2] != k.shape[:2] or (
        q_cls.shape[-1] != k.shape[-1]
    ):
        raise ValueError(
            f"cls_attention needs q_cls [B, H, D] and k [B, H, N, D], got {tuple(q_cls.shape)} "
            f"and {tuple(k.shape)}"
        )
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    # The softmax runs in fp32 whatever the model's precision: it ranks tokens.
    logits = torch.einsum("bhd,bhnd->bhn", q_cls.float(), k.float()) * scale
    if sizes is not None:
        logits = logits + sizes.float().clamp(min=torch.finfo(torch.float32).tiny).log()[:, None]
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)
