"""Training-free token reduction for vision transformers: merge or prune tokens, batched.

`create_reducer(name, keep=... | r=..., protected=...)` builds a reducer; calling it on
tokens `[B, N, C]` (with an optional padding mask, sizes, keys or CLS attention row) returns a
`ReductionPlan`, whose `apply` reduces any per-token tensor, `unmerge` undoes it and
`attention_bias` gives ToMe's proportional attention. Registered methods: tome, divprune,
kcenter, dpc_knn, kmedoids, cls_attn, fastv, pool2d, random, stride.

`with attach(model, "tome", r=8):` reduces the tokens inside a timm ViT/DeiT or a vtok TiTok
encoder through hooks, and restores the model exactly on exit. On a Hugging Face LLaVA or
Qwen2-VL model, `attach(model, "fastv", keep=0.25, where="llm", layer=2)` reduces its visual
tokens at the vision tower, the projector or inside the language model (`vtok.reduce.vlm`).
"""

from vtok.reduce import (  # noqa: F401
    baselines,
    cls_attn,
    cluster,
    diversity,
    kmedoids,
    pool,
    temporal,
    tome,
)
from vtok.reduce.adapter import ReductionHandle, attach
from vtok.reduce.attention import cls_attention, proportional_attention_bias
from vtok.reduce.base import REDUCERS, Reducer, TokenBatch, create_reducer, kept_count
from vtok.reduce.plan import ReductionPlan, build_plan
from vtok.reduce.vlm import VlmReductionHandle

__all__ = [
    "REDUCERS",
    "ReductionHandle",
    "ReductionPlan",
    "Reducer",
    "TokenBatch",
    "VlmReductionHandle",
    "attach",
    "build_plan",
    "cls_attention",
    "create_reducer",
    "kept_count",
    "proportional_attention_bias",
]
