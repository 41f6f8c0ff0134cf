"""Shared layers: convolutional blocks and transformer blocks (fused SDPA attention)."""

from vtok.nn.blocks import AttentionBlock2d, Downsample, ResBlock, Upsample, group_norm
from vtok.nn.transformer import Attention, TransformerBlock

__all__ = [
    "Attention",
    "AttentionBlock2d",
    "Downsample",
    "ResBlock",
    "TransformerBlock",
    "Upsample",
    "group_norm",
]
