"""`attach_vlm`: check a reduction request against the model, build the reducer and hook the
handle (`vtok.reduce.vlm`) into the model's parts; anything refused leaves the model as it
was."""

from __future__ import annotations

from typing import Any

from vtok.reduce.base import REDUCERS, create_reducer
from vtok.reduce.vlm import ATTACHED, VlmReductionHandle
from vtok.reduce.vlm_parts import (
    VlmParts,
    check_attention,
    query_key_projections,
    vision_blocks,
)

WHERE = ("vision", "projector", "llm")


def attach_vlm(parts: VlmParts, method: str, keep: float | None = None, r: int | None = None,
               where: str = "projector", layer: int | None = None,
               **options: Any) -> VlmReductionHandle:
    """Reduce a VLM's visual tokens with reducer `method` (see `vtok.reduce.vlm`)."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    if method not in REDUCERS.names():
        raise ValueError(f"unknown reduction method {method!r}; registered: "
                         f"{', '.join(sorted(REDUCERS.names()))}")
    check_attention(parts)
    if parts.outer in ATTACHED:
        raise ValueError("this model already has a token reduction attached; remove it (leave "
                         "its `with` block) before attaching another")
    if method == "fastv" and where != "llm":
        raise ValueError("fastv scores tokens by the language model's attention: use where='llm'")
    if where == "llm":
        K = 2 if layer is None else layer
        if isinstance(K, bool) or not isinstance(K, int) or not 0 <= K < parts.depth:
            raise ValueError(f"layer must be a decoder layer index in [0, {parts.depth}), "
                             f"got {layer!r}")
        if method == "fastv" and K == 0:
            raise ValueError("fastv needs layer >= 1: it scores with layer K-1's attention")
        if method == "cls_attn":
            raise ValueError("cls_attn needs the vision tower's CLS token: use where='vision' "
                             "or 'projector' (or fastv inside the language model)")
    else:
        if layer is not None:
            raise ValueError(f"layer= is for where='llm', not {where!r}")
        K = 0
        if parts.kind == "qwen2_vl" and where == "vision":
            raise ValueError("Qwen2-VL's patch merger packs 2x2 patches into one token: "
                             "reduce at where='projector' (its output) or 'llm'")
        if parts.kind == "llava" and not parts.features_packed:
            raise ValueError(f"{type(parts.outer).__name__} packs image features in tiles; "
                             "only where='llm' is supported for it")
    protected = 0
    if where != "llm" and parts.kind == "llava":
        strategy = getattr(parts.outer.config, "vision_feature_select_strategy", "default")
        protected = 1 if strategy == "full" else 0
    options.setdefault("protected", protected)
    amounts = {k: v for k, v in (("keep", keep), ("r", r)) if v is not None}
    reducer = create_reducer(method, **amounts, **options)
    handle = VlmReductionHandle(parts, reducer, where, K)
    if reducer.is_identity():
        return handle
    try:
        _register(handle, parts, method, where, K)
    except Exception:
        handle.remove()
        raise
    ATTACHED.add(parts.outer)
    return handle


def _register(handle: VlmReductionHandle, parts: VlmParts, method: str, where: str,
              K: int) -> None:
    handle.hook(parts.outer, handle.outer_pre)
    handle.hook(parts.language_model, handle.lm_pre)
    handle.hook(parts.language_model, handle.lm_post, "post")
    for i in range(K, parts.depth):
        handle.hook(parts.layers[i], handle.layer_pre(i))
    if method == "fastv":
        handle.hook(parts.layers[K - 1], handle.stash_pre)
    if parts.kind == "qwen2_vl":
        handle.hook(parts.vision_tower, handle.visual_pre)
    if where == "llm":
        return
    if parts.kind == "qwen2_vl":  # the merger's output is the first layer's input
        return
    if method == "cls_attn":
        _hook_cls_row(handle, parts)
    if where == "vision":
        handle.hook(parts.projector, handle.projector_pre)
    handle.hook(parts.projector, handle.projector_post, "post")


def _hook_cls_row(handle: VlmReductionHandle, parts: VlmParts) -> None:
    config = parts.outer.config
    layer = config.vision_feature_layer
    layer = layer[-1] if isinstance(layer, (list, tuple)) else int(layer)
    blocks = vision_blocks(parts.vision_tower)
    index = layer - 1 if layer > 0 else len(blocks) + layer
    if not 0 <= index < len(blocks):
        raise ValueError(f"cls_attn: vision_feature_layer {layer} has no attention block")
    q, k = query_key_projections(blocks[index])
    handle.hook(q, handle.qk_hook(0), "post")
    handle.hook(k, handle.qk_hook(1), "post")
