"""Start a causal video tokenizer from an image tokenizer's weights (inflation, as MAGVIT-v2
and Cosmos start their 3D models from 2D ones).

A `conv3d` tokenizer with the same widths, blocks and quantizer as a `conv2d` one takes its
weights as follows: every 3x3 kernel becomes the newest time tap of its 3D kernel (the older
taps are zero), and every time-only conv of a factorized block starts as the identity on the
newest frame. The inflated model then codes each frame as the image tokenizer does, with time
downsampling keeping the last frame of each group and upsampling repeating it: a still image
gives the image tokenizer's tokens and pixels, and training on clips starts from there. (With
a VQ codebook the video tokenizer's default `stick` keeps some codes from one latent frame to
the next; set `stick = 0` for the image tokenizer's nearest codes on every frame.)
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# (image architecture, video architecture) pairs whose weights inflate
INFLATES = {("conv2d", "conv3d")}


def inflates(source_architecture: str, target_architecture: str) -> bool:
    """Whether a tokenizer of `source_architecture` starts one of `target_architecture` by
    inflation (`inflated_state`)."""
    return (source_architecture, target_architecture) in INFLATES


# conv3d key (the part after "<encoder|decoder>.layers.N.") -> conv2d key, tried in order
_RENAMES = (
    (re.compile(r"^norm1\."), "body.0."),
    (re.compile(r"^norm2\."), "body.3."),
    (re.compile(r"^conv1\.(space\.)?conv\."), "body.2."),
    (re.compile(r"^conv2\.(space\.)?conv\."), "body.5."),
    (re.compile(r"^conv\.conv\."), "conv."),  # Downsample3d / Upsample3d
    (re.compile(r"^(space\.)?conv\."), ""),  # a plain conv at the top of the list
)
_TIME_ONLY = re.compile(r"(^|\.)time\.conv\.(weight|bias)$")  # a factorized block's time conv
_LAYER = re.compile(r"^((?:encoder|decoder)\.layers\.\d+\.)(.*)$")


def image_key(key: str) -> str | None:
    """The conv2d state key that a conv3d state key takes its weights from; None for a time
    conv that has no counterpart (it starts as the identity)."""
    match = _LAYER.match(key)
    if match is None:
        return key
    prefix, rest = match.groups()
    if _TIME_ONLY.search(rest):
        return None
    for pattern, replacement in _RENAMES:
        if pattern.match(rest):
            return prefix + pattern.sub(replacement, rest, count=1)
    return key


def _identity_in_time(shape: torch.Size, name: str) -> Tensor:
    """A `[C, C, k, 1, 1]` weight that passes the newest frame through, or a zero bias."""
    if len(shape) == 1:
        return torch.zeros(shape)
    if len(shape) != 5 or shape[0] != shape[1] or shape[3:] != (1, 1):
        raise ValueError(f"{name}: a time-only conv of shape {tuple(shape)} cannot start as "
                         f"the identity")
    weight = torch.zeros(shape)
    weight[:, :, -1, 0, 0] = torch.eye(shape[0])
    return weight


def inflated_state(image_state: dict[str, Tensor], video_state: dict[str, Tensor],
                   source: str = "the image tokenizer") -> dict[str, Tensor]:
    """A state dict for a conv3d model (whose own state gives the keys and shapes) from a
    conv2d model's state dict. ValueError naming the first keys that do not fit."""
    out: dict[str, Tensor] = {}
    problems: list[str] = []
    for key, target in video_state.items():
        old = image_key(key)
        if old is None:
            out[key] = _identity_in_time(target.shape, key)
            continue
        if old not in image_state:
            problems.append(f"{key} has no counterpart {old!r} in {source}")
            continue
        value = image_state[old]
        if value.ndim == 4 and target.ndim == 5:  # a 2D kernel becomes the newest time tap
            kernel = torch.zeros(target.shape, dtype=value.dtype)
            if kernel.shape[:2] + kernel.shape[3:] != value.shape:
                problems.append(f"{key}: {tuple(target.shape)} cannot hold {old} "
                                f"{tuple(value.shape)}")
                continue
            kernel[:, :, -1] = value
            value = kernel
        if value.shape != target.shape:
            problems.append(f"{key} {tuple(target.shape)} != {old} {tuple(value.shape)}")
            continue
        out[key] = value.clone()
    used = {image_key(k) for k in video_state}
    unused = [k for k in image_state if k not in used]
    if unused:
        problems.append(f"{source} has weights the video model has no place for: "
                        f"{', '.join(unused[:3])}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"cannot inflate {source} into this conv3d model: "
                         f"{'; '.join(problems[:3])}{more}; the widths, blocks and quantizer "
                         f"must match")
    return out
