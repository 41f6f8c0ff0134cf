"""Every registered reducer in a small configuration, and a padded batch to run them on."""

from __future__ import annotations

import torch

from vtok.reduce import REDUCERS, create_reducer

DIM = 6
PROTECTED = 2
# reducible real tokens per sample: squares, so pool2d runs on the same batches as the rest
LENGTHS = (25, 16, 9)
VARIANTS = {
    "tome": ("tome", {"keep": 0.5}),
    "tome-r": ("tome", {"r": 4}),
    "tome-many-rounds": ("tome", {"keep": 0.2}),
    "tome-gentle-rounds": ("tome", {"keep": 0.5, "round_share": 0.2}),
    "divprune": ("divprune", {"keep": 0.4}),
    "kcenter": ("kcenter", {"keep": 0.4}),
    "kcenter-cosine": ("kcenter", {"keep": 0.3, "distance": "cosine"}),
    "dpc_knn": ("dpc_knn", {"keep": 0.3, "k": 3}),
    "kmedoids": ("kmedoids", {"keep": 0.4, "segments": 3}),
    "kmedoids-keep-only": ("kmedoids", {"keep": 0.5, "segments": 2, "merge": False}),
    "cls_attn": ("cls_attn", {"keep": 0.5, "contextual": 0.3}),
    "fastv": ("fastv", {"keep": 0.5}),
    "pool2d": ("pool2d", {"stride": 2}),
    "pool2d-keep": ("pool2d", {"keep": 0.3}),
    "random": ("random", {"keep": 0.5, "seed": 3}),
    "static_gate": ("static_gate", {"keep": 0.5}),
    "pool3d": ("pool3d", {"keep": 0.3}),
    "stride": ("stride", {"r": 5}),
}
MERGING = {"tome", "dpc_knn", "kmedoids", "cls_attn", "pool2d", "pool3d"}


def build(variant: str, **overrides):
    name, options = VARIANTS[variant]
    return create_reducer(name, **{"protected": PROTECTED, **options, **overrides})


def identity_options(variant: str) -> dict:
    """The variant's options with its amount set to 'reduce nothing'."""
    name, options = VARIANTS[variant]
    options = {k: v for k, v in options.items() if k not in ("keep", "r", "stride")}
    if "r" in VARIANTS[variant][1]:
        return {**options, "r": 0}
    if "stride" in VARIANTS[variant][1]:
        return {**options, "stride": 1}
    return {**options, "keep": 1.0}


def padded_batch(seed: int = 0, dtype=torch.float32):
    """x [3, N, DIM] with NaN in every padded slot; sample 0 full, sample 1 padded at the end,
    sample 2 padded in the middle (after the protected tokens)."""
    g = torch.Generator().manual_seed(seed)
    N = PROTECTED + max(LENGTHS)
    x = torch.randn(len(LENGTHS), N, DIM, generator=g, dtype=dtype)
    mask = torch.zeros(len(LENGTHS), N, dtype=torch.bool)
    mask[0] = True
    mask[1, : PROTECTED + LENGTHS[1]] = True
    mask[2, :PROTECTED] = True
    mask[2, N - LENGTHS[2]:] = True
    x = x.masked_fill(~mask[..., None], float("nan"))
    return x, mask


def plain_batch(n: int = 20, seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, PROTECTED + n, DIM, generator=g)


def covered_names() -> set[str]:
    return {name for name, _ in VARIANTS.values()}


def all_registered() -> set[str]:
    return set(REDUCERS.names())
