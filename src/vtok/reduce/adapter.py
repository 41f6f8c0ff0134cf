"""Token reduction inside a vision transformer, by hooks alone (ToMe, Bolya et al., ICLR 2023).

`attach(model, method, keep=... | r=...)` registers PyTorch hooks on the host's blocks; no
`forward` is copied or replaced, so the installed timm (or vtok) code runs as it is:

- a forward hook on block i-1's `attn.qkv` keeps that block's queries and keys when a
  reduction at the input of block i needs them (`cls_attn`'s CLS row; `similarity="keys"`);
- a forward pre-hook on every block counts the tokens entering it, reduces them at the
  scheduled blocks (`ReductionPlan.apply`) and, once tokens were merged, passes the
  proportional-attention bias log(size) as the block's attention-mask keyword;
- a forward hook on the last block un-merges its output back to all N original tokens
  (`ReductionPlan.unmerge`), so whatever follows (final norm, pooling, TiTok's `x[:, n:]`)
  sees the full sequence in the original order. Positions of pruned tokens get the
  size-weighted mean of the surviving non-protected tokens, so average pooling averages
  what survived.

What the reducers compare (similarity): by default the tokens entering block i themselves.
ToMe matches on the keys of the block it merges in; a hook at block i's input only has block
i-1's keys, computed from block i-1's input, one block staler than the tokens. On the bench's
trained ViT the tokens choose better (ToMe at block 1, top-1 agreement on 1,200 random crops:
97.8 % on tokens vs 95.5 % on block 0's keys at keep 0.5, 94.4 % vs 90.1 % at 0.25; rows
`tome` and `tome:similarity=keys` of benchmarks/results/reduce_vit_tiny_classifier.json).
`similarity="keys"` gives those keys (heads averaged) instead.
`r=` reproduces ToMe's token counts (N - i*r tokens enter block i).
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vtok.reduce.attention import cls_attention
from vtok.reduce.base import Reducer, create_reducer
from vtok.reduce.cls_attn import ClsAttentionMerge
from vtok.reduce.model_parts import TransformerParts, find_parts, num_heads
from vtok.reduce.plan import ReductionPlan
from vtok.reduce.vlm import VlmReductionHandle
from vtok.reduce.vlm_attach import attach_vlm
from vtok.reduce.vlm_parts import find_vlm_parts

# blocks with a live attach: a second attach on them is refused (hooks would interleave)
_ATTACHED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def attach(
    model: nn.Module,
    method: str,
    keep: float | None = None,
    r: int | None = None,
    layers: int | Sequence[int] | None = None,
    protected: int | Sequence[int] | None = None,
    proportional: bool = True,
    similarity: str = "tokens",
    where: str | None = None,
    layer: int | None = None,
    **method_options: Any,
) -> ReductionHandle | VlmReductionHandle:
    """Reduce the tokens of `model` with reducer `method` until the handle is removed.

    On a Hugging Face LLaVA or Qwen2-VL model the visual tokens are reduced instead, per
    image, at `where` = "vision" | "projector" (default) | "llm" (before decoder layer
    `layer`, default 2); see `vtok.reduce.vlm`. `layers`, `proportional` and `similarity` are
    for vision transformers only.

    model: a timm `VisionTransformer` (or subclass), a vtok TiTok tokenizer (its encoder is
    reduced; `encode`, `forward` and the bench use it) or an `nn.ModuleList` of vtok
    `TransformerBlock`s. Use as `with attach(...) as handle:`; leaving the block (also by an
    exception) or `handle.remove()` restores the model exactly.

    Schedules: `r=int` removes r tokens at the input of every block in `layers` (default every
    block after the first: ToMe's token counts). `keep=float` (or pool2d's `stride=`) reduces
    once, at the input of block `layers` (default 1, i.e. after the first block, whose tokens
    are no longer raw patches; 0 for a one-block model) to `keep` of the reducible tokens.
    keep=1 or r=0 changes nothing, bit for bit.
    protected: tokens never merged or pruned: a count of leading tokens or a list of indices
    (negative ones count from the end). Default: timm's prefix tokens (CLS, distillation
    token, registers); TiTok's latent tokens, which come last.
    proportional: pass log(size) as an attention bias once tokens were merged (ToMe).
    similarity: what reducers compare: "tokens" (those entering the block) or "keys" (the
    previous block's attention keys, heads averaged; at block 0, the tokens).
    method_options go to the reducer (e.g. `seed=` for random, `contextual=` for cls_attn).
    """
    vlm = find_vlm_parts(model)
    if vlm is not None:
        if layers is not None or protected is not None or not proportional or \
                similarity != "tokens":
            raise ValueError("layers/protected/proportional/similarity are options of vision "
                             "transformers; on a vision-language model give where= and layer=")
        return attach_vlm(vlm, method, keep=keep, r=r, where=where or "projector", layer=layer,
                          **method_options)
    if where is not None or layer is not None:
        raise ValueError(f"where= and layer= are for vision-language models; "
                         f"{type(model).__name__} is not one (use layers=)")
    parts = find_parts(model)
    once = r is None
    if (keep is None and r is None and "stride" not in method_options) or (
        keep is not None and r is not None
    ):
        raise ValueError(f"give exactly one of keep (ratio kept, in (0, 1]) or r (tokens "
                         f"removed per block), got keep={keep!r}, r={r!r}")
    amount = {"keep": keep} if keep is not None else {} if r is None else {"r": r}
    reducer = create_reducer(method, **amount, **method_options)
    schedule = check_layers(layers, once, parts.depth)
    check_protected(protected)
    check_own_options(proportional, similarity)
    if isinstance(reducer, ClsAttentionMerge) and parts.queries == "none" and not protected:
        raise ValueError(f"cls_attn needs a class token or protected tokens to rank by; "
                         f"{type(model).__name__} has neither")
    if any(block in _ATTACHED for block in parts.blocks):
        raise ValueError("this model already has a token reduction attached; remove it (leave "
                         "its `with` block) before attaching another")
    return ReductionHandle(parts, reducer, schedule, protected, proportional,
                           use_keys=similarity == "keys")


def check_own_options(proportional: Any, similarity: Any) -> None:
    if not isinstance(proportional, bool):
        raise ValueError(f"proportional must be true or false, got {proportional!r}")
    if similarity not in ("tokens", "keys"):
        raise ValueError(f"similarity must be 'tokens' or 'keys', got {similarity!r}")


def check_options(method: str, options: dict[str, Any]) -> None:
    """Check `attach` options given by name (attach's own, proportional and similarity, and
    the reducer's) before any model exists, e.g. those of a bench's `NAME:option=value`."""
    own = {k: options[k] for k in ("proportional", "similarity") if k in options}
    check_own_options(own.get("proportional", True), own.get("similarity", "tokens"))
    create_reducer(method, keep=0.5, **{k: v for k, v in options.items() if k not in own})


def check_layers(layers: Any, once: bool, depth: int) -> tuple[int, ...]:
    """The sorted block indices where tokens are reduced."""
    if layers is None:
        if once:
            return (1,) if depth > 1 else (0,)
        return tuple(range(1, depth)) if depth > 1 else (0,)
    items = [layers] if isinstance(layers, numbers.Integral) else layers
    ok = isinstance(items, Sequence) and not isinstance(items, str) and len(items) > 0 and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < depth
        for i in items
    )
    if not ok or len(set(items)) != len(items) or isinstance(layers, bool):
        raise ValueError(f"layers must be a block index or a list of distinct block indices in "
                         f"[0, {depth}), got {layers!r}")
    if once and len(items) > 1:
        raise ValueError(f"keep reduces once: layers must be one block index, got {layers!r}")
    return tuple(sorted(int(i) for i in items))


def check_protected(protected: Any) -> None:
    if protected is None or (isinstance(protected, numbers.Integral)
                             and not isinstance(protected, bool) and protected >= 0):
        return
    if isinstance(protected, Sequence) and not isinstance(protected, str) and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in protected
    ):
        return
    raise ValueError(f"protected must be a count of leading tokens or a list of token indices, "
                     f"got {protected!r}")


@dataclass
class _Pass:
    """What one forward pass has done so far (reset when block 0 is entered)."""

    plan: ReductionPlan | None = None
    sizes: Tensor | None = None
    mask: Tensor | None = None
    protected: int | list[int] | None = None  # list until the first reduction, then a count
    queries: list[int] = field(default_factory=list)
    bias: Tensor | None = None
    qkv: tuple[int, Tensor] | None = None  # (block index, its qkv output)
    tokens: list[int] = field(default_factory=list)


class ReductionHandle:
    """The hooks of one `attach`; a context manager that removes them on exit.

    tokens_per_block: tokens entering each block during the last forward pass.
    plan: the last pass's reduction from the original tokens to those leaving the last block
    (None when it reduced nothing); `plan.sizes` tells how many tokens each one stood for.
    """

    def __init__(self, parts: TransformerParts, reducer: Reducer, layers: tuple[int, ...],
                 protected: int | Sequence[int] | None, proportional: bool,
                 use_keys: bool = False) -> None:
        self.parts, self.reducer, self.layers = parts, reducer, layers
        self.protected, self.proportional, self.use_keys = protected, proportional, use_keys
        self.tokens_per_block: list[int] = []
        self.plan: ReductionPlan | None = None
        self._pass = _Pass()
        self._wants_attention = isinstance(reducer, ClsAttentionMerge)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        last = parts.depth - 1
        for i, block in enumerate(parts.blocks):
            self._hooks.append(block.register_forward_pre_hook(
                lambda m, args, kwargs, i=i: self._enter_block(i, args, kwargs),
                with_kwargs=True))
        self._hooks.append(parts.blocks[last].register_forward_hook(
            lambda m, args, out: self._leave_last(out)))
        if not reducer.is_identity() and (use_keys or self._wants_attention):
            for i in layers:
                if i > 0:
                    self._hooks.append(parts.attentions[i - 1].qkv.register_forward_hook(
                        lambda m, args, out, i=i: self._keep_qkv(i - 1, out)))
        _ATTACHED.update(parts.blocks)

    def remove(self) -> None:
        """Remove every hook; the model is then exactly as before `attach`."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for block in self.parts.blocks:
            _ATTACHED.discard(block)
        self._pass = _Pass()

    def __enter__(self) -> ReductionHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _keep_qkv(self, block: int, out: Tensor) -> None:
        self._pass.qkv = (block, out)

    def _enter_block(self, i: int, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if i == 0:
            self._pass = _Pass()
        state = self._pass
        x = args[0] if args else kwargs["x"]
        new = self._reduce(i, x) if i in self.layers else x
        state.tokens.append(new.shape[1])
        name = self.parts.bias_kwarg
        given = args[1] if len(args) > 1 else kwargs.get(name)
        if state.plan is not None and given is not None:
            # the caller's mask was made for the full sequence
            raise ValueError(f"token reduction cannot combine with an attention mask passed by "
                             f"the caller ({name}=...)")
        if new is x and state.bias is None:
            return None
        if state.bias is not None:
            kwargs = {**kwargs, name: state.bias.to(_attention_dtype(new))}
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "x": new}

    def _reduce(self, i: int, x: Tensor) -> Tensor:
        state = self._pass
        if state.protected is None:
            state.protected, state.queries = self._resolve_protected(x.shape[1])
        keys = attn = None
        if state.qkv is not None and state.qkv[0] == i - 1 and state.qkv[1].shape[1] == x.shape[1]:
            q, keys = self._split_qkv(self.parts.attentions[i - 1], state.qkv[1])
            if self._wants_attention and state.queries:
                attn = self._query_attention(q, keys)
        state.qkv = None
        plan = self.reducer(x, state.mask, sizes=state.sizes,
                            keys=keys if self.use_keys else None, attn=attn,
                            protected=state.protected)
        if plan.identity:
            return x
        kept = state.protected if isinstance(state.protected, list) else list(
            range(state.protected))
        # protected tokens come first in every plan's output, in index order
        state.queries = [kept.index(j) for j in state.queries]
        state.protected = len(kept)
        state.plan = plan if state.plan is None else state.plan.then(plan)
        state.sizes = plan.sizes
        state.mask = None if plan.full else plan.mask
        merged = bool((plan.sizes[plan.mask] != 1).any())
        if self.proportional and merged:
            state.bias = plan.attention_bias(torch.float32)
        return plan.apply(x)

    def _resolve_protected(self, n: int) -> tuple[list[int], list[int]]:
        """Protected token indices and, among them, the query tokens for `cls_attn`."""
        spec, parts = self.protected, self.parts
        if spec is None:
            protected = list(range(parts.leading)) + list(range(n - parts.trailing, n))
        elif isinstance(spec, numbers.Integral):
            if spec > n:
                raise ValueError(f"protected={spec} is more than the {n} tokens")
            protected = list(range(int(spec)))
        else:
            protected = [int(j) + n if j < 0 else int(j) for j in spec]
        queries = {"cls": [0], "trailing": list(range(n - parts.trailing, n))}.get(
            parts.queries, [])
        return protected, [j for j in queries if j in protected]

    @staticmethod
    def _split_qkv(attn: nn.Module, out: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys `[B, H, N, D]` as the attention uses them (after q/k norms)."""
        B, N, three_a = out.shape
        heads = num_heads(attn)
        a = three_a // 3
        q = out[..., :a].reshape(B, N, heads, a // heads).transpose(1, 2)
        k = out[..., a : 2 * a].reshape(B, N, heads, a // heads).transpose(1, 2)
        if isinstance(getattr(attn, "q_norm", None), nn.Module):
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q, k

    def _query_attention(self, q: Tensor, k: Tensor) -> Tensor:
        """The mean attention row `[B, N]` of the query tokens (CLS, or TiTok's latents)."""
        state = self._pass
        sizes = state.sizes if state.bias is not None else None
        rows = [cls_attention(q[:, :, j], k, state.mask, sizes) for j in state.queries]
        return torch.stack(rows).mean(0)

    def _leave_last(self, out: Tensor) -> Tensor | None:
        state = self._pass
        self.tokens_per_block, self.plan = state.tokens, state.plan
        if state.plan is None:
            return None
        return restore_tokens(state.plan, out, state.protected)


def restore_tokens(plan: ReductionPlan, y: Tensor, num_protected: int) -> Tensor:
    """`plan.unmerge(y)`, with pruned positions set to the size-weighted mean of the
    non-protected outputs (the first `num_protected` outputs are protected)."""
    full = plan.unmerge(y)
    dropped = (plan.assign < 0) & plan.input_mask
    if not bool(dropped.any()):
        return full
    acc = torch.promote_types(y.dtype, torch.float32)
    w = plan.sizes.to(acc).masked_fill(~plan.mask, 0)
    w[:, :num_protected] = 0
    mean = (y.to(acc) * w[..., None]).sum(1) / w.sum(1).clamp(min=1)[:, None]
    return torch.where(dropped[..., None], mean[:, None].to(y.dtype), full)


def _attention_dtype(x: Tensor) -> torch.dtype:
    """The dtype the block's attention will compute in (SDPA wants the mask in it)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype
