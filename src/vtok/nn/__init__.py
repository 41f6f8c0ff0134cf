"""Shared layers: convolutional blocks (2D, and causal 3D for video) and transformer blocks
(fused SDPA attention)."""

from vtok.nn.blocks import AttentionBlock2d, Downsample, ResBlock, Upsample, group_norm
from vtok.nn.causal import (
    CausalConv3d,
    Downsample3d,
    FactorizedConv3d,
    FrameAttention,
    FrameGroupNorm,
    ResBlock3d,
    Upsample3d,
    frame_group_norm,
)
from vtok.nn.transformer import Attention, TransformerBlock

__all__ = [
    "Attention",
    "AttentionBlock2d",
    "CausalConv3d",
    "Downsample",
    "Downsample3d",
    "FactorizedConv3d",
    "FrameAttention",
    "FrameGroupNorm",
    "ResBlock",
    "ResBlock3d",
    "TransformerBlock",
    "Upsample",
    "Upsample3d",
    "frame_group_norm",
    "group_norm",
]
