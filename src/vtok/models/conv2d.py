"""Convolutional 2D tokenizer in the VQGAN style (Esser et al., 2021): a grid of tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vtok.models.base import (
    ARCHITECTURES,
    Tokenizer,
    TokenizerConfig,
    Tokens,
    eval_mode,
    pad_to_multiple,
)
from vtok.models.limits import resblock_parameters
from vtok.models.tiling import decode_tiled, encode_tiled, window_bounds
from vtok.nn import AttentionBlock2d, Downsample, ResBlock, Upsample, group_norm

FADE_CELLS = 2  # decoded tiles cross-fade over 2 grid cells either side of a tile edge


@dataclass
class ConvTokenizerConfig(TokenizerConfig):
    """channels * channel_mult[i] channels at stage i; the grid is 2**(stages-1) times smaller."""

    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 1
    attention: bool = False  # self-attention in the middle blocks (lowest resolution)

    LIMITS: ClassVar[dict[str, int]] = {
        **TokenizerConfig.LIMITS, "channels": 512, "channel_mult": 16, "num_res_blocks": 8}
    LENGTHS: ClassVar[dict[str, int]] = {"channel_mult": 6}  # at most a x32 grid
    MAX_WIDTH: ClassVar[int] = 2048  # channels * channel_mult of the widest stage

    def check(self) -> None:
        widest = self.channels * max(self.channel_mult)
        if widest > self.MAX_WIDTH:
            raise ValueError(f"{type(self).__name__}: channels * channel_mult reaches {widest} "
                             f"channels, over the limit of {self.MAX_WIDTH}")

    def parameter_estimate(self) -> int:
        """Mirrors Encoder2d/Decoder2d: ResBlocks, resampling convs and the middle blocks."""
        widths = [self.channels * m for m in self.channel_mult]
        total, ch = 0, self.channels
        for i, width in enumerate(widths):  # encoder
            for _ in range(self.num_res_blocks):
                total, ch = total + resblock_parameters(ch, width), width
            total += 9 * width * width if i < len(widths) - 1 else 0
        middle = 2 * resblock_parameters(ch, ch) + (4 * ch * ch if self.attention else 0)
        total += 2 * middle  # encoder and decoder
        for i in reversed(range(len(widths))):  # decoder
            for _ in range(self.num_res_blocks + 1):
                total, ch = total + resblock_parameters(ch, widths[i]), widths[i]
            total += 9 * ch * ch if i > 0 else 0
        ends = 9 * (3 + self.latent_dim) * (self.channels + widths[-1])
        return total + ends

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


class Encoder2d(nn.Module):
    def __init__(self, c: ConvTokenizerConfig) -> None:
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        layers: list[nn.Module] = [nn.Conv2d(3, c.channels, 3, padding=1)]
        ch = c.channels
        for i, width in enumerate(widths):
            for _ in range(c.num_res_blocks):
                layers.append(ResBlock(ch, width))
                ch = width
            if i < len(widths) - 1:
                layers.append(Downsample(ch))
        layers += _middle(ch, c.attention)
        layers += [group_norm(ch), nn.SiLU(), nn.Conv2d(ch, c.latent_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Decoder2d(nn.Module):
    def __init__(self, c: ConvTokenizerConfig) -> None:
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        ch = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(c.latent_dim, ch, 3, padding=1)]
        layers += _middle(ch, c.attention)
        for i in reversed(range(len(widths))):
            for _ in range(c.num_res_blocks + 1):
                layers.append(ResBlock(ch, widths[i]))
                ch = widths[i]
            if i > 0:
                layers.append(Upsample(ch))
        layers += [group_norm(ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


def _middle(ch: int, attention: bool) -> list[nn.Module]:
    return [ResBlock(ch, ch), *([AttentionBlock2d(ch)] if attention else []), ResBlock(ch, ch)]


@ARCHITECTURES.register("conv2d")
class ConvTokenizer(Tokenizer):
    """Images of any size -> `[B, H/f, W/f]` token grid (padded to a multiple of f).

    `encode` and `decode` of an image with a side over `tile_size` work on tiles of at most
    that (see `Tokenizer.tile_size`) with a halo as wide as the decoder's receptive field.
    When an image spans several normalisation windows (`Tokenizer.norm_window`), GroupNorm
    statistics are local: measured on each window first, then interpolated between window
    centres (`vtok.models.tiling.LocalGroupNorm`), whether the image is tiled or not. A tiled
    run then gives the same tokens and pixels as an untiled one (up to float rounding).
    """

    architecture = "conv2d"
    config_class = ConvTokenizerConfig

    def __init__(self, config: ConvTokenizerConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder2d(config)
        self.decoder = Decoder2d(config)

    def _quantize(self, images: Tensor, tiled: bool = False):
        x = pad_to_multiple(images, self.config.downsample) * 2 - 1
        f = self.config.downsample
        plan = self._plan((x.shape[-2] // f, x.shape[-1] // f)) if tiled else None
        if plan is not None:
            z = encode_tiled(self.encoder, x, f, plan[0], self._halo(), plan[1])
        else:
            z = self.encoder(x)
        return self.quantizer(z.permute(0, 2, 3, 1))

    def _to_pixels(self, z_q: Tensor, size: tuple[int, int], tiled: bool = False) -> Tensor:
        z = z_q.permute(0, 3, 1, 2)
        f = self.config.downsample
        plan = self._plan(tuple(z.shape[-2:])) if tiled else None
        if plan is not None:
            out = decode_tiled(self.decoder, z, f, plan[0], self._halo(), FADE_CELLS * f,
                               plan[1])
        else:
            out = self.decoder(z)
        return ((out + 1) / 2)[..., : size[0], : size[1]]

    def _plan(self, grid: tuple[int, int]) -> tuple[int, tuple[list[int], list[int]]] | None:
        """Tile size (grid cells) and normalisation window bounds for coding a grid; None for
        the plain path (one tile, one window). Tiles only when a side exceeds the tile size,
        and never with self-attention, whose reach a halo cannot bound; windows are at most a
        tile, so measuring their statistics never holds more than a tile does."""
        f, longest = self.config.downsample, max(grid)
        tiled = not self.config.attention and longest > max(1, self.tile_size // f)
        tile = max(1, self.tile_size // f) if tiled else longest
        window = max(1, self.norm_window // f)
        bounds = (window_bounds(grid[0], window, tile), window_bounds(grid[1], window, tile))
        if not tiled and len(bounds[0]) == len(bounds[1]) == 2:
            return None
        return tile, bounds

    def _halo(self) -> int:
        """Grid cells of context each tile needs: the decoder's receptive field radius (the
        wider of the two) plus the cross-fade."""
        c, f = self.config, self.config.downsample
        radius = f * 5  # decoder input conv, then 4 convs in the middle blocks
        for i in range(len(c.channel_mult)):  # each stage at 2**i pixels per cell
            radius += 2 * (c.num_res_blocks + 1) * 2**i + (2 ** (i - 1) if i else 1)
        return -(-radius // f) + FADE_CELLS

    def forward(self, images: Tensor) -> dict[str, Any]:
        out = self._quantize(images)
        return {"recon": self._to_pixels(out.z_q, images.shape[-2:]), "quant_loss": out.loss,
                "metrics": out.metrics, "indices": out.indices}

    def last_layer(self) -> Tensor:
        return self.decoder.layers[-1].weight

    def token_shape(self, image_size: tuple[int, int], num_tokens: int | None = None,
                    frames: int = 1) -> tuple[int, ...]:
        self.refuse_clips(frames)
        f = self.config.downsample
        grid = (-(-image_size[0] // f), -(-image_size[1] // f))
        with torch.no_grad(), eval_mode(self.quantizer):  # the quantizer's own token layout
            z = torch.zeros(1, *grid, self.config.latent_dim,
                            device=self.decoder.layers[-1].weight.device)
            shape = tuple(self.quantizer(z).indices.shape[1:])
        if self.indices_per_token > 1:
            shape = shape[:-1]
        if num_tokens is not None and num_tokens != math.prod(shape):
            raise ValueError(f"num_tokens={num_tokens}: a conv2d tokenizer gives exactly "
                             f"{math.prod(shape)} tokens for this image size")
        return shape

    def _encode(self, images: Tensor, num_tokens: int | None) -> Tokens:
        out = self._quantize(images, tiled=True)
        shape = tuple(out.indices.shape[1:])  # (h, w), or (T,) for multi-scale quantizers
        if self.indices_per_token > 1:
            shape = shape[:-1]
        count = math.prod(shape)
        if num_tokens is not None and num_tokens != count:
            raise ValueError(f"num_tokens={num_tokens}: a conv2d tokenizer gives exactly "
                             f"{count} tokens for this image size")
        return Tokens(out.indices, shape, tuple(images.shape[-2:]), self.tokenizer_id, count)

    def _decode(self, tokens: Tokens) -> Tensor:
        return self._to_pixels(self.quantizer.decode(tokens.indices), tokens.image_size,
                               tiled=True)
