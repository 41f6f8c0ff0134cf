"""Visual-token reduction inside Hugging Face vision-language models, by hooks alone.

`attach(model, method, keep=..., where=..., layer=...)` on a LLaVA or Qwen2-VL model (see
`vlm_parts`; `vlm_attach` checks the request and hooks this module's handle in, `vlm_items`
counts the images and videos) reduces each image's (or video's) tokens with any registered
reducer:

- where="vision" (LLaVA): on the vision tower's selected features, before the projector,
  so the projector runs on fewer tokens (VisionZip's place: `cls_attn` gets the CLS row and
  keys of the feature layer, recomputed from hooked query/key projections, never a
  materialized attention map);
- where="projector": on the projector's output (Qwen: the patch merger's), in the language
  model's embedding space (DivPrune's place);
- where="llm": inside the language model, on the hidden states entering decoder layer
  `layer` (FastV, Chen et al. 2024: `fastv` keeps the visual tokens that the last prompt
  token attends to most in layer K-1, one attention row recomputed from that layer's query
  and keys, so SDPA never has to return attention weights).

Vision- and projector-side reductions put each image's reduced features back into the slots
of their representative tokens; the dropped slots are then removed from the sequence before
the language model's first layer (`seq_prune`), so every layer and the KV cache hold only the
kept tokens. Kept tokens keep their original positions (M-RoPE's 3D positions included),
batches may be left-padded and hold different numbers of images, and `generate` works with
and without a KV cache. Reduction is per image: each keeps `keep` of its own tokens.
keep=1 changes nothing, bit for bit. The handle (`with attach(...):` or `.remove()`) restores
the model exactly. Logits and hidden states come back for the kept sequence only.
"""

from __future__ import annotations

import inspect
import math
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vtok.reduce.attention import cls_attention
from vtok.reduce.base import Reducer
from vtok.reduce.plan import ReductionPlan
from vtok.reduce.seq_prune import (
    PrunedLayout,
    decode_key_valid,
    gather_tokens,
    layout_mask,
    pruned_layout,
)
from vtok.reduce.vlm_items import equal_groups, item_counts, scatter_back
from vtok.reduce.vlm_parts import VlmParts
from vtok.reduce.vlm_score import last_token_attention

# models with a live attach: a second one is refused (hooks would interleave)
ATTACHED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@dataclass
class _Call:
    """What one forward of the model has gathered so far."""

    visual: Tensor | None = None  # [B, L] bool: placeholder positions of any kind
    kinds: dict[str, Tensor] = field(default_factory=dict)  # kind -> [B, L] bool
    counts: dict[str, list[int]] = field(default_factory=dict)  # kind -> tokens per item
    grids: dict[str, list[tuple[int, int, int] | None]] = field(default_factory=dict)  # t, h, w
    plan: ReductionPlan | None = None  # where="vision": the projector input's reduction
    feature_keep: dict[str, list[Tensor]] = field(default_factory=dict)  # kind -> keeps


class VlmReductionHandle:
    """Live reduction of a VLM's visual tokens; `remove()` (or leaving `with`) undoes it.

    `last_counts` gives, after each prefill, the visual tokens before and after reduction
    (summed over the batch).
    """

    def __init__(self, parts: VlmParts, reducer: Reducer, where: str, layer: int) -> None:
        self.parts, self.reducer, self.where, self.layer = parts, reducer, where, layer
        self.handles: list[Any] = []
        self.call = _Call()
        self.layout: PrunedLayout | None = None
        self.layer_kwargs: dict[str, Any] | None = None
        self.mask_2d: Tensor | None = None
        self.decoding = False
        self.query_count = 0
        self.stash: tuple[Tensor, tuple[Tensor, Tensor]] | None = None
        self.last_counts: tuple[int, int] | None = None
        self.pending: dict[str, list[Tensor]] = {}  # vision side: keeps not yet consumed
        self.pending_grids: list[Tensor] = []
        self.encoded_keeps: tuple[Any, dict[str, list[Tensor]]] = (None, {})
        self.encoded_grids: dict[str, Tensor | None] = {}
        self.cls_qk: list[Tensor | None] = [None, None]
        self.warned_no_images = False
        self.on_hidden = where == "llm" or parts.kind == "qwen2_vl"
        protected = reducer.protected
        self.reducer_protected = protected if isinstance(protected, int) else len(protected)

    # -- lifecycle -----------------------------------------------------------------------
    def hook(self, module: nn.Module, fn: Callable, kind: str = "pre") -> None:
        if kind == "pre":
            self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        else:
            self.handles.append(module.register_forward_hook(fn, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        ATTACHED.discard(self.parts.outer)
        self.layout = self.layer_kwargs = None

    def __enter__(self) -> VlmReductionHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- the model's forward ------------------------------------------------------------
    def outer_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        self._decode_positions(module, kwargs)
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        encoded = kwargs.get("mm_encoder_outputs") or {}
        pixels = {k: kwargs.get(key) for k, key in (("image", "pixel_values"),
                                                      ("video", "pixel_values_videos"))}
        self.call = _Call()
        if any(v is not None for v in pixels.values()):
            self.pending.clear()  # this forward encodes its own images
        elif encoded:  # encoded by generate beforehand: the decisions made then, every step
            if self.pending:
                self.encoded_keeps = (encoded.get("image"), dict(self.pending))
                self.pending.clear()
            if self.encoded_keeps[0] is encoded.get("image"):
                self.call.feature_keep = dict(self.encoded_keeps[1])
        if input_ids is None:
            if encoded or any(v is not None for v in pixels.values()):
                raise ValueError("visual-token reduction needs input_ids (to find the image "
                                 "placeholders); got inputs_embeds")
            return args, kwargs
        ids = self.parts.visual_token_ids
        self.call.kinds = {k: input_ids == v for k, v in ids.items()}
        self.call.visual = torch.stack(list(self.call.kinds.values())).any(0)
        past = kwargs.get("past_key_values")
        prefill = past is None or past.get_seq_length() == 0
        if prefill and not bool(self.call.visual.any()) and not self.warned_no_images:
            self.warned_no_images = True  # once per attach: text-only turns are legitimate
            warnings.warn(f"{self.reducer.name} reduction is attached but this prompt holds no "
                          f"image or video tokens (ids {sorted(ids.values())}): it runs "
                          f"unreduced", stacklevel=2)
        for kind in self.call.kinds:
            counts = item_counts(self.parts, self.call.kinds[kind], encoded.get(kind),
                                 pixels.get(kind), kwargs.get(f"{kind}_grid_thw"),
                                 kwargs.get("image_sizes") if kind == "image" else None)
            if counts is not None:
                self.call.counts[kind] = counts
        self._item_grids(kwargs)
        return args, kwargs

    def _decode_positions(self, module: nn.Module, kwargs: dict) -> None:
        """Positions for a decoding step that brings none (a hand-written loop; generate
        passes them): the model would count the pruned cache, so count the original tokens.
        Qwen adds its M-RoPE offset (`rope_deltas`) to the text position."""
        past, layout = kwargs.get("past_key_values"), self.layout
        if (layout is None or past is None or kwargs.get("position_ids") is not None
                or kwargs.get("attention_mask") is not None
                or past.get_seq_length(self.layer) == 0):
            return
        ids = kwargs.get("input_ids")
        if ids is None:
            return
        start = layout.length + layout.new_tokens
        position = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
        position = position.expand(ids.shape[0], -1)
        if self.parts.kind == "qwen2_vl":
            deltas = getattr(module, "rope_deltas", None)
            position = position[None].expand(3, -1, -1)
            position = position + (0 if deltas is None else deltas.to(ids.device))
        kwargs["position_ids"] = position

    def _item_grids(self, kwargs: dict) -> None:
        """Token grids (rows, columns) per item, for grid-aware reducers such as pool2d.

        Qwen's grids come with the forward's arguments, or, when generate encoded the images
        beforehand, from the vision calls just before (images first, then videos).
        """
        call, m = self.call, self.parts.merge_size
        recent = self.pending_grids[len(self.pending_grids) - len(call.counts):]
        self.pending_grids.clear()
        for kind, counts in call.counts.items():
            grid = kwargs.get(f"{kind}_grid_thw")
            if grid is None and self.parts.kind == "qwen2_vl":
                # generate without a cache passes the same encoded features at every step
                grid = recent.pop(0) if recent else self.encoded_grids.get(kind)
                self.encoded_grids[kind] = grid
            if grid is not None and self.parts.kind == "qwen2_vl":
                grids = [(t, h // m, w // m) for t, h, w in grid.tolist()]
                if [t * h * w for t, h, w in grids] == counts:
                    call.grids[kind] = grids
                    continue
            grids = []
            for n in counts:
                side = math.isqrt(max(n - self.reducer_protected, 0))
                square = side * side == n - self.reducer_protected
                grids.append((1, side, side) if square else None)
            call.grids[kind] = grids

    def visual_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Qwen: remember each vision call's grid_thw (images come before videos)."""
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid is not None:
            self.pending_grids.append(grid)

    def lm_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        past = kwargs.get("past_key_values")
        if past is not None and getattr(past, "is_compileable", False):
            raise ValueError("visual-token pruning needs a DynamicCache (the default); a "
                             "static/compileable cache has a fixed length per layer")
        embeds = kwargs.get("inputs_embeds")
        q = embeds.shape[1] if embeds is not None else kwargs["input_ids"].shape[1]
        self.mask_2d = kwargs.get("attention_mask")
        if self.mask_2d is not None and self.mask_2d.ndim != 2:
            raise ValueError("visual-token pruning needs a 2D attention mask (or none)")
        cached = 0 if past is None else int(past.get_seq_length(self.layer))
        self.decoding = self.layout is not None and cached > 0
        self.query_count = q
        self.layer_kwargs = None
        if not self.decoding:
            self.layout = None
            return args, kwargs
        if self.call.visual is not None and bool(self.call.visual.any()):
            raise ValueError("new image tokens after a pruned prefill are not supported; start "
                             "a new cache")
        layout = self.layout
        valid = decode_key_valid(layout, self.mask_2d, q)
        dtype = embeds.dtype if embeds is not None else torch.float32
        self.layer_kwargs = {"attention_mask": layout_mask(valid, q, self.parts.attention, dtype)}
        return args, kwargs

    def lm_post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.decoding and self.layout is not None:
            self.layout.new_tokens += self.query_count

    def layer_pre(self, index: int) -> Callable:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if index == self.layer and not self.decoding:
                args = self._prune(module, args, kwargs)
            if self.layer_kwargs is not None:
                kwargs = {**kwargs, **self.layer_kwargs}
            return args, kwargs
        return pre

    def stash_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.decoding:
            hidden = args[0] if args else kwargs["hidden_states"]
            self.stash = (hidden, kwargs["position_embeddings"])

    # -- deciding and applying the prune --------------------------------------------------
    def _prune(self, layer: nn.Module, args: tuple, kwargs: dict) -> tuple:
        hidden = args[0] if args else kwargs["hidden_states"]
        call = self.call
        if call.visual is None or call.visual.shape != hidden.shape[:2]:
            return args
        B, L = call.visual.shape
        real = (torch.ones(B, L, dtype=torch.bool, device=hidden.device)
                if self.mask_2d is None else self.mask_2d[:, -L:].to(torch.bool))
        if self.on_hidden:
            hidden, keep = self._reduce_hidden(hidden, real)
        else:
            keep = self._feature_keep()
        before = int(call.visual.sum())
        self.last_counts = (before, before - int((~keep & call.visual).sum()))
        if bool(keep.all()):
            return args
        layout = pruned_layout(keep, real)
        self.layout = layout
        cos, sin = kwargs["position_embeddings"]
        pruned: dict[str, Any] = {
            "position_embeddings": (gather_tokens(cos, layout.index),
                                    gather_tokens(sin, layout.index)),
            "attention_mask": layout_mask(layout.valid, layout.size, self.parts.attention,
                                          hidden.dtype),
        }
        position_ids = kwargs.get("position_ids")
        if position_ids is not None:
            pruned["position_ids"] = gather_tokens(position_ids, layout.index)
        self.layer_kwargs = pruned
        hidden = gather_tokens(hidden, layout.index)
        return (hidden, *args[1:]) if args else args

    def _feature_keep(self) -> Tensor:
        """The sequence keep mask from the vision/projector side's per-item decisions."""
        call = self.call
        keep = torch.ones_like(call.visual)
        for kind, where in call.kinds.items():
            flats = (call.feature_keep if call.feature_keep else self.pending).pop(kind, None)
            if not flats:
                continue
            flat = torch.cat(flats)
            if flat.numel() != int(where.sum()):
                raise RuntimeError(f"{flat.numel()} {kind} features were reduced but the "
                                   f"sequence holds {int(where.sum())} {kind} tokens")
            keep[where] = flat.to(keep.device)
        return keep

    def _reduce_hidden(self, hidden: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """Reduce each item's visual hidden states entering the layer; returns (hidden, keep)."""
        call = self.call
        keep = torch.ones_like(call.visual)
        attn = None
        if self.reducer.name == "fastv":
            h, (cos, sin) = self.stash
            self.stash = None  # do not keep layer K-1's input alive after the forward
            attn = last_token_attention(self.parts.layers[self.layer - 1], h, cos, sin, real)
        hidden = hidden.clone()
        for kind, where in call.kinds.items():
            rows, cols = where.nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            for counts, grid, starts in equal_groups(
                    kind, call.counts.get(kind), call.grids.get(kind), rows.numel(),
                    call.visual.device):
                pos_r = rows[starts[:, None] + torch.arange(counts, device=rows.device)]
                pos_c = cols[starts[:, None] + torch.arange(counts, device=rows.device)]
                x = hidden[pos_r, pos_c]
                a = None if attn is None else attn[pos_r, pos_c]
                plan = self._reducer_for(grid)(x, attn=a)
                full, item_keep = scatter_back(plan, plan.apply(x))
                hidden[pos_r, pos_c] = torch.where(item_keep[..., None], full, x)
                keep[pos_r, pos_c] = item_keep
        return hidden, keep

    def _reducer_for(self, grid: tuple[int, int, int] | None) -> Reducer:
        """The reducer told the item's token grid: frames and frame grid for video reducers
        (`frames=`), the frames stacked into one grid for `pool2d`."""
        accepts = inspect.signature(type(self.reducer)).parameters
        if grid is None or not ("grid" in accepts or "frames" in accepts):
            return self.reducer
        t, h, w = grid
        options = self.reducer.options()
        if "frames" in accepts:
            options["frames"] = t
            if "grid" in accepts:
                options["grid"] = (h, w)
        else:
            options["grid"] = (t * h, w)
        return type(self.reducer)(**options)

    # -- vision and projector sides --------------------------------------------------------
    def qk_hook(self, slot: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            self.cls_qk[slot] = output
        return hook

    def _cls_inputs(self, n: int) -> dict[str, Tensor]:
        """CLS attention row and heads-averaged keys for the `n` features of each image."""
        q, k = self.cls_qk
        if q is None or k is None:
            return {}
        heads = self.parts.vision_tower.config.num_attention_heads
        B, T, C = k.shape
        d = C // heads
        k = k.view(B, T, heads, d).transpose(1, 2)
        row = cls_attention(q[:, 0].view(B, heads, d), k, scale=d ** -0.5)
        keys = k.mean(1)
        return {"attn": row[:, T - n:], "keys": keys[:, T - n:]}

    def projector_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        feats = args[0]
        plan = self.reducer(feats, **self._cls_inputs(feats.shape[1]))
        self.call.plan = plan
        return (plan.apply(feats), *args[1:]), kwargs

    def projector_post(self, module: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> Tensor:
        plan = self.call.plan
        if plan is None:  # where="projector": reduce the projected features now
            plan = self.reducer(out, **self._cls_inputs(out.shape[1]))
            out = plan.apply(out)
        self.call.plan = None
        full, keep = scatter_back(plan, out)
        self.pending.setdefault("image", []).append(keep.flatten())
        return full
