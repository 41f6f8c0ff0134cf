"""The released TiTok tokenizers (Yu et al., 2024, bytedance/1d-tokenizer): TiTok-L-32,
B-64 and S-128, whose decoder predicts MaskGIT-VQGAN codes that a conv decoder draws.

A ViT encoder reads the image's patches after a class token, then K learned latent tokens; the
latent tokens' outputs become K codes of `latent_dim` dims, quantized by cosine distance. The
ViT decoder reads a class token and one mask token per patch, then the K quantized tokens, and
gives per patch logits over the 1024 MaskGIT-VQGAN codes; their softmax-weighted mean code
vector goes through the MaskGIT-VQGAN conv decoder to pixels. This reproduces the released
models' computations exactly (`vtok convert --from titok`; tests/models/published), including
two details of theirs:

- the encoder's latent tokens `[B, K, width]` are reshaped, not transposed, to
  `[B, width, K]` before the 1x1 output conv (the release's `is_legacy` layout), so each
  output token mixes the features of several latent tokens;
- in the conv decoder, a ResBlock that changes width takes its 1x1 shortcut of its own output,
  not of its input (MaskGIT-VQGAN's layout), and its convs have no bias.

Images go in as [0, 1] at exactly `image_size` x `image_size` (the position tables are fixed);
there are always `num_latent_tokens` tokens (the releases were not trained to work from fewer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.models.base import ARCHITECTURES, Tokenizer, TokenizerConfig, Tokens
from vtok.models.vqgan import NearestUpsample, conv_weights, norm32
from vtok.nn import TransformerBlock
from vtok.quant import QuantizerOutput


def _titok_codes() -> dict[str, Any]:
    return {"codebook_size": 4096, "distance": "cosine", "ema": False, "kmeans_init": False,
            "commitment_weight": 0.25, "codebook_weight": 1.0}


@dataclass
class PublishedTiTokConfig(TokenizerConfig):
    """Sizes of a released TiTok. pixel_*: the MaskGIT-VQGAN decoder (its codes, their
    dimension, base width, per-level multipliers, ResBlocks per level)."""

    latent_dim: int = 12
    quantizer_options: dict[str, Any] = field(default_factory=_titok_codes)
    image_size: int = 256
    patch_size: int = 16
    width: int = 1024
    depth: int = 24
    heads: int = 16
    decoder_width: int = 1024
    decoder_depth: int = 24
    decoder_heads: int = 16
    num_latent_tokens: int = 32
    pixel_codes: int = 1024
    pixel_code_dim: int = 256
    pixel_channels: int = 128
    pixel_channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    pixel_res_blocks: int = 2

    LIMITS: ClassVar[dict[str, int]] = {
        **TokenizerConfig.LIMITS, "image_size": 4096, "patch_size": 64, "width": 2048,
        "depth": 48, "heads": 64, "decoder_width": 2048, "decoder_depth": 48,
        "decoder_heads": 64, "num_latent_tokens": 4096, "pixel_codes": 1 << 16,
        "pixel_code_dim": 1024, "pixel_channels": 512, "pixel_channel_mult": 16,
        "pixel_res_blocks": 8}
    LENGTHS: ClassVar[dict[str, int]] = {"pixel_channel_mult": 7}
    MAX_PATCHES: ClassVar[int] = 4096

    def check(self) -> None:
        name = type(self).__name__
        if self.image_size % self.patch_size:
            raise ValueError(f"{name}.image_size ({self.image_size}) must be a multiple of "
                             f"patch_size ({self.patch_size})")
        if self.grid**2 > self.MAX_PATCHES:
            raise ValueError(f"{name}: {self.grid**2} patches, over the limit of "
                             f"{self.MAX_PATCHES}")
        for width, heads in (("width", "heads"), ("decoder_width", "decoder_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(f"{name}.{heads} ({getattr(self, heads)}) must divide "
                                 f"{width} ({getattr(self, width)})")
        up = 2 ** (len(self.pixel_channel_mult) - 1)
        if up != self.patch_size:
            raise ValueError(f"{name}: the pixel decoder's {len(self.pixel_channel_mult)} "
                             f"levels upsample {up} times, but patch_size is {self.patch_size}")
        widths = self.pixel_widths()
        if any(w % 32 for w in widths):
            raise ValueError(f"{name}: the pixel decoder's widths {widths} must be multiples "
                             f"of 32 (GroupNorm of 32 groups)")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def pixel_widths(self) -> list[int]:
        return [self.pixel_channels * m for m in self.pixel_channel_mult]

    def parameter_estimate(self) -> int:
        """The exact weight count (the token codebook aside)."""
        w, dw, k, n = self.width, self.decoder_width, self.num_latent_tokens, self.grid**2
        block = lambda d: 12 * d * d + 13 * d  # noqa: E731 (qkv, proj, two MLP layers, 2 norms)
        # class token, positions of it and the patches, latent tokens and their positions
        encoder = (conv_weights(3, w, self.patch_size) + (2 + n + 2 * k) * w + 4 * w
                   + self.depth * block(w) + conv_weights(w, self.latent_dim, 1))
        # from_latent; class token, mask token, positions of both and of the tokens
        decoder = ((self.latent_dim + 1) * dw + (3 + n + k) * dw + 4 * dw
                   + self.decoder_depth * block(dw) + conv_weights(dw, 2 * dw, 1)
                   + conv_weights(2 * dw, self.pixel_codes, 1))
        widths = self.pixel_widths()
        levels, top = len(widths), widths[-1]
        pixels = self.pixel_codes * self.pixel_code_dim + conv_weights(self.pixel_code_dim,
                                                                       top, 3)
        pixels += self.pixel_res_blocks * _maskgit_block(top, top)
        ins = [top, *widths[::-1][:-1]]
        for j in range(levels):
            out = widths[levels - 1 - j]
            pixels += _maskgit_block(ins[j], out) + (self.pixel_res_blocks - 1) * _maskgit_block(
                out, out) + (conv_weights(out, out, 3) if j < levels - 1 else 0)
        pixels += 2 * widths[0] + conv_weights(widths[0], 3, 3)
        return encoder + decoder + pixels


def _maskgit_block(a: int, b: int) -> int:
    return 2 * a + 9 * a * b + 2 * b + 9 * b * b + (b * b if a != b else 0)


class MaskGITResBlock(nn.Module):
    """norm-SiLU-conv twice (no biases); when the width changes, the shortcut is a 1x1 conv of
    the block's own output (MaskGIT-VQGAN's layout), else the input."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = norm32(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = norm32(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(h))


class MaskGITStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, blocks: int, upsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MaskGITResBlock(in_ch if i == 0 else out_ch, out_ch)
                                    for i in range(blocks))
        self.upsample = NearestUpsample(out_ch) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class MaskGITDecoder(nn.Module):
    """MaskGIT-VQGAN's conv decoder; `stages[0]` runs first (lowest resolution)."""

    def __init__(self, c: PublishedTiTokConfig) -> None:
        super().__init__()
        widths = c.pixel_widths()
        levels, top = len(widths), widths[-1]
        self.conv_in = nn.Conv2d(c.pixel_code_dim, top, 3, padding=1)
        self.middle = nn.Sequential(*(MaskGITResBlock(top, top)
                                      for _ in range(c.pixel_res_blocks)))
        ins = [top, *widths[::-1][:-1]]
        self.stages = nn.ModuleList(
            MaskGITStage(ins[j], widths[levels - 1 - j], c.pixel_res_blocks, j < levels - 1)
            for j in range(levels))
        self.norm_out = norm32(widths[0])
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.middle(self.conv_in(x))
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class TiTokViTEncoder(nn.Module):
    def __init__(self, c: PublishedTiTokConfig) -> None:
        super().__init__()
        w, k = c.width, c.num_latent_tokens
        self.patch_embed = nn.Conv2d(3, w, c.patch_size, stride=c.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, w))
        self.position = nn.Parameter(torch.randn(1 + c.grid**2, w) * w**-0.5)
        self.latent_tokens = nn.Parameter(torch.randn(k, w) * w**-0.5)
        self.latent_position = nn.Parameter(torch.randn(k, w) * w**-0.5)
        self.norm_pre = nn.LayerNorm(w)
        self.blocks = nn.ModuleList(TransformerBlock(w, c.heads) for _ in range(c.depth))
        self.norm_post = nn.LayerNorm(w)
        self.to_latent = nn.Conv2d(w, c.latent_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """`[B, latent_dim, 1, K]`, the release's layout."""
        b = x.shape[0]
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(b, 1, -1), patches], 1) + self.position
        latents = (self.latent_tokens + self.latent_position).expand(b, -1, -1)
        x = self.norm_pre(torch.cat([x, latents], 1))
        for block in self.blocks:
            x = block(x)
        k = latents.shape[1]
        latents = self.norm_post(x[:, -k:])
        # the release's legacy layout: a reshape, not a transpose, of [B, K, width]
        z = self.to_latent(latents.reshape(b, -1, k, 1))
        return z.reshape(b, -1, 1, k)


class TiTokViTDecoder(nn.Module):
    def __init__(self, c: PublishedTiTokConfig) -> None:
        super().__init__()
        w, k = c.decoder_width, c.num_latent_tokens
        self.grid = c.grid
        self.from_latent = nn.Linear(c.latent_dim, w)
        self.class_token = nn.Parameter(torch.zeros(1, w))
        self.position = nn.Parameter(torch.randn(1 + c.grid**2, w) * w**-0.5)
        self.mask_token = nn.Parameter(torch.randn(1, 1, w) * w**-0.5)
        self.latent_position = nn.Parameter(torch.randn(k, w) * w**-0.5)
        self.norm_pre = nn.LayerNorm(w)
        self.blocks = nn.ModuleList(TransformerBlock(w, c.decoder_heads)
                                    for _ in range(c.decoder_depth))
        self.norm_post = nn.LayerNorm(w)
        self.to_logits = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.Tanh(),
                                       nn.Conv2d(2 * w, c.pixel_codes, 1))

    def forward(self, z_q: Tensor) -> Tensor:
        """Logits `[B, pixel_codes, grid, grid]` from quantized tokens `[B, C, 1, K]`."""
        b, _, _, k = z_q.shape
        n = self.grid**2
        tokens = self.from_latent(z_q.flatten(1, 2).transpose(1, 2)) + self.latent_position[:k]
        masks = torch.cat([self.class_token.expand(b, 1, -1),
                           self.mask_token.expand(b, n, -1)], 1) + self.position
        x = self.norm_pre(torch.cat([masks, tokens], 1))
        for block in self.blocks:
            x = block(x)
        x = self.norm_post(x[:, 1:1 + n])
        return self.to_logits(x.transpose(1, 2).reshape(b, -1, self.grid, self.grid))


@ARCHITECTURES.register("titok-published")
class PublishedTiTok(Tokenizer):
    """Images `image_size` x `image_size` -> `[B, K]` tokens (the releases' order)."""

    architecture = "titok-published"
    config_class = PublishedTiTokConfig

    def __init__(self, config: PublishedTiTokConfig) -> None:
        super().__init__(config)
        self.encoder = TiTokViTEncoder(config)
        self.decoder = TiTokViTDecoder(config)
        self.pixel_codes = nn.Parameter(torch.randn(config.pixel_codes, config.pixel_code_dim))
        self.pixel_decoder = MaskGITDecoder(config)

    # the release's steps, on its own layouts (the fixture tests call them)
    def model_input(self, images: Tensor) -> Tensor:
        return images  # the release takes [0, 1]

    def pre_quant(self, x: Tensor) -> Tensor:
        """The latent tokens `[B, latent_dim, 1, K]` before quantization."""
        return self.encoder(x)

    def quantize_latent(self, z: Tensor) -> QuantizerOutput:
        """Quantized tokens `[B, latent_dim, 1, K]` and indices `[B, 1, K]`."""
        out = self.quantizer(z.permute(0, 2, 3, 1))
        out.z_q = out.z_q.permute(0, 3, 1, 2)
        return out

    def latent_from_indices(self, indices: Tensor) -> Tensor:
        """`[B, K]` or `[B, 1, K]` indices -> `[B, latent_dim, 1, K]`."""
        return self.quantizer.decode(indices.reshape(indices.shape[0], 1, -1)).permute(0, 3,
                                                                                       1, 2)

    def decoder_logits(self, z_q: Tensor) -> Tensor:
        return self.decoder(z_q)

    def pixel_states(self, logits: Tensor) -> Tensor:
        """The softmax-weighted mean MaskGIT code `[B, pixel_code_dim, grid, grid]`."""
        return torch.einsum("bkhw,kd->bdhw", logits.softmax(1), self.pixel_codes)

    def decode_latent(self, z_q: Tensor) -> Tensor:
        """The release's output (about [0, 1], not clamped) for quantized tokens."""
        return self.pixel_decoder(self.pixel_states(self.decoder_logits(z_q)))

    # -- the Tokenizer interface -----------------------------------------------------------------
    @property
    def max_tokens(self) -> int:
        return self.config.num_latent_tokens

    def token_shape(self, image_size: tuple[int, int], num_tokens: int | None = None,
                    frames: int = 1) -> tuple[int, ...]:
        self.refuse_clips(frames)
        s, k = self.config.image_size, self.config.num_latent_tokens
        if tuple(image_size) != (s, s):
            raise ValueError(f"a {self.architecture} tokenizer codes {s}x{s} images only (its "
                             f"position tables are fixed), not {image_size[1]}x{image_size[0]}"
                             f"; resize or crop to {s}x{s} first")
        if num_tokens is not None and num_tokens != k:
            raise ValueError(f"num_tokens={num_tokens}: this tokenizer always gives {k} tokens")
        return (k,)

    def _quantize(self, images: Tensor) -> QuantizerOutput:
        self.token_shape(tuple(images.shape[-2:]))
        return self.quantize_latent(self.pre_quant(self.model_input(images)))

    def forward(self, images: Tensor) -> dict[str, Any]:
        out = self._quantize(images)
        return {"recon": self.decode_latent(out.z_q), "quant_loss": out.loss,
                "metrics": out.metrics, "indices": out.indices.flatten(1)}

    def last_layer(self) -> Tensor:
        return self.pixel_decoder.conv_out.weight

    def _encode(self, images: Tensor, num_tokens: int | None) -> Tokens:
        shape = self.token_shape(tuple(images.shape[-2:]), num_tokens)
        indices = self._quantize(images).indices.flatten(1)
        return Tokens(indices, shape, tuple(images.shape[-2:]), self.tokenizer_id, shape[0])

    def _decode(self, tokens: Tokens) -> Tensor:
        return self.decode_latent(self.latent_from_indices(tokens.indices))
