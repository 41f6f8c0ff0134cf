"""What `vtok eval` scores: a tokenizer at one token count, or a classic codec at one quality.
Both code a batch and say what it cost: reconstructions, real file bytes per image, seconds."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vtok.codec.tokens_file import has_prior, make_coder, to_vtok
from vtok.eval import codecs
from vtok.eval.demo import token_counts
from vtok.models import Tokenizer, Tokens

# the quality sweeps (each codec's own 0-100 scale), low qualities first: tokenizers live there
QUALITIES = {"jpeg": [2, 5, 10, 25, 50, 90],
             "webp": [0, 5, 10, 25, 50, 90],
             "avif": [0, 5, 10, 25, 50, 80]}


@dataclass
class Coded:
    """One batch through one setting. `file_bytes`: bytes of the stored file per image (the
    entropy-coded .vtok where there is a prior, else the raw one; the codec's own file).
    `raw_bytes` and `index_bits` only for tokenizers; `tokens` for codebook statistics."""

    recons: torch.Tensor
    file_bytes: list[int]
    encode_s: float
    decode_s: float
    raw_bytes: list[int] = field(default_factory=list)
    index_bits: list[float] = field(default_factory=list)
    tokens: Tokens | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_image(tokens: Tokens, i: int) -> Tokens:
    return dataclasses.replace(tokens, indices=tokens.indices[i : i + 1])


class TokenizerSetting:
    """`tok` at `num_tokens` (None: the count the image size gives)."""

    kind = "tokenizer"

    def __init__(self, name: str, tok: Tokenizer, directory: Path | None,
                 num_tokens: int | None) -> None:
        self.method, self.tok, self.num_tokens = name, tok, num_tokens
        self.raw_coder = make_coder("raw", tok, None)
        self.coder = make_coder("entropy", tok, directory) if (
            directory is not None and has_prior(directory)) else None
        self.coding = "entropy-coded" if self.coder is not None else "raw"
        self.device = next(tok.parameters()).device

    @property
    def setting(self) -> str:
        return "all tokens" if self.num_tokens is None else f"{self.num_tokens} tokens"

    def code(self, images: torch.Tensor) -> Coded:
        images = images.to(self.device)
        start = time.perf_counter()
        tokens = self.tok.encode(images, num_tokens=self.num_tokens)
        _sync(self.device)
        middle = time.perf_counter()
        recons = self.tok.decode(tokens)
        _sync(self.device)
        end = time.perf_counter()
        tokens = dataclasses.replace(tokens, indices=tokens.indices.cpu())
        raw, coded, bits = [], [], []
        per_index = math.log2(self.tok.codebook_size)
        for i in range(len(images)):
            single = one_image(tokens, i)
            raw.append(len(to_vtok([single], self.tok.codebook_size, self.raw_coder).to_bytes()))
            coded.append(raw[-1] if self.coder is None else
                         len(to_vtok([single], self.tok.codebook_size, self.coder).to_bytes()))
            bits.append(single.indices.numel() * per_index)
        return Coded(recons.float().cpu(), coded, middle - start, end - middle, raw, bits, tokens)

    def decode_tokens(self, tokens: Tokens) -> torch.Tensor:
        return self.tok.decode(dataclasses.replace(
            tokens, indices=tokens.indices.to(self.device))).float().cpu()


class CodecSetting:
    """A classic codec (JPEG, WebP, AVIF through Pillow) at one quality; real file bytes."""

    kind = "codec"

    def __init__(self, codec: str, quality: int) -> None:
        self.codec, self.quality = codec, quality
        self.method, self.setting, self.num_tokens = codec.upper(), f"q{quality}", None
        self.coding = "file"

    def code(self, images: torch.Tensor) -> Coded:
        encode_s = decode_s = 0.0
        recons, sizes = [], []
        for image in images.cpu():
            start = time.perf_counter()
            data = codecs.encode(image, self.codec, self.quality)
            middle = time.perf_counter()
            recons.append(codecs.decode(data))
            decode_s += time.perf_counter() - middle
            encode_s += middle - start
            sizes.append(len(data))
        return Coded(torch.stack(recons), sizes, encode_s, decode_s)


def tokenizer_settings(name: str, tok: Tokenizer, directory: Path | None,
                       counts: list[int] | None) -> list[TokenizerSetting]:
    """A variable-length tokenizer at `counts` (default 8, 16, ... up to its maximum; counts
    above its maximum are dropped), any other at the count its image size gives."""
    if not tok.variable_length:
        chosen: list[int | None] = [None]
    elif counts is None:
        chosen = token_counts(tok)
    else:
        chosen = sorted({k for k in counts if 1 <= k <= tok.max_tokens}) or [tok.max_tokens]
    return [TokenizerSetting(name, tok, directory, k) for k in chosen]


def codec_settings(names: list[str], qualities: dict[str, list[int]] | None = None
                   ) -> tuple[list[CodecSetting], list[str]]:
    """The sweeps of the codecs this Pillow build has, and the names of those it lacks."""
    sweeps = qualities or QUALITIES
    present = [c for c in names if codecs.available(c)]
    return ([CodecSetting(c, q) for c in present for q in sweeps[c]],
            [c for c in names if c not in present])
