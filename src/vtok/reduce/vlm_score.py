"""One attention row of a decoder layer, recomputed without the full attention map.

FastV (Chen et al., 2024) ranks visual tokens by the attention they get in layer K-1. With
SDPA or FlashAttention the layer never returns its attention weights, and asking for them
(eager attention) costs the L x L map per head. The last prompt token's row is all FastV's
KV-cache variant uses, and it costs one query: its projection, the layer's keys (one linear
over the sequence) and one softmax over L.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding (Su et al. 2021, half-split layout) of `x` `[B, H, L, d]`."""
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + turned * sin[:, None]


@torch.no_grad()
def last_token_attention(layer: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor,
                         real: Tensor) -> Tensor:
    """Layer `layer`'s attention from the last position over all `L` keys: `[B, L]`.

    hidden: `[B, L, C]` the layer's input; cos/sin: its rotary tables `[B or 1, L, d]`;
    real: `[B, L]` bool, False on padding keys. Heads averaged; rows sum to 1. With left
    padding the last position is every sample's last real token.
    """
    attn = layer.self_attn
    h = layer.input_layernorm(hidden)
    B, L, _ = h.shape
    d = attn.head_dim
    q = attn.q_proj(h[:, -1:]).view(B, 1, -1, d)
    k = attn.k_proj(h).view(B, L, -1, d)
    if hasattr(attn, "q_norm"):  # Qwen3-style per-head norms come before the rotation
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = rotate(q.transpose(1, 2), cos[:, -1:], sin[:, -1:])
    k = rotate(k.transpose(1, 2), cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2)).squeeze(2) * attn.scaling
    logits = logits.masked_fill(~real[:, None], float("-inf"))
    return logits.softmax(-1).mean(1)
