"""Dropping tokens from a decoder's sequence between two of its layers, KV cache included.

A language model's layers all receive the same keyword arguments from the model's forward:
the hidden states, one attention mask, the rotary `position_embeddings` (cos, sin) and the
position ids. To drop tokens before layer K, a forward pre-hook on every layer from K on swaps
those for their pruned versions; the layers themselves run unchanged, so their KV cache holds
only the kept tokens from layer K on, while layers before K keep everything.

The pruned layout (`PrunedLayout`) keeps each sample's kept tokens in their original order,
left-padded to the longest sample, and every kept token keeps its original rotary position
(FastV, Chen et al. 2024, does the same). Original padding is kept as padding, so keeping
everything changes nothing. Padding slots attend only to themselves, so no softmax row is
empty (an empty row gives NaN, and NaN values poison every later layer through the keys).

Masks are built for the attention implementation the model runs: boolean (True = attend)
for "sdpa", additive float (0 or the dtype's minimum) for "eager".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SUPPORTED_ATTENTION = ("sdpa", "eager")


@dataclass
class PrunedLayout:
    """Where the kept tokens of a prefill of length L went.

    index: `[B, M]` original position of each slot (0 on padding slots).
    valid: `[B, M]` bool, True on real kept tokens; padding comes first in every row.
    length: L, the prefill's original length. new_tokens: tokens appended since (decoding).
    """

    index: Tensor
    valid: Tensor
    length: int
    new_tokens: int = 0

    @property
    def size(self) -> int:
        return self.index.shape[1]


def pruned_layout(keep: Tensor, real: Tensor) -> PrunedLayout:
    """Layout of the tokens with `keep` `[B, L]` True; `real` `[B, L]` marks non-padding.

    Original padding tokens stay in the layout (as padding) so that keeping every token is the
    identity; dropped real tokens leave; rows are left-padded to the longest.
    """
    B, L = keep.shape
    stay = keep | ~real
    counts = stay.sum(1)
    M = int(counts.max()) if B else 0
    slot = (M - counts)[:, None] + stay.cumsum(1) - 1
    index = torch.zeros(B, M, dtype=torch.long, device=keep.device)
    valid = torch.zeros(B, M, dtype=torch.bool, device=keep.device)
    rows = torch.arange(B, device=keep.device)[:, None].expand(B, L)
    positions = torch.arange(L, device=keep.device).expand(B, L)
    index[rows[stay], slot[stay]] = positions[stay]
    valid[rows[stay], slot[stay]] = (real & keep)[stay]
    return PrunedLayout(index, valid, L)


def gather_tokens(t: Tensor, index: Tensor) -> Tensor:
    """`t` `[B or 1, L, ...]` with its sequence dimension taken at `index` `[B, M]`.

    A batch of one broadcast to B (rotary tables are often `[1, L, d]`) is expanded first.
    """
    B, M = index.shape
    if t.shape[0] == 1 and B > 1:
        t = t.expand(B, *t.shape[1:])
    idx = index.view(B, M, *([1] * (t.ndim - 2))).expand(B, M, *t.shape[2:])
    return torch.gather(t, 1, idx)


def layout_mask(key_valid: Tensor, query_count: int, impl: str, dtype: torch.dtype) -> Tensor:
    """Causal mask `[B, 1, Q, K]` for the last Q of K slots with key validity `[B, K]`.

    Query q (slot K - Q + q) attends to valid slots up to itself; a query on an invalid slot
    attends to itself alone.
    """
    B, K = key_valid.shape
    device = key_valid.device
    q_slot = torch.arange(K - query_count, K, device=device)
    k_slot = torch.arange(K, device=device)
    causal = k_slot[None, :] <= q_slot[:, None]
    allowed = causal[None] & key_valid[:, None, :]
    own = (k_slot[None, :] == q_slot[:, None])[None] & ~key_valid[:, K - query_count:, None]
    allowed = (allowed | own)[:, None]
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        zero = torch.zeros((), dtype=dtype, device=device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    raise ValueError(f"token pruning inside the language model supports attention "
                     f"implementations {SUPPORTED_ATTENTION}, not {impl!r}")


def decode_key_valid(layout: PrunedLayout, mask_2d: Tensor | None, query_count: int) -> Tensor:
    """Validity `[B, M + T]` of the pruned cache plus the T tokens appended since the prefill.

    mask_2d: the caller's 2D attention mask over the unpruned sequence (generate's, length
    L + T), or None when nothing is padding.
    """
    B = layout.valid.shape[0]
    total_new = layout.new_tokens + query_count
    if mask_2d is None:
        new = torch.ones(B, total_new, dtype=torch.bool, device=layout.valid.device)
    else:
        if mask_2d.shape[-1] != layout.length + total_new:
            raise ValueError(
                f"the attention mask covers {mask_2d.shape[-1]} tokens, but the pruned prefill "
                f"had {layout.length} and {total_new} came after it; pass the whole mask "
                f"(as generate does)")
        new = mask_2d[:, layout.length:].to(torch.bool)
    return torch.cat([layout.valid, new], dim=1)
