"""Tokens <-> .vtok bytes and files: one entry per image, any coder, tokenizer ids checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vtok.codec.container import Coder, ImageTokens, VtokFile, VtokFormatError
from vtok.codec.raw import RawCoder
from vtok.files import atomic_write
from vtok.models.base import Tokenizer, Tokens

PRIOR_STEM = "prior"  # prior.json + prior.safetensors beside a tokenizer's weights


def has_prior(directory: Path) -> bool:
    return (directory / f"{PRIOR_STEM}.json").exists()


def make_coder(coding: str, tok: Tokenizer, directory: Path | None) -> Coder:
    """The coder for `coding` ("raw" or "entropy"); entropy coding uses the token prior kept
    in the tokenizer's folder and refuses one made for another tokenizer."""
    if coding == "raw":
        return RawCoder(tok.codebook_size)
    if coding != "entropy":
        raise ValueError(f"unknown coding {coding!r} (raw or entropy)")
    from vtok.codec.entropy import EntropyCoder
    from vtok.codec.intprior import IntegerPrior

    if directory is None or not has_prior(directory):
        raise ValueError(f"entropy coding needs a token prior ({PRIOR_STEM}.json and "
                         f"{PRIOR_STEM}.safetensors) in the tokenizer folder {directory}; "
                         f"use --coding raw or make one with `vtok prior {directory}`")
    prior = IntegerPrior.load(directory, PRIOR_STEM)
    if prior.config.codebook_size != tok.codebook_size:
        raise ValueError(f"the token prior in {directory} models {prior.config.codebook_size} "
                         f"codes; the tokenizer has {tok.codebook_size}")
    if prior.config.tokenizer_id != tok.tokenizer_id:
        raise ValueError(f"the token prior in {directory} was trained for tokenizer "
                         f"{prior.config.tokenizer_id}, not {tok.tokenizer_id}")
    if prior.config.layout != token_layout(tok):
        raise ValueError(f"the token prior in {directory} models {prior.config.layout} tokens; "
                         f"this tokenizer makes {token_layout(tok)} tokens (remake the prior "
                         f"with `vtok prior {directory} --force`)")
    return EntropyCoder(prior)


def token_layout(tok: Tokenizer) -> str:
    """The prior layout of a tokenizer's tokens: "grid3d" for the latent frames of a video
    tokenizer, "sequence" for a count that does not grow with the image, else "grid"."""
    if tok.codes_clips:
        return "grid3d"
    return "sequence" if tok.max_tokens is not None else "grid"


def to_vtok(tokens: Sequence[Tokens], codebook_size: int, coder: Coder,
            alpha: Sequence[bool] | None = None, names: Sequence[str] | None = None) -> VtokFile:
    """A VtokFile holding every image of `tokens` (a list of batches, one tokenizer), with
    per image whether alpha was composited and a name (its source file's stem)."""
    if not tokens:
        raise ValueError("no tokens to store")
    ids = {t.tokenizer_id for t in tokens}
    if len(ids) != 1:
        raise ValueError(f"tokens of several tokenizers cannot share a file: {sorted(ids)}")
    first = tokens[0]
    depth = first.indices.shape[-1] if first.indices.dim() == len(first.token_shape) + 2 else 1
    out = VtokFile(first.tokenizer_id, codebook_size, coder.name, depth,
                   prior_id=getattr(coder, "prior_id", None))
    for batch in tokens:
        for indices in batch.indices.cpu().numpy():
            out.images.append(ImageTokens(tuple(batch.image_size), tuple(batch.token_shape),
                                          coder.encode(indices), frames=batch.frames,
                                          fps=tuple(batch.fps)))
    flags = list(alpha) if alpha is not None else [False] * len(out.images)
    if len(flags) != len(out.images):
        raise ValueError(f"{len(flags)} alpha flags for {len(out.images)} images")
    labels = list(names) if names is not None else [""] * len(out.images)
    if len(labels) != len(out.images):
        raise ValueError(f"{len(labels)} names for {len(out.images)} images")
    for image, flag, label in zip(out.images, flags, labels):
        image.alpha, image.name = bool(flag), label
    return out


def check_file_tokens(vfile: VtokFile, tokenizer: Tokenizer) -> None:
    """VtokFormatError naming the first image whose size, frame count, token shape, codebook
    or depth `tokenizer` could not have produced (checked before any payload is decoded)."""
    for i, image in enumerate(vfile.images):
        try:
            tokenizer.check_tokens(image.image_size, image.token_shape, vfile.depth,
                                   vfile.codebook_size, frames=image.frames)
        except ValueError as err:
            raise VtokFormatError(f"image {i}: {err}") from None


def from_vtok(vfile: VtokFile, coder: Coder,
              tokenizer: Tokenizer | str | None = None) -> list[Tokens]:
    """One `Tokens` (batch of 1) per image.

    With a tokenizer id, refuse another tokenizer's file naming both ids. With the Tokenizer
    itself, also refuse, before any payload is decoded, images whose size, token shape,
    codebook or depth it could not have produced (VtokFormatError naming the image). A payload
    the coder cannot read raises VtokFormatError.
    """
    tokenizer_id = tokenizer.tokenizer_id if isinstance(tokenizer, Tokenizer) else tokenizer
    if tokenizer_id is not None and tokenizer_id != vfile.tokenizer_id:
        raise ValueError(f"these tokens were made by tokenizer {vfile.tokenizer_id}; "
                         f"the tokenizer given is {tokenizer_id}")
    if coder.name != vfile.coding:
        raise ValueError(f"the file is {vfile.coding}-coded; a {coder.name} coder cannot read it")
    if vfile.coding == "entropy":
        if vfile.prior_id is None:
            raise ValueError(f"format version {vfile.version} entropy-coded files were coded "
                             f"with a float prior that vtok no longer ships; re-encode the "
                             f"images (raw-coded version 1 files still decode)")
        if coder.prior_id != vfile.prior_id:
            raise ValueError(f"these tokens were entropy-coded with prior {vfile.prior_id}; "
                             f"the prior beside the tokenizer is {coder.prior_id}")
    if isinstance(tokenizer, Tokenizer):
        check_file_tokens(vfile, tokenizer)
    out = []
    for i, image in enumerate(vfile.images):
        try:
            values = coder.decode(image.payload, vfile.shape(image))
        except ValueError as err:
            raise VtokFormatError(f"image {i}: bad payload ({err})") from None
        indices = torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))[None]
        out.append(Tokens(indices, image.token_shape, image.image_size, vfile.tokenizer_id,
                          image.num_tokens, image.frames, image.fps))
    return out


def write_vtok(path: str | Path, vfile: VtokFile, force: bool = False) -> Path:
    """Write atomically; an existing file is only replaced with `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    data = vfile.to_bytes()
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
