"""Causal 3D convolution blocks for video (MAGVIT-v2, Yu et al. 2023; Cosmos, NVIDIA 2025).

Feature maps are `[B, C, T, H, W]`. Every layer is causal in time: output frame t depends on
input frames <= t (or <= s*t for a layer of time stride s), never on a later one.

- Time is padded on the past side only, by repeating the first frame: frame 0 is coded as if
  the scene had always been still, so a one-frame video (a still image) sees no zeros.
- Norms and attention work on each frame alone (GroupNorm statistics over one frame's pixels),
  since statistics over the whole clip would let later frames change earlier ones.
- A layer that mixes frames takes an optional `cache` (a dict the caller keeps between calls):
  with one, the layer keeps the input frames its next call still needs, so a clip fed in
  consecutive chunks gives the same output as the whole clip at once. Without one, the clip
  is whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.nn.blocks import AttentionBlock2d, group_norm

Cache = dict  # layer -> the state it carries to the next chunk of the same clip


class CausalLayer(nn.Module):
    """A layer that mixes frames: `forward(x, cache=None)`."""

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def run(layers: nn.ModuleList, x: Tensor, cache: Cache | None) -> Tensor:
    """Apply `layers` in order, handing `cache` to those that mix frames."""
    for layer in layers:
        x = layer(x, cache) if isinstance(layer, CausalLayer) else layer(x)
    return x


class CausalConv3d(CausalLayer):
    """Conv3d whose time axis sees only the past: `time_kernel - 1` frames of padding before
    the clip (the first frame repeated), none after. With time stride s, output frame j sees
    input frames s*j - time_kernel + 1 .. s*j, so output 0 sees input frame 0 alone.
    Space: zero padding of half the kernel, as in a 2D conv."""

    def __init__(self, in_ch: int, out_ch: int, time_kernel: int = 3, space_kernel: int = 3,
                 time_stride: int = 1, space_stride: int = 1) -> None:
        super().__init__()
        self.time_kernel, self.time_stride = time_kernel, time_stride
        self.conv = nn.Conv3d(in_ch, out_ch, (time_kernel, space_kernel, space_kernel),
                              stride=(time_stride, space_stride, space_stride),
                              padding=(0, space_kernel // 2, space_kernel // 2))

    @property
    def weight(self) -> Tensor:
        return self.conv.weight

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        k, s = self.time_kernel, self.time_stride
        if k == 1 and s == 1:
            return self.conv(x)
        past = cache.get(self) if cache is not None else None
        if past is None:  # the clip's start: repeat its first frame into the past
            past = x[:, :, :1].expand(-1, -1, k - 1, -1, -1)
        x = torch.cat([past, x], 2)
        n = (x.shape[2] - k) // s + 1 if x.shape[2] >= k else 0
        if cache is not None:  # the frames the next output still needs (clone: free the rest)
            cache[self] = x[:, :, n * s :].clone()
        if n == 0:
            raise ValueError(f"a chunk of {x.shape[2] - past.shape[2]} frames is too short for "
                             f"a time stride of {s}: chunks must end on a stride boundary")
        return self.conv(x[:, :, : (n - 1) * s + k])


class FactorizedConv3d(CausalLayer):
    """A 3x3 conv on each frame, then a causal conv over 3 frames at each pixel (Cosmos-style):
    about 12 in*out weights instead of 27, and much less compute."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.space = CausalConv3d(in_ch, out_ch, time_kernel=1)
        self.time = CausalConv3d(out_ch, out_ch, space_kernel=1)

    @property
    def weight(self) -> Tensor:
        return self.time.weight

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        return self.time(self.space(x), cache)


def conv3(in_ch: int, out_ch: int, factorized: bool) -> CausalLayer:
    """A causal 3x3x3 conv, or its factorized (3x3 in space, then 3 in time) form."""
    return FactorizedConv3d(in_ch, out_ch) if factorized else CausalConv3d(in_ch, out_ch)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm of each frame on its own (statistics over one frame's pixels, never across
    time). Same parameters as `group_norm(channels)`."""

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = F.group_norm(x.transpose(1, 2).reshape(b * t, c, h, w), self.num_groups,
                         self.weight, self.bias, self.eps)
        return y.view(b, t, c, h, w).transpose(1, 2)


def frame_group_norm(channels: int) -> FrameGroupNorm:
    return FrameGroupNorm(group_norm(channels).num_groups, channels, eps=1e-6)


class FrameAttention(AttentionBlock2d):
    """Self-attention over the pixels of each frame (never across frames)."""

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.view(b, t, c, h, w).transpose(1, 2)


class ResBlock3d(CausalLayer):
    """norm-act-conv twice with a residual path (1x1x1 conv when channels change)."""

    def __init__(self, in_ch: int, out_ch: int, factorized: bool = False) -> None:
        super().__init__()
        self.norm1, self.conv1 = frame_group_norm(in_ch), conv3(in_ch, out_ch, factorized)
        self.norm2, self.conv2 = frame_group_norm(out_ch), conv3(out_ch, out_ch, factorized)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)), cache)


class Downsample3d(CausalLayer):
    """Halve height and width with a strided 3x3 conv on each frame; with `time`, also halve
    the frames with a causal stride-2 conv over 3 frames: 1 + 2n frames become 1 + n, output
    frame j seeing input frames 2j-2 .. 2j (frame 0 alone for j = 0)."""

    def __init__(self, ch: int, time: bool) -> None:
        super().__init__()
        self.conv = CausalConv3d(ch, ch, time_kernel=3 if time else 1,
                                 time_stride=2 if time else 1, space_stride=2)

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        return self.conv(x, cache)


class Upsample3d(CausalLayer):
    """Double height and width (nearest neighbour, then a conv); with `time`, also double the
    frames but the first: each frame is repeated twice, the clip's first frame once (1 + n
    frames become 1 + 2n), then a causal conv over 3 frames sets the copies apart."""

    def __init__(self, ch: int, time: bool) -> None:
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(ch, ch, time_kernel=3 if time else 1)

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        scale = (2.0 if self.time else 1.0, 2.0, 2.0)
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
        if self.time and (cache is None or self not in cache):  # the clip's first frame
            x = x[:, :, 1:]
            if cache is not None:
                cache[self] = True
        return self.conv(x, cache)
