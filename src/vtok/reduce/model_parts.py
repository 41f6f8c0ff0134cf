"""Find the pieces of a vision transformer that token reduction hooks into.

Supported hosts: timm's `VisionTransformer` and its subclasses (DeiT, distilled DeiT, ViTs
with register tokens), vtok's TiTok tokenizers (their encoder), and a bare `nn.ModuleList` /
`nn.Sequential` of vtok `TransformerBlock`s.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TransformerParts:
    """What `attach` needs from a host model.

    blocks: the transformer blocks in call order; tokens are reduced on the way into them.
    attentions: each block's attention module; it has a fused `qkv` Linear whose output is
        `[B, N, 3 * heads * head_dim]` (q, k, v in that order); see `num_heads`.
    bias_kwarg: the block `forward` keyword that takes an additive SDPA attention mask.
    leading / trailing: how many tokens at the start (CLS, distillation, registers) and at the
        end (TiTok's latent tokens) are never merged or pruned by default.
    queries: which tokens' attention rows rank the others for `cls_attn`: "cls" (token 0),
        "trailing" (the mean row of the trailing tokens) or "none".
    """

    blocks: tuple[nn.Module, ...]
    attentions: tuple[nn.Module, ...]
    bias_kwarg: str
    leading: int = 0
    trailing: int = 0
    queries: str = "none"

    @property
    def depth(self) -> int:
        return len(self.blocks)


def find_parts(model: nn.Module) -> TransformerParts:
    """The parts of `model`, or a ValueError naming what is unsupported."""
    vit = _timm_vit_class()
    if vit is not None and isinstance(model, vit):
        return _timm_parts(model)
    from vtok.models.titok import TiTokTokenizer
    from vtok.nn.transformer import TransformerBlock

    if isinstance(model, TiTokTokenizer):
        blocks = tuple(model.encoder)
        return TransformerParts(blocks, tuple(b.attn for b in blocks), "bias",
                                trailing=model.config.num_latent_tokens,
                                queries="trailing")
    if isinstance(model, (nn.ModuleList, nn.Sequential)) and len(model) and all(
        isinstance(b, TransformerBlock) for b in model
    ):
        blocks = tuple(model)
        return TransformerParts(blocks, tuple(b.attn for b in blocks), "bias")
    raise ValueError(
        f"token reduction cannot attach to {type(model).__name__}: it supports timm "
        f"VisionTransformer models and their subclasses (ViT, DeiT), vtok TiTok tokenizers "
        f"and lists of vtok TransformerBlocks"
    )


def num_heads(attn: nn.Module) -> int:
    """Heads of a timm (`num_heads`) or vtok (`heads`) attention module."""
    heads = getattr(attn, "num_heads", None)
    return int(heads if heads is not None else attn.heads)


def _timm_vit_class() -> type | None:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        return None
    return VisionTransformer


def _timm_parts(model: nn.Module) -> TransformerParts:
    if getattr(model, "grad_checkpointing", False):
        # checkpointing re-runs blocks in backward, which would replay the reduction hooks
        raise ValueError("token reduction cannot attach to a model with gradient "
                         "checkpointing on; call model.set_grad_checkpointing(False) first")
    blocks = tuple(model.blocks)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no transformer blocks")
    attentions = []
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        takes_mask = "attn_mask" in inspect.signature(block.forward).parameters
        if not (takes_mask and isinstance(getattr(attn, "qkv", None), nn.Linear)
                and isinstance(getattr(attn, "num_heads", None), int)):
            raise ValueError(
                f"block {i} of {type(model).__name__} ({type(block).__name__}) is not supported: "
                f"token reduction needs a block whose forward takes attn_mask and whose attn has "
                f"a fused qkv Linear and num_heads"
            )
        attentions.append(attn)
    has_cls = getattr(model, "cls_token", None) is not None
    return TransformerParts(blocks, tuple(attentions), "attn_mask",
                            leading=int(model.num_prefix_tokens),
                            queries="cls" if has_cls else "none")
