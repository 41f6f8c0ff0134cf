"""What the tokenizer loop trains and validates on.

A tokenizer of still images trains on random crops of images (`RandomCrops`). A tokenizer of
clips (`Tokenizer.codes_clips`) trains on random clips of videos (`RandomClips`: `clip_frames`
frames, every `frame_stride`-th, one crop and flip per clip), and every `image_every`-th step
on one-frame clips instead: the data's images and single frames of its videos. A share
`photo_motion` of the clips are photos seen through a random camera move (`vtok.data.motion`).
Unreadable or truncated files are skipped with a warning naming them and counted in `skipped`.

The validation set is fixed: center crops of images, and of the first `clip_frames` frames of
each video (`validation_set`); `validate` scores a model on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vtok.data.clips import clip_paths
from vtok.data.datasets import ImageItem, RandomCrops, center_crop, image_items
from vtok.data.images import ImageReadError
from vtok.data.motion import PhotoMotionClips
from vtok.data.photos import photo_paths
from vtok.data.video import VideoReadError, read_frames
from vtok.data.video_datasets import RandomClips, VideoItem, clip_items
from vtok.models.base import eval_mode
from vtok.train.config import TrainConfig

VAL_KEYS = ("val_l1", "val_psnr", "val_lpips")


def training_data(config: TrainConfig, clips: bool, per_step: int) -> RandomCrops | TrainingClips:
    """The training samples, indexed by sample number; `per_step`: samples a step takes over
    all ranks. `clips`: the model codes clips (then `config.data` holds videos)."""
    if not clips:
        items = image_items(config.data if config.data else photo_paths("train", config.cache))
        return RandomCrops(items, config.crop_size, seed=config.seed, min_scale=config.min_scale)
    source = config.data if config.data else clip_paths("train", config.cache)
    return TrainingClips(clip_items(source), config, per_step)


class TrainingClips(Dataset):
    """Sample n of a run on clips: a clip `[clip_frames, 3, S, S]`, or a one-frame clip
    `[1, 3, S, S]` when its step (n // per_step) is an `image_every`-th one. `skipped`: the
    unreadable videos and images, by name, with the reason."""

    def __init__(self, items: Sequence[VideoItem | ImageItem], config: TrainConfig,
                 per_step: int) -> None:
        frames = config.clip_frames
        stills = sum(isinstance(item, ImageItem) for item in items)
        if frames > 1 and stills == len(items):
            raise ValueError(f"TrainConfig.data: {config.data or 'the default clips'} holds "
                             f"images only: no video to cut clips of {frames} frames from "
                             f"(images are one-frame clips: set clip_frames to 1)")
        self.per_step, self.seed = per_step, config.seed
        self.every = config.image_every if frames > 1 else 0
        if frames > 1 and stills and not self.every:
            warnings.warn(f"{stills} images in the data left out: set image_every to train on "
                          f"them as one-frame clips every n-th step", stacklevel=2)
        options = dict(size=config.crop_size, seed=config.seed, min_scale=config.min_scale)
        with warnings.catch_warnings():  # said above, with the option that uses them
            warnings.filterwarnings("ignore", message=r"\d+ images left out")
            self.clips = RandomClips(items, frames=frames, stride=config.frame_stride,
                                     **options)
        self.stills = RandomClips(items, frames=1, **options) if self.every else None
        self.share = config.photo_motion if frames > 1 else 0.0
        self.motion = None
        if self.share:
            photos = config.motion_data or photo_paths("train", config.cache)
            self.motion = PhotoMotionClips(image_items(photos), frames=frames, **options)

    def still_step(self, step: int) -> bool:
        """Whether `step` (0-based) trains on one-frame clips."""
        return self.stills is not None and (step + 1) % self.every == 0

    def __getitem__(self, n: int) -> Tensor:
        if self.stills is not None and self.still_step(n // self.per_step):
            return self.stills[n]
        if self.motion is not None and self.moving_photo(n):
            return self.motion[n]
        return self.clips[n]

    def moving_photo(self, n: int) -> bool:
        """Whether clip n is made from a photo by a camera move (drawn from the seed and n)."""
        gen = torch.Generator().manual_seed(hash((self.seed, 7142, n)) & ((1 << 62) - 1))
        return float(torch.rand((), generator=gen)) < self.share

    @property
    def skipped(self) -> dict[str, str]:
        return {**self.clips.skipped, **(self.stills.skipped if self.stills else {}),
                **(self.motion.skipped if self.motion else {})}


def has_validation(config: TrainConfig, clips: bool) -> bool:
    """Whether the run validates: on `val_data`, or the default clips' val split when a
    tokenizer of clips trains on the default clips."""
    return config.val_data is not None or (clips and config.data is None)


def validation_set(config: TrainConfig, clips: bool) -> list[Tensor]:
    """The fixed validation items (see `has_validation`; empty when there are none):
    `crop_size` center crops of images `[3, S, S]`, or for a tokenizer of clips of each
    video's first `clip_frames` frames (every `frame_stride`-th) `[T, 3, S, S]` and of images
    as one-frame clips `[1, 3, S, S]`. Unreadable or too short files are skipped with a
    warning; ValueError when none is left."""
    if not has_validation(config, clips):
        return []
    source: str | list[Path] = config.val_data or clip_paths("val", config.cache)
    items = clip_items(source) if clips else image_items(source)
    kept = []
    for item in items:
        try:
            if isinstance(item, ImageItem):
                crop = center_crop(item.read(), config.crop_size).clone()
                kept.append(crop[None] if clips else crop)
            else:
                kept.append(first_frames(item.path, config))
        except (ImageReadError, VideoReadError) as err:
            warnings.warn(f"skipping validation file: {err}", stacklevel=2)
    if not kept:
        raise ValueError(f"no readable validation {'video or image' if clips else 'image'} in "
                         f"{source if isinstance(source, str) else source[0].parent}")
    return kept


def first_frames(path: Path, config: TrainConfig) -> Tensor:
    """Center crops of the first `clip_frames` frames of a video (every `frame_stride`-th),
    cut as they are decoded; VideoReadError when it has fewer."""
    frames = [center_crop(frame, config.crop_size).clone()
              for frame in read_frames(path, stride=config.frame_stride,
                                       max_frames=config.clip_frames)]
    if len(frames) < config.clip_frames:
        raise VideoReadError(f"{path}: too short: {len(frames)} frames at stride "
                             f"{config.frame_stride}, a clip takes {config.clip_frames}")
    return torch.stack(frames)


@torch.no_grad()
def validate(model: nn.Module, items: list[Tensor], lpips: nn.Module | None = None
             ) -> dict[str, float]:
    """`model`'s mean L1, PSNR (per item, on the clamped reconstruction) and LPIPS (per frame;
    NaN without `lpips`) on `items`, one at a time, in eval mode (no codebook updates)."""
    device = next(model.parameters()).device
    l1, psnr, perceptual, frames = 0.0, 0.0, 0.0, 0
    with eval_mode(model):
        for item in items:
            x = item[None].to(device)
            recon = model(x)["recon"].float().clamp(0, 1)
            l1 += (recon - x).abs().mean().item()
            mse = (recon - x).pow(2).mean().clamp_min(1e-10).item()
            psnr += 10 * math.log10(1 / mse)
            if lpips is not None:
                a, b = (recon[0], x[0]) if x.ndim == 5 else (recon, x)
                perceptual += lpips(a, b).sum().item()
                frames += a.shape[0]
    return {"val_l1": l1 / len(items), "val_psnr": psnr / len(items),
            "val_lpips": perceptual / frames if frames else math.nan}
