"""The parts of a Hugging Face vision-language model that token reduction hooks into.

Found by structure, not by class name, so related models work where their parts match:

- LLaVA (`LlavaForConditionalGeneration` / `LlavaModel`): `vision_tower`,
  `multi_modal_projector`, `language_model`; every image gives the same number of features,
  one per `<image>` token. The vision and projector sides need exactly this packing;
  LLaVA-NeXT/OneVision (tiles, newline tokens) get the language-model side only.
- Qwen2-VL / Qwen2.5-VL: `visual` (whose `merger` is the projector) and `language_model`;
  image and video features come packed, split by `image_grid_thw` / `video_grid_thw`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vtok.reduce.seq_prune import SUPPORTED_ATTENTION


@dataclass
class VlmParts:
    kind: str  # "llava" or "qwen2_vl"
    outer: nn.Module  # the model whose forward gets input_ids and pixel values
    language_model: nn.Module
    layers: nn.ModuleList
    visual_token_ids: dict[str, int]  # "image" / "video" -> placeholder token id
    vision_tower: nn.Module | None
    projector: nn.Module | None
    features_packed: bool  # LLaVA's one-feature-per-token packing (vision/projector sides)
    merge_size: int = 1  # Qwen's spatial merge (2x2 patches per token)

    @property
    def attention(self) -> str:
        config = getattr(self.language_model, "config", None)
        return getattr(config, "_attn_implementation", None) or "eager"

    @property
    def depth(self) -> int:
        return len(self.layers)


def _inner(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "language_model"):
        return inner
    return model


def find_vlm_parts(model: nn.Module) -> VlmParts | None:
    """The parts of a supported VLM, or None when `model` is not one (e.g. a timm ViT)."""
    outer = _inner(model)
    lm = getattr(outer, "language_model", None)
    config = getattr(outer, "config", None)
    if lm is None or config is None:
        return None
    layers = getattr(lm, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: its language model "
                        f"{type(lm).__name__} has no `layers` list of decoder layers")
    ids = {name: int(getattr(config, f"{name}_token_id"))
           for name in ("image", "video") if getattr(config, f"{name}_token_id", None) is not None}
    if not ids:
        raise ValueError(f"{type(model).__name__}: its config names no image_token_id")
    visual = getattr(outer, "visual", None)
    if visual is not None and hasattr(visual, "merger"):
        merge = int(getattr(visual, "spatial_merge_size", 2))
        return VlmParts("qwen2_vl", outer, lm, layers, ids, visual, visual.merger, False, merge)
    tower = getattr(outer, "vision_tower", None)
    projector = getattr(outer, "multi_modal_projector", None)
    if tower is None or projector is None:
        raise ValueError(f"{type(model).__name__} is not a supported vision-language model: "
                        "expected LLaVA's vision_tower + multi_modal_projector or Qwen2-VL's "
                        "visual + merger")
    packed = type(outer).__name__ == "LlavaModel"
    return VlmParts("llava", outer, lm, layers, ids, tower, projector, packed)


def check_attention(parts: VlmParts) -> None:
    if parts.attention not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"token pruning inside the language model runs under attn_implementation "
            f"{' or '.join(map(repr, SUPPORTED_ATTENTION))}; this model uses "
            f"{parts.attention!r}. Load it with attn_implementation='sdpa'.")


def vision_blocks(tower: nn.Module) -> nn.ModuleList:
    """The vision tower's list of transformer blocks (CLIP/SigLIP `layers`, ViT `layer`)."""
    depth = getattr(getattr(tower, "config", None), "num_hidden_layers", None)
    for module in tower.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise ValueError(f"{type(tower).__name__}: no list of {depth} transformer blocks found")


def query_key_projections(block: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """A vision block's query and key projections (`q_proj`/`k_proj` or `query`/`key`)."""
    found: dict[str, nn.Linear] = {}
    for name, module in block.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and leaf in ("q_proj", "query", "k_proj", "key"):
            found["q" if leaf in ("q_proj", "query") else "k"] = module
    if len(found) != 2:
        raise ValueError(f"{type(block).__name__}: separate query and key projections "
                        "(q_proj/k_proj or query/key) are needed for the CLS attention row")
    return found["q"], found["k"]
