"""Making a token prior for any tokenizer: tokenize random crops of a set of images (random
clips of a set of videos, for a video tokenizer), fit the float prior by maximum likelihood,
convert it to integers and measure the real coded sizes against raw packing on held-out images
(clips)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from vtok.codec.entropy import EntropyCoder
from vtok.codec.intprior import MAX_CODEBOOK, IntegerPrior, quantize_prior
from vtok.codec.prior import PriorConfig, train_prior
from vtok.models.base import Tokenizer

HELD_OUT_FRAMES = 33  # a held-out video is measured on its first 33 frames (9 latent at x4)


@dataclass
class PriorFit:
    """What a fit measured on the held-out tokens (bits per image, or per clip): on average,
    and per item in `items` (name, tokens, raw_bits, coded_bits)."""

    train_crops: int
    held_out_images: int
    tokens_per_image: float
    raw_bits: float
    coded_bits: float  # real range-coded payloads under the integer prior
    float_ideal_bits: float  # -log2 p under the float prior before conversion
    steps: int
    minutes: float
    items: list[dict] = field(default_factory=list)
    unit: str = "image"  # or "clip"

    @property
    def saving(self) -> float:
        return 1 - self.coded_bits / self.raw_bits

    @property
    def conversion_cost(self) -> float:
        """Extra bits of the integer prior's real payloads over the float prior's ideal."""
        return self.coded_bits / self.float_ideal_bits - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "saving_vs_raw": self.saving,
                "conversion_cost": self.conversion_cost}


def tokens_of(tok: Tokenizer, images: Tensor, batch_size: int = 16,
              progress: bool = False) -> Tensor:
    """`[N, *token_shape]` token indices of `[N, 3, H, W]` images or `[N, T, 3, H, W]` clips
    (full length)."""
    from tqdm import tqdm

    batches = images.split(batch_size)
    return torch.cat([tok.encode(b).indices for b in tqdm(batches, desc="tokenize",
                                                          disable=not progress)])


def prior_config(tok: Tokenizer, tokens: Tensor) -> PriorConfig:
    """A grid prior for `[N, h, w]` tokens, a sequence prior for `[N, k]` ones, a grid3d prior
    for the latent frames `[N, t, h, w]` of a video tokenizer."""
    if tokens.dim() == 4:
        return PriorConfig(tok.codebook_size, "grid3d", tok.tokenizer_id)
    if tokens.dim() == 3:
        return PriorConfig(tok.codebook_size, "grid", tok.tokenizer_id)
    if tokens.dim() == 2:
        return PriorConfig(tok.codebook_size, "sequence", tok.tokenizer_id,
                           max_len=tokens.shape[1], context=8)
    raise ValueError(f"a token prior codes one index per token in a grid, a sequence or latent "
                     f"frames; this tokenizer gives tokens of shape {tuple(tokens.shape[1:])}")


def prior_images(data: Path | None, held_out: Path | None, crops: int, crop_size: int,
                 seed: int = 0) -> tuple[Tensor, list[Tensor]]:
    """(training crops `[crops, 3, S, S]` with zoom-out, held-out images) for fitting a prior:
    crops of `data` (default: the default photos' train split); held out, the images of
    `held_out`, else the val photos' centre crops with the default data, else other crops of
    `data`."""
    from vtok.data.datasets import RandomCrops, center_crop, image_items
    from vtok.data.images import read_image
    from vtok.data.photos import photo_paths

    source = data if data is not None else photo_paths("train")
    found = RandomCrops(image_items(source), crop_size, seed=seed + 1, min_scale=0.5)
    train = torch.stack([found[i] for i in range(crops)])
    if held_out is not None:
        held = [item.read() for item in image_items(held_out)]
    elif data is None:
        held = [center_crop(read_image(p), crop_size) for p in photo_paths("val")]
    else:
        other = RandomCrops(found.items, crop_size, seed=seed + 1000)
        held = [other[i] for i in range(min(32, max(8, crops // 25)))]
    return train, held


def fit_prior(tok: Tokenizer, train: Tensor, held_out: Sequence[Tensor], steps: int = 2000,
              seed: int = 0, progress: bool = False, names: Sequence[str] | None = None,
              config: PriorConfig | None = None, hidden: int | None = None
              ) -> tuple[IntegerPrior, PriorFit]:
    """Fit and convert a prior on `train` crops `[N, 3, S, S]` (clips `[N, T, 3, S, S]`);
    measure on `held_out` images `[3, H, W]` (clips `[T, 3, H, W]`), any size, named by
    `names` (default: their numbers) in the report. `config`: the prior's shape (default:
    `prior_config`, with `hidden` units when given: fewer make a smaller file)."""
    if not held_out:
        raise ValueError("fit_prior needs at least one held-out image to measure on")
    names = [str(i) for i in range(len(held_out))] if names is None else list(names)
    if len(names) != len(held_out):
        raise ValueError(f"{len(names)} names for {len(held_out)} held-out items")
    started = time.time()
    clips = train.dim() == 5
    train_tokens = tokens_of(tok, train, batch_size=2 if clips else 16, progress=progress)
    config = config or prior_config(tok, train_tokens)
    if hidden is not None:
        config = replace(config, hidden=hidden)
    # a batch of about as many tokens for clips (their latent frames) as for 16 images
    batch = max(1, 16 // train_tokens.shape[1]) if config.layout == "grid3d" else 16
    prior = train_prior(train_tokens, config, steps=steps, batch_size=batch, seed=seed,
                        progress=progress)
    integer = quantize_prior(prior, train_tokens)
    coder = EntropyCoder(integer)
    raw_bits = coded = ideal = 0.0
    count = 0
    items = []
    for name, image in zip(names, held_out):
        indices = tok.encode(image[None]).indices
        raw = indices.numel() * math.ceil(math.log2(tok.codebook_size))
        bits = len(coder.encode(indices[0].numpy())) * 8
        items.append({"name": name, "tokens": indices.numel(), "raw_bits": raw,
                      "coded_bits": bits, "saving_vs_raw": 1 - bits / raw})
        raw_bits, coded, count = raw_bits + raw, coded + bits, count + indices.numel()
        ideal += prior.bits(indices).item()
    n = len(held_out)
    report = PriorFit(len(train), len(held_out), count / n, raw_bits / n, coded / n, ideal / n,
                      steps, (time.time() - started) / 60, items, "clip" if clips else "image")
    return integer, report


def prior_clips(data: Path | None, held_out: Path | None, clips: int, size: int, frames: int,
                seed: int = 0) -> tuple[Tensor, list[Tensor], list[str]]:
    """(training clips `[clips, frames, 3, S, S]` with zoom-out, held-out clips, their names)
    for fitting a video tokenizer's prior: random clips of the videos in `data` (default: the
    default clips' train split); held out, the first HELD_OUT_FRAMES frames (centre crops) of
    each video in `held_out`, else of the val clips with the default data, else other random
    clips of `data`."""
    from vtok.data.clips import clip_paths
    from vtok.data.video_datasets import RandomClips, video_items

    source = data if data is not None else clip_paths("train")
    found = RandomClips(video_items(source), size, frames, seed=seed + 1, min_scale=0.5)
    train = torch.stack([found[i] for i in range(clips)])
    if held_out is not None or data is None:
        paths = [item.path for item in video_items(held_out)] if held_out is not None else \
            clip_paths("val")
        return train, [_first_frames(p, size) for p in paths], [p.stem for p in paths]
    other = RandomClips(found.items, size, HELD_OUT_FRAMES, seed=seed + 1000)
    count = min(8, max(2, clips // 25))
    return train, [other[i] for i in range(count)], [f"clip {i}" for i in range(count)]


def _first_frames(path: Path, size: int) -> Tensor:
    """Centre crops `[T, 3, S, S]` of the first HELD_OUT_FRAMES (or fewer) frames of a video."""
    from vtok.data.datasets import center_crop
    from vtok.data.video import read_frames

    frames = [center_crop(f, size).clone() for f in read_frames(path,
                                                                max_frames=HELD_OUT_FRAMES)]
    if not frames:
        raise ValueError(f"{path}: no frame could be read")
    return torch.stack(frames)


def check_codable(tok: Tokenizer) -> None:
    """Refuse, before any work, tokenizers whose tokens a prior cannot code."""
    if tok.quantizer.num_codebooks != 1:
        raise ValueError(f"token priors code one index per token; this tokenizer has "
                         f"{tok.quantizer.num_codebooks} (use raw coding)")
    if not 2 <= tok.codebook_size <= MAX_CODEBOOK:
        raise ValueError(f"token priors code 2 to {MAX_CODEBOOK} codes; this tokenizer has "
                         f"{tok.codebook_size} (use raw coding)")


def write_prior(prior: IntegerPrior, directory: Path, report: PriorFit, force: bool) -> None:
    """Save beside the tokenizer's weights; an existing prior is replaced only with `force`."""
    from vtok.codec.tokens_file import PRIOR_STEM, has_prior

    if has_prior(directory) and not force:
        raise FileExistsError(f"{directory} already has a token prior (use --force to replace)")
    prior.save(directory, PRIOR_STEM, extra={"fit": report.to_dict()})


def summary(report: PriorFit) -> str:
    unit = report.unit
    return (f"held-out: {report.held_out_images} {unit}s, {report.tokens_per_image:.0f} tokens "
            f"each; raw {report.raw_bits:.0f} bits, entropy coded {report.coded_bits:.0f} "
            f"bits per {unit} ({report.saving:.1%} fewer; the float prior's ideal length "
            f"{report.float_ideal_bits:.0f}, so the integer conversion and the range coder's "
            f"termination together cost "
            f"{report.conversion_cost:+.2%})"
            + "".join(f"; {i['name']}: {i['raw_bits']} -> {i['coded_bits']} bits "
                      f"({i['saving_vs_raw']:.1%} fewer)" for i in report.items
                      if unit == "clip"))
