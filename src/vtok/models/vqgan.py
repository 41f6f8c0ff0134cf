"""The published VQGAN tokenizers: taming-transformers' VQGAN (Esser et al., 2021) and
LlamaGen's VQ tokenizer (Sun et al., 2024), which keeps VQGAN's encoder and decoder and looks
up l2-normalised codes.

Both are the same network: a conv encoder (ResBlocks, stride-2 downsampling, self-attention
in the lowest-resolution stages and the middle), a 1x1 `quant_conv` to the code dimension, a
codebook, a 1x1 `post_quant_conv` back, and a mirrored decoder (one more ResBlock a stage,
nearest-neighbour upsampling). The architectures here reproduce the released checkpoints'
computations exactly (`vtok convert` loads them; tests/models/published checks every
intermediate tensor against the reference code), so their details follow the releases rather
than vtok's own conv2d: GroupNorm of 32 groups, downsampling that pads only the bottom and
right edges, separate q/k/v projections.

Images go in as [0, 1] and are mapped to the [-1, 1] the releases were trained on. Any size
works: images are padded (edge pixels repeated) to a multiple of the downsampling factor and
the reconstruction is cropped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from vtok.models.base import (
    ARCHITECTURES,
    Tokenizer,
    TokenizerConfig,
    Tokens,
    pad_to_multiple,
)
from vtok.quant import QuantizerOutput


def norm32(channels: int) -> nn.GroupNorm:
    """The releases' GroupNorm: 32 groups, eps 1e-6 (channels must be a multiple of 32)."""
    return nn.GroupNorm(32, channels, eps=1e-6)


class VQGANResBlock(nn.Module):
    """norm-SiLU-conv twice; a 1x1 conv on the skip path when the width changes."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm32(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = norm32(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class VQGANAttention(nn.Module):
    """Single-head self-attention over the pixels, with 1x1 q, k, v and output convs."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = norm32(ch)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k,
                                                                             self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class PadDownsample(nn.Module):
    """Halve the resolution: pad one zero row and column at the bottom and right, then a
    stride-2 3x3 conv without padding (the releases' asymmetric downsampling)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class NearestUpsample(nn.Module):
    """Double the resolution: nearest neighbour, then a 3x3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """ResBlocks, each followed by attention when the stage has it, then a resampling."""

    def __init__(self, in_ch: int, out_ch: int, blocks: int, attention: bool,
                 resample: type[nn.Module] | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VQGANResBlock(in_ch if i == 0 else out_ch, out_ch)
                                    for i in range(blocks))
        self.attns = nn.ModuleList(VQGANAttention(out_ch) for _ in range(blocks if attention
                                                                         else 0))
        self.resample = resample(out_ch) if resample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attns):
                x = self.attns[i](x)
        return x if self.resample is None else self.resample(x)


def middle(ch: int) -> nn.Sequential:
    return nn.Sequential(VQGANResBlock(ch, ch), VQGANAttention(ch), VQGANResBlock(ch, ch))


class VQGANEncoder(nn.Module):
    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        levels, attn = len(widths), c.attention_levels()
        self.conv_in = nn.Conv2d(3, c.channels, 3, padding=1)
        ins = [c.channels, *widths[:-1]]
        self.stages = nn.ModuleList(
            Stage(ins[i], widths[i], c.num_res_blocks, i in attn,
                  PadDownsample if i < levels - 1 else None) for i in range(levels))
        self.middle = middle(widths[-1])
        self.norm_out = norm32(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(self.middle(x))))


class VQGANDecoder(nn.Module):
    """Stages in the order they run: `stages[0]` is the lowest resolution."""

    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        levels, attn = len(widths), c.attention_levels()
        self.conv_in = nn.Conv2d(c.z_channels, widths[-1], 3, padding=1)
        self.middle = middle(widths[-1])
        ins = [widths[-1], *widths[::-1][:-1]]
        self.stages = nn.ModuleList(
            Stage(ins[j], widths[levels - 1 - j], c.num_res_blocks + 1, levels - 1 - j in attn,
                  NearestUpsample if j < levels - 1 else None) for j in range(levels))
        self.norm_out = norm32(widths[0])
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.middle(self.conv_in(z))
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))


@dataclass
class VQGANConfig(TokenizerConfig):
    """Shared fields. channels * channel_mult[i] channels at level i (a multiple of 32 each);
    z_channels: the encoder's output; latent_dim: the code dimension (quant_conv's output).
    `attention_factors`: self-attention in the levels whose feature maps are that many times
    smaller than the image (taming's `attn_resolutions` = resolution / factor)."""

    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    attention_factors: tuple[int, ...] = (16,)

    LIMITS: ClassVar[dict[str, int]] = {
        **TokenizerConfig.LIMITS, "channels": 512, "channel_mult": 16, "num_res_blocks": 8,
        "z_channels": 1024, "attention_factors": 64}
    LENGTHS: ClassVar[dict[str, int]] = {"channel_mult": 6, "attention_factors": 6}
    MAX_WIDTH: ClassVar[int] = 2048

    def check(self) -> None:
        name = type(self).__name__
        widths = [self.channels * m for m in self.channel_mult]
        if max(widths) > self.MAX_WIDTH:
            raise ValueError(f"{name}: channels * channel_mult reaches {max(widths)} channels, "
                             f"over the limit of {self.MAX_WIDTH}")
        if any(w % 32 for w in widths):
            raise ValueError(f"{name}: every level's width (channels * channel_mult = {widths}) "
                             f"must be a multiple of 32 (GroupNorm of 32 groups)")
        factors = {2**i for i in range(len(widths))}
        if not set(self.attention_factors) <= factors:
            raise ValueError(f"{name}.attention_factors {self.attention_factors} must be among "
                             f"the levels' factors {sorted(factors)}")

    def attention_levels(self) -> set[int]:
        return {int(math.log2(f)) for f in self.attention_factors}

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def parameter_estimate(self) -> int:
        """The exact weight count of the encoder, decoder and 1x1 convs (codebook aside)."""
        widths = [self.channels * m for m in self.channel_mult]
        levels, attn = len(widths), self.attention_levels()
        total = conv_weights(3, self.channels, 3)
        ins = [self.channels, *widths[:-1]]
        for i in range(levels):  # encoder
            total += stage_weights(ins[i], widths[i], self.num_res_blocks, i in attn,
                                   i < levels - 1)
        top = widths[-1]
        mid = 2 * resblock_weights(top, top) + attention_weights(top)
        total += 2 * mid + 2 * top + conv_weights(top, self.z_channels, 3)
        total += conv_weights(self.z_channels, self.latent_dim, 1)  # quant_conv
        total += conv_weights(self.latent_dim, self.z_channels, 1)  # post_quant_conv
        total += conv_weights(self.z_channels, top, 3)
        ins = [top, *widths[::-1][:-1]]
        for j in range(levels):  # decoder
            i = levels - 1 - j
            total += stage_weights(ins[j], widths[i], self.num_res_blocks + 1, i in attn, i > 0)
        return total + 2 * widths[0] + conv_weights(widths[0], 3, 3)


def conv_weights(a: int, b: int, k: int) -> int:
    return a * b * k * k + b


def resblock_weights(a: int, b: int) -> int:
    return 2 * a + conv_weights(a, b, 3) + 2 * b + conv_weights(b, b, 3) + (
        conv_weights(a, b, 1) if a != b else 0)


def attention_weights(c: int) -> int:
    return 2 * c + 4 * conv_weights(c, c, 1)


def stage_weights(a: int, b: int, blocks: int, attention: bool, resample: bool) -> int:
    total = resblock_weights(a, b) + (blocks - 1) * resblock_weights(b, b)
    return total + blocks * attention_weights(b) * attention + conv_weights(b, b, 3) * resample


def _cosine_codes() -> dict[str, Any]:
    return {"codebook_size": 16384, "distance": "cosine", "ema": False, "kmeans_init": False,
            "commitment_weight": 0.25, "codebook_weight": 1.0}


def _l2_codes() -> dict[str, Any]:
    # taming's VectorQuantizer2 (legacy=True) weights the codebook term by beta = 0.25 and
    # the commitment term by 1, the reverse of VQ-VAE's convention
    return {"codebook_size": 16384, "ema": False, "kmeans_init": False,
            "commitment_weight": 1.0, "codebook_weight": 0.25}


@dataclass
class LlamaGenVQConfig(VQGANConfig):
    """LlamaGen's VQ model: codes of 8 dims looked up by cosine distance (l2-normalised)."""

    latent_dim: int = 8
    quantizer_options: dict[str, Any] = field(default_factory=_cosine_codes)


@dataclass
class TamingVQGANConfig(VQGANConfig):
    """taming-transformers' VQGAN: codes looked up by Euclidean distance."""

    latent_dim: int = 256
    quantizer_options: dict[str, Any] = field(default_factory=_l2_codes)


class VQGANTokenizer(Tokenizer):
    """Images -> `[B, H/f, W/f]` grid of tokens (f = 2**(levels-1)), the releases' layout:
    row-major, as their `indices` come flat in (batch, row, column) order."""

    config_class: ClassVar[type[VQGANConfig]]

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__(config)
        self.encoder = VQGANEncoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.latent_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_dim, config.z_channels, 1)
        self.decoder = VQGANDecoder(config)

    # the release's steps, on its own value ranges and layouts (the fixture tests call them)
    def model_input(self, images: Tensor) -> Tensor:
        """[0, 1] images -> the [-1, 1] input the release takes."""
        return images * 2 - 1

    def pre_quant(self, x: Tensor) -> Tensor:
        """The latent `[B, latent_dim, h, w]` before quantization (`quant_conv(encoder(x))`)."""
        return self.quant_conv(self.encoder(x))

    def quantize_latent(self, z: Tensor) -> QuantizerOutput:
        """Quantized latent `[B, latent_dim, h, w]` and indices `[B, h, w]`."""
        out = self.quantizer(z.permute(0, 2, 3, 1))
        out.z_q = out.z_q.permute(0, 3, 1, 2)
        return out

    def latent_from_indices(self, indices: Tensor) -> Tensor:
        return self.quantizer.decode(indices).permute(0, 3, 1, 2)

    def decode_latent(self, z_q: Tensor) -> Tensor:
        """The release's output (about [-1, 1], not clamped) for a quantized latent."""
        return self.decoder(self.post_quant_conv(z_q))

    # -- the Tokenizer interface -----------------------------------------------------------------
    def _quantize(self, images: Tensor) -> QuantizerOutput:
        x = self.model_input(pad_to_multiple(images, self.config.downsample))
        return self.quantize_latent(self.pre_quant(x))

    def _pixels(self, z_q: Tensor, size: tuple[int, int]) -> Tensor:
        return ((self.decode_latent(z_q) + 1) / 2)[..., : size[0], : size[1]]

    def forward(self, images: Tensor) -> dict[str, Any]:
        out = self._quantize(images)
        return {"recon": self._pixels(out.z_q, tuple(images.shape[-2:])),
                "quant_loss": out.loss, "metrics": out.metrics, "indices": out.indices}

    def last_layer(self) -> Tensor:
        return self.decoder.conv_out.weight

    def token_shape(self, image_size: tuple[int, int], num_tokens: int | None = None,
                    frames: int = 1) -> tuple[int, ...]:
        self.refuse_clips(frames)
        f = self.config.downsample
        shape = (-(-image_size[0] // f), -(-image_size[1] // f))
        if num_tokens is not None and num_tokens != shape[0] * shape[1]:
            raise ValueError(f"num_tokens={num_tokens}: a {self.architecture} tokenizer gives "
                             f"exactly {shape[0] * shape[1]} tokens for this image size")
        return shape

    def _encode(self, images: Tensor, num_tokens: int | None) -> Tokens:
        shape = self.token_shape(tuple(images.shape[-2:]), num_tokens)
        indices = self._quantize(images).indices
        return Tokens(indices, shape, tuple(images.shape[-2:]), self.tokenizer_id,
                      shape[0] * shape[1])

    def _decode(self, tokens: Tokens) -> Tensor:
        return self._pixels(self.latent_from_indices(tokens.indices), tokens.image_size)


@ARCHITECTURES.register("llamagen-vq")
class LlamaGenVQ(VQGANTokenizer):
    """LlamaGen's VQ tokenizer (FoundationVision/LlamaGen `VQModel`)."""

    architecture = "llamagen-vq"
    config_class = LlamaGenVQConfig


@ARCHITECTURES.register("taming-vqgan")
class TamingVQGAN(VQGANTokenizer):
    """taming-transformers' VQGAN (CompVis/taming-transformers `VQModel`)."""

    architecture = "taming-vqgan"
    config_class = TamingVQGANConfig
