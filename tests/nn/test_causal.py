"""Causal 3D layers: no output frame sees a later input frame, and feeding a clip in chunks
with a cache gives what the whole clip gives."""

import pytest
import torch
from torch import nn

from vtok.nn import (
    CausalConv3d,
    Downsample3d,
    FactorizedConv3d,
    FrameAttention,
    FrameGroupNorm,
    ResBlock3d,
    Upsample3d,
    frame_group_norm,
)


def _clip(frames, ch=4, seed=0):
    return torch.randn(2, ch, frames, 6, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer,stride", [
    (CausalConv3d(4, 4), 1), (CausalConv3d(4, 4, time_stride=2), 2), (FactorizedConv3d(4, 6), 1),
    (ResBlock3d(4, 8), 1), (ResBlock3d(4, 4, factorized=True), 1), (frame_group_norm(4), 1),
    (FrameAttention(4), 1), (Downsample3d(4, time=True), 2),
], ids=["conv", "conv-stride2", "factorized", "resblock", "resblock-factorized", "norm",
        "attention", "downsample"])
@torch.no_grad()
def test_no_output_frame_sees_a_later_input_frame(layer, stride):
    x = _clip(9)
    y = layer(x)
    for t in range(8):
        changed = x.clone()
        changed[:, :, t + 1] = torch.randn_like(x[:, :, 0])
        z = layer(changed)
        seen = t // stride + 1  # output j sees input frames <= stride * j
        assert torch.equal(y[:, :, :seen], z[:, :, :seen]), t
        assert not torch.allclose(y, z)


@torch.no_grad()
def test_time_upsampling_is_causal():
    layer, z = Upsample3d(4, time=True), _clip(4)
    y = layer(z)  # frame 0 from latent 0; frames 2j-1 and 2j from latents <= j
    assert y.shape[2] == 7
    for j in range(1, 4):
        changed = z.clone()
        changed[:, :, j] = torch.randn_like(z[:, :, 0])
        out = layer(changed)
        assert torch.equal(out[:, :, : 2 * j - 1], y[:, :, : 2 * j - 1])
        assert not torch.allclose(out[:, :, 2 * j - 1], y[:, :, 2 * j - 1])


def test_group_norm_over_the_whole_clip_would_not_be_causal():
    x = _clip(5)
    mixed, framewise = nn.GroupNorm(2, 4), FrameGroupNorm(2, 4)
    changed = x.clone()
    changed[:, :, 4] *= 10
    assert not torch.allclose(mixed(x)[:, :, 0], mixed(changed)[:, :, 0])
    assert torch.equal(framewise(x)[:, :, 0], framewise(changed)[:, :, 0])
    per_frame = nn.GroupNorm(2, 4)(x[:, :, 3])  # each frame as an image
    assert torch.allclose(framewise(x)[:, :, 3], per_frame, atol=1e-6)


@pytest.mark.parametrize("make,first,step", [
    (lambda: CausalConv3d(4, 4), 1, 1), (lambda: CausalConv3d(4, 4), 3, 2),
    (lambda: CausalConv3d(4, 4, time_kernel=5), 2, 3),
    (lambda: CausalConv3d(4, 4, time_stride=2), 1, 2),
    (lambda: CausalConv3d(4, 4, time_stride=2), 5, 4),
    (lambda: Downsample3d(4, time=True), 3, 2), (lambda: Upsample3d(4, time=True), 1, 2),
    (lambda: Upsample3d(4, time=True), 2, 3), (lambda: ResBlock3d(4, 6, factorized=True), 1, 3),
])
@torch.no_grad()
def test_chunks_with_a_cache_give_the_whole_clip(make, first, step):
    layer, x = make(), _clip(9)
    whole = layer(x)
    cache, parts = {}, []
    bounds = [0, *range(first, 9, step), 9]
    for a, b in zip(bounds, bounds[1:]):
        parts.append(layer(x[:, :, a:b], cache))
    assert torch.allclose(torch.cat(parts, 2), whole, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_time_resampling_keeps_the_first_frame_alone(n):
    x = _clip(1 + 2 * n)
    down = Downsample3d(4, time=True)(x)
    assert down.shape == (2, 4, 1 + n, 3, 3)
    assert Downsample3d(4, time=False)(x).shape == (2, 4, 1 + 2 * n, 3, 3)
    assert Upsample3d(4, time=True)(down).shape == (2, 4, 1 + 2 * n, 6, 6)


def test_a_chunk_off_the_stride_is_refused():
    layer, cache = CausalConv3d(4, 4, time_stride=2), {}
    layer(_clip(1), cache)
    with pytest.raises(ValueError, match="too short for a time stride of 2"):
        layer(_clip(1), cache)
