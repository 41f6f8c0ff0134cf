"""Decoder robustness to token errors (the perturbation probe of "Robust Latent" tokenizers):
replace a fraction p of the indices with codes drawn uniformly at random and decode.

For a token of several indices (residual or grouped quantizers) each index counts on its own.
Exactly round(p x indices) positions per image are replaced (at least one when p > 0), chosen
by a seeded generator, so every run and every tokenizer sees the same kind of damage. A random
code may equal the one it replaces (probability 1 / codebook size).
"""

from __future__ import annotations

import dataclasses

import torch

from vtok.models import Tokens

FRACTIONS = (0.01, 0.05, 0.10, 0.20)


def corrupt(tokens: Tokens, fraction: float, codebook_size: int,
            generator: torch.Generator) -> Tokens:
    """`tokens` with `fraction` of each image's indices replaced by random codes."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    indices = tokens.indices.clone()
    flat = indices.view(indices.shape[0], -1)
    per_image = flat.shape[1]
    count = min(per_image, max(1, round(fraction * per_image))) if fraction > 0 else 0
    for row in flat:
        where = torch.randperm(per_image, generator=generator)[:count]
        codes = torch.randint(codebook_size, (count,), generator=generator)
        row[where.to(row.device)] = codes.to(row.device, row.dtype)
    return dataclasses.replace(tokens, indices=indices)
