"""A video tokenizer against classic video codecs on the same clips: reading and cropping the
clips that every method codes, and scoring one method over all of them (one row). Shared by
benchmarks/video_codecs.py and the video section of `vtok demo`.

bpp: file bits / (frames x height x width), summed over clips. PSNR and SSIM (8-bit RGB) and
LPIPS-Alex are per frame, averaged over every frame of every clip; flicker (`FLICKER`) is
averaged over frame transitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vtok.data.video import VideoReadError, read_clip
from vtok.eval import video_codecs as vc

FLICKER = ("mean over frame transitions t, pixels and RGB channels of |(r_t - r_{t-1}) - "
           "(s_t - s_{t-1})| on 0..255, r the reconstruction, s the source")
KEYS = ("psnr", "ssim", "lpips_alex", "flicker")
DEFINITIONS = {"bpp": "file bytes x 8 / (frames x height x width), over all clips",
               "psnr": "8-bit RGB per frame, mean over frames",
               "ssim": "8-bit RGB, Gaussian 11/1.5, per frame, mean over frames",
               "lpips_alex": "LPIPS v0.1 AlexNet per frame, mean over frames",
               "flicker": FLICKER}


def spatial_factor(tok) -> int:
    """Pixels per token side, from the token grid of a 1024x1024 frame."""
    return 1024 // tok.token_shape((1024, 1024))[-1]


def grid_multiple(tok) -> int:
    """What frame sides must be multiples of for `tok` and for 4:2:0 video alike."""
    return math.lcm(2, spatial_factor(tok))


def prepare(frames: torch.Tensor, size: tuple[int, int] | None, multiple: int,
            max_side: int | None = None) -> np.ndarray:
    """float `[T, 3, H, W]` -> uint8 `[T, h, w, 3]`: scaled to cover `size` (antialiased)
    and centre-cropped to it; without `size`, centre-cropped to multiples of `multiple`, and
    with `max_side` to at most that a side, after scaling to cover `max_side` x `max_side`
    when both sides reach it."""
    h, w = frames.shape[-2:]
    if size is None and max_side is not None:
        if min(h, w) >= max_side:
            size = (max_side, max_side)
        else:
            top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
            frames = frames[..., top : top + max_side, left : left + max_side]
            h, w = frames.shape[-2:]
    if size is not None:
        scale = max(size[0] / h, size[1] / w)
        if scale != 1:
            frames = torch.nn.functional.interpolate(
                frames, size=(max(size[0], round(h * scale)), max(size[1], round(w * scale))),
                mode="bilinear", antialias=True, align_corners=False)
        th, tw = size
    else:
        th, tw = h // multiple * multiple, w // multiple * multiple
    h, w = frames.shape[-2:]
    top, left = (h - th) // 2, (w - tw) // 2
    return vc.as_uint8(frames[..., top : top + th, left : left + tw].clamp(0, 1))


def read_clips(paths: list[Path], frames: int, size: tuple[int, int] | None, multiple: int,
               max_side: int | None = None, skipped: list[str] | None = None) -> list[dict]:
    """The first `frames` frames of each clip, cropped by `prepare`, as dicts with "name",
    "frames" (uint8 `[T, H, W, 3]`) and "fps". A clip that cannot be read (or is smaller than
    one `multiple`) raises ValueError, or, when `skipped` is a list, is left out and why is
    appended to it."""
    clips = []
    for path in paths:
        try:
            clip = read_clip(path, max_frames=frames)
            if clip.problem:
                raise VideoReadError(f"{path}: {clip.problem}")
            pixels = prepare(clip.frames, size, multiple, max_side)
            if min(pixels.shape[1:3]) < multiple:
                raise ValueError(f"{path}: too small for a {multiple}-pixel grid")
        except ValueError as err:  # VideoReadError included
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        clips.append({"name": path.name, "frames": pixels,
                      "fps": Fraction(clip.fps or 25).limit_denominator(1 << 20)})
    return clips


def measure(method: str, setting: str, clips: list[dict], code: Callable[[dict], vc.Coded],
            lpips) -> dict:
    """One row: `code(clip)` -> Coded for every clip, scored and summed; "clips" holds each
    clip's bytes, bpp and scores."""
    per_clip, scores = [], {k: [] for k in KEYS}
    bits = pixels = frames = encode_s = decode_s = 0
    for clip in tqdm(clips, desc=f"{method} {setting}", unit="clip", leave=False,
                     disable=None):
        coded = code(clip)
        s = vc.frame_scores(clip["frames"], coded.frames, lpips)
        for k in KEYS:
            scores[k].append(s[k])
        t, h, w = clip["frames"].shape[:3]
        bits, pixels, frames = bits + len(coded.data) * 8, pixels + t * h * w, frames + t
        encode_s, decode_s = encode_s + coded.encode_seconds, decode_s + coded.decode_seconds
        per_clip.append({"clip": clip["name"], "bytes": len(coded.data), "bpp": coded.bpp(),
                         **{k: _mean([s[k]]) for k in KEYS}, "decoder": coded.decoder})
    return {"method": method, "setting": setting, "bpp": bits / pixels,
            **{k: _mean(v) for k, v in scores.items()},
            "encode_fps": frames / encode_s, "decode_fps": frames / decode_s, "clips": per_clip}


def _mean(values: list[np.ndarray]) -> float:
    joined = np.concatenate(values)
    return float(joined.mean()) if joined.size else math.nan


HEADER = (f"{'method':24s} {'setting':9s} {'bpp':>7s} {'PSNR':>6s} {'SSIM':>6s} {'LPIPS':>6s} "
          f"{'flicker':>7s} {'enc f/s':>8s} {'dec f/s':>8s}")


def show(r: dict) -> str:
    """One row as a line under `HEADER`."""
    return (f"{r['method']:24s} {r['setting']:9s} {r['bpp']:7.4f} {r['psnr']:6.2f} "
            f"{r['ssim']:6.3f} {r['lpips_alex']:6.3f} {r['flicker']:7.2f} "
            f"{r['encode_fps']:8.1f} {r['decode_fps']:8.1f}")
