"""What `vtok eval` scores: a tokenizer at one token count, or a classic codec at one quality.
Both code a batch and say what it cost: reconstructions, real file bytes per image, seconds."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vtok.codec.container import Coder, VtokFile
from vtok.codec.tokens_file import from_vtok, has_prior, make_coder, to_vtok
from vtok.eval import codecs
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


def token_counts(tok: Tokenizer) -> list[int | None]:
    """A variable-length tokenizer's counts 8, 16, ... up to its maximum; None (all) for a
    tokenizer whose count follows from the image size."""
    if not tok.variable_length:
        return [None]
    counts, n = [], 8
    while n < tok.max_tokens:
        counts.append(n)
        n *= 2
    return [*counts, tok.max_tokens]


def vtok_files(tokens: Tokens, codebook_size: int, coder: Coder) -> list[bytes]:
    """The bytes of one .vtok file per image of `tokens`, written by `coder`."""
    return [to_vtok([one_image(tokens, i)], codebook_size, coder).to_bytes()
            for i in range(len(tokens.indices))]


def code_through_files(tok: Tokenizer, images: torch.Tensor, num_tokens: int | None,
                       coder: Coder) -> Coded:
    """Encode `images` with `tok`, store each image's tokens as its own .vtok file written by
    `coder`, read the files back and decode what they hold: what a user of the files sees.
    `tokens`: the tokens read back (indices on the CPU); the times are the tokenizer's encode
    and decode alone."""
    device = next(tok.parameters()).device
    images = images.to(device)
    start = time.perf_counter()
    tokens = tok.encode(images, num_tokens=num_tokens)
    _sync(device)
    encode_s = time.perf_counter() - start
    files = vtok_files(tokens, tok.codebook_size, coder)
    back = [from_vtok(VtokFile.from_bytes(data), coder, tok.tokenizer_id)[0] for data in files]
    stored = dataclasses.replace(back[0], indices=torch.cat([t.indices for t in back]))
    start = time.perf_counter()
    recons = tok.decode(dataclasses.replace(stored, indices=stored.indices.to(device)))
    _sync(device)
    decode_s = time.perf_counter() - start
    return Coded(recons.float().cpu(), [len(data) for data in files], encode_s, decode_s,
                 tokens=stored)


class TokenizerSetting:
    """`tok` at `num_tokens` (None: the count the image size gives), through real .vtok files:
    entropy-coded where its folder has a token prior, else raw."""

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
        coded = code_through_files(self.tok, images, self.num_tokens,
                                   self.coder or self.raw_coder)
        tokens = coded.tokens
        coded.raw_bytes = (coded.file_bytes if self.coder is None else
                           [len(f) for f in vtok_files(tokens, self.tok.codebook_size,
                                                       self.raw_coder)])
        per_image = tokens.indices[0].numel() * math.log2(self.tok.codebook_size)
        coded.index_bits = [per_image] * len(tokens.indices)
        return coded

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
