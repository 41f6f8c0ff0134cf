"""Clips made from still photos by a random camera move: a pan in a random direction and a
slow zoom, as a camera drifting over the scene.

Few real clips work offline, and a video tokenizer trained on five of them learns their
content. Photos bring many more scenes; the camera move brings the motion a video tokenizer
must code (sub-pixel shifts, scale changes, content entering at the border). Only rigid
motion: real clips are still needed for objects that move on their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vtok.data.datasets import ImageItem, RandomCrops

_TAG = 7141  # sets these draws apart from RandomCrops' (an int: str hashes vary by process)


class PhotoMotionClips(RandomCrops):
    """Random `frames` x `size` x `size` clips `[frames, 3, size, size]` in [0, 1], each a
    camera move over one photo, indexed by any integer i >= 0 (item i is always the same clip
    for a given seed, as for `RandomCrops`).

    The first frame is a crop of `size / scale` pixels (scale drawn in [min_scale, 1]),
    downscaled. The crop then moves by up to `max_speed` of its side a frame and its side
    changes by a factor of up to `max_zoom` (or its inverse) over the clip, kept inside the
    photo; the whole clip may be flipped left-right.
    """

    def __init__(self, items: Sequence[ImageItem], size: int, frames: int, seed: int = 0,
                 min_scale: float = 1.0, max_speed: float = 0.04,
                 max_zoom: float = 1.15) -> None:
        super().__init__(items, size, seed=seed, min_scale=min_scale)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if max_speed < 0 or max_zoom < 1:
            raise ValueError(f"max_speed must be >= 0 and max_zoom >= 1, got {max_speed} and "
                             f"{max_zoom}")
        self.frames, self.max_speed, self.max_zoom = frames, max_speed, max_zoom

    def __getitem__(self, i: int) -> torch.Tensor:
        index, image = self.readable(i)
        gen = torch.Generator().manual_seed(hash((self.seed, _TAG, i)) & ((1 << 62) - 1))

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=gen))

        if image.dtype == torch.uint8:
            image = image.float() / 255
        h, w = image.shape[-2:]
        side = min(h, w, round(self.size / uniform(self.min_scale, 1.0)))
        factor = self.size / side  # scale the photo so the first crop is `size` pixels
        if factor < 1:
            h, w = max(self.size, round(h * factor)), max(self.size, round(w * factor))
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", antialias=True,
                                  align_corners=False)[0]
        t = torch.linspace(0, 1, self.frames, dtype=torch.float64)
        zoom = math.exp(uniform(-1, 1) * math.log(self.max_zoom))
        sides = (self.size * zoom ** t).clamp(max=min(h, w))
        angle = uniform(0, 2 * math.pi)
        travel = uniform(0, self.max_speed) * self.size * (self.frames - 1)
        dx, dy = travel * math.cos(angle) * t, travel * math.sin(angle) * t
        cx, cy = _fit(dx, sides, w, uniform(0, 1)), _fit(dy, sides, h, uniform(0, 1))
        theta = torch.zeros(self.frames, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 1, 1] = sides / w, sides / h
        theta[:, 0, 2], theta[:, 1, 2] = 2 * cx / w - 1, 2 * cy / h - 1
        grid = F.affine_grid(theta.float(), [self.frames, 3, self.size, self.size],
                             align_corners=False)
        clip = F.grid_sample(image[None].expand(self.frames, -1, -1, -1), grid,
                             mode="bilinear", padding_mode="border", align_corners=False)
        if self.flip and uniform(0, 1) < 0.5:
            clip = clip.flip(-1)
        return clip.clamp(0, 1)


def _fit(shift: torch.Tensor, sides: torch.Tensor, length: int, where: float) -> torch.Tensor:
    """Centres along one axis for a move of `shift` (from 0) with crop `sides`, inside
    [0, length]; the move is shortened when no start fits it. `where` in [0, 1] picks the
    start among those that fit."""
    half = sides / 2
    for _ in range(20):
        low = float((half - shift).max())  # every crop's start >= 0
        high = float((length - half - shift).min())  # every crop's end <= length
        if low <= high:
            return low + where * (high - low) + shift
        shift = shift * 0.5
    return torch.full_like(shift, length / 2)
