"""Every registered quantizer in a small configuration, for tests that loop over all of them."""

from __future__ import annotations

import math

from vtok.quant import QUANTIZERS, create_quantizer

DIM = 8
# name -> (registered name, options); several variants per family
VARIANTS = {
    "vq": ("vq", {"codebook_size": 32}),
    "vq-learned": ("vq", {"codebook_size": 32, "ema": False}),
    "vq-cosine": ("vq", {"codebook_size": 32, "distance": "cosine"}),
    "vq-lowdim-rotation": ("vq", {"codebook_size": 300, "codebook_dim": 4, "rotation_trick": True}),
    "rvq": ("rvq", {"num_quantizers": 3, "quantizer_options": {"codebook_size": 16}}),
    "rvq-shared-fsq": ("rvq", {"num_quantizers": 2, "quantizer": "fsq", "shared_codebook": True,
                               "quantizer_options": {"levels": [5, 5, 5]}}),
    "rvq-flat-options": ("rvq", {"num_quantizers": 2, "codebook_size": 16}),  # older form
    "msrvq": ("msrvq", {"quantizer_options": {"codebook_size": 16}}),  # scales set per shape
    "fsq": ("fsq", {"levels": [8, 5, 5, 5]}),  # dim 8 -> projections 8 -> 4 -> 8
    "lfq": ("lfq", {}),
    "bsq": ("bsq", {}),
    "gvq": ("gvq", {"groups": 2, "quantizer_options": {"codebook_size": 16},
                    "disentangle_weight": 0.1}),
}
SHAPES = {"seq": (2, 16, DIM), "grid": (2, 4, 4, DIM)}


def build(variant: str, shape_name: str, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    name, options = VARIANTS[variant]
    options = dict(options)
    if name == "msrvq":
        options["scales"] = [1, 2, 4] if shape_name == "grid" else [(1,), (4,), (16,)]
    return create_quantizer(name, dim=DIM, **options)


def expected_index_shape(q, input_shape):
    if hasattr(q, "num_tokens"):  # msrvq: scales flattened into one token axis
        return (input_shape[0], q.num_tokens)
    lead = tuple(input_shape[:-1])
    return lead if q.num_codebooks == 1 else (*lead, q.num_codebooks)


def covered_names() -> set[str]:
    return {name for name, _ in VARIANTS.values()}


def all_registered() -> set[str]:
    return set(QUANTIZERS.names())


def expected_bits(q) -> float:
    return q.num_codebooks * math.log2(q.codebook_size)
