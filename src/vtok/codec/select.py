"""Choosing how many tokens an image gets from a variable-length tokenizer: by a bit budget
(bits per pixel of the stored file) or by a quality target (LPIPS), One-D-Piece / KARL style.

The tokens of a variable-length tokenizer are prefixes of one sequence, so the image is
encoded once at the full length and each candidate count is a slice of it.
"""

from __future__ import annotations

import dataclasses

import torch

from vtok.codec.container import Coder
from vtok.codec.tokens_file import to_vtok
from vtok.models.base import Tokenizer, Tokens


def prefix(tokens: Tokens, k: int) -> Tokens:
    return dataclasses.replace(tokens, indices=tokens.indices[:, :k], token_shape=(k,),
                               num_tokens=k)


def file_bpp(tokens: Tokens, codebook_size: int, coder: Coder) -> float:
    """Bits per pixel of the single-image .vtok file holding `tokens` (headers included)."""
    h, w = tokens.image_size
    return len(to_vtok([tokens], codebook_size, coder).to_bytes()) * 8 / (h * w)


def _variable(tok: Tokenizer) -> int:
    if not tok.variable_length:
        raise ValueError(f"a {tok.architecture} tokenizer has a fixed token count; "
                         f"--num-tokens and --target-* need a variable-length one")
    return tok.max_tokens


def tokens_for_bpp(tok: Tokenizer, image: torch.Tensor, target: float, coder: Coder) -> Tokens:
    """The longest prefix whose file stays within `target` bpp; ValueError saying the
    smallest file's bpp when even one token is over the budget."""
    full = tok.encode(image[None])
    least = file_bpp(prefix(full, 1), tok.codebook_size, coder)
    if least > target:
        raise ValueError(f"cannot meet --target-bpp {target:g}: the smallest file (1 token, "
                         f"headers included) takes {least:.5f} bpp")
    lo, hi = 1, _variable(tok)
    while lo < hi:  # file size grows with k
        mid = (lo + hi + 1) // 2
        if file_bpp(prefix(full, mid), tok.codebook_size, coder) <= target:
            lo = mid
        else:
            hi = mid - 1
    return prefix(full, lo)


def tokens_for_lpips(tok: Tokenizer, image: torch.Tensor, target: float, lpips) -> Tokens:
    """The shortest prefix whose reconstruction reaches LPIPS <= `target`; ValueError saying
    the best LPIPS when even all tokens do not reach it. Assumes quality rises with the token
    count, which the benchmark checks."""
    if min(image.shape[-2:]) < 32:
        raise ValueError(f"a {image.shape[-1]}x{image.shape[-2]} image is too small for an "
                         f"LPIPS target (at least 32 pixels per side)")
    full = tok.encode(image[None])
    lo, hi = 1, _variable(tok)
    with torch.no_grad():
        best = lpips(tok.decode(prefix(full, hi)), image[None]).item()
        if best > target:
            raise ValueError(f"cannot meet --target-lpips {target:g}: all {hi} tokens reach "
                             f"LPIPS {best:.3f}")
        while lo < hi:
            mid = (lo + hi) // 2
            if lpips(tok.decode(prefix(full, mid)), image[None]).item() <= target:
                hi = mid
            else:
                lo = mid + 1
    return prefix(full, lo)


def tokens_for_count(tok: Tokenizer, image: torch.Tensor, num_tokens: int | None) -> Tokens:
    if num_tokens is not None:
        _variable(tok)
    return tok.encode(image[None], num_tokens=num_tokens)
