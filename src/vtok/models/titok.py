"""1D transformer tokenizer (TiTok, Yu et al., 2024) with ordered, variable-length tokens.

A ViT encoder reads the image patches together with K learned latent tokens; the latents'
outputs are quantized into a 1D sequence of K tokens. The decoder reads mask tokens (one per
patch) together with the first k quantized tokens and predicts the patches' pixels. Training
with nested dropout of the tail tokens (FlexTok, Bachmann et al., 2025; One-D-Piece, Miwa et
al., 2025) orders the tokens coarse to fine, so `encode(x, num_tokens=k)` works for any k <= K.

With `pixel_codec="conv"` the transformers work on the latent grid of a convolutional
encoder/decoder pair (the grid is `conv` downsample times smaller than the image), the way
TiTok's first stage predicts a VQGAN's codes and FlexTok resamples a 2D latent: the encoder
reads `patch_size` pixel squares of that grid and the decoder predicts, for every grid cell,
logits over `grid_codes` code vectors that the conv decoder turns into pixels (their softmax
mean with `grid_decode="soft"`, the most likely code with "hard"). The conv pair and the
grid codes can be copied from a trained conv2d tokenizer (`vtok.train.distill`).

With `token_regions="quadtree"` the latent tokens are tied to nested regions from the start:
token 1 to the whole image, the next 4 to its quadrants, the next 16 to theirs, and so on down
to single patches, then again from the whole image. In the encoder each such token
starts from the mean of its region's patch embeddings; in the decoder each patch's mask token
starts from the mean of the kept tokens whose regions cover it. Learned latent queries start
out alike and attend everywhere, so without this the decoder first learns to ignore the
tokens (seen here: reconstructions identical for 1 and 128 tokens after 1,000 steps); with it
the tokens carry their regions from step 0, and any prefix is a coarse-to-fine description.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.models.base import ARCHITECTURES, Tokenizer, TokenizerConfig, Tokens, pad_to_multiple
from vtok.models.conv2d import ConvTokenizerConfig, Decoder2d, Encoder2d
from vtok.models.limits import MAX_LATENT_DIM, transformer_parameters
from vtok.nn import TransformerBlock
from vtok.nn.transformer import sincos_2d


@dataclass
class TiTokConfig(TokenizerConfig):
    image_size: int = 256  # native size; other sizes interpolate the patch position embedding
    patch_size: int = 16
    width: int = 256
    depth: int = 4
    heads: int = 4
    decoder_width: int = 256
    decoder_depth: int = 4
    decoder_heads: int = 4
    num_latent_tokens: int = 32
    nested_dropout: float = 0.5  # share of training steps that keep a random prefix of tokens
    pixel_codec: str = "patches"  # "patches": pixels in and out; "conv": a conv latent grid
    token_regions: str = "none"  # "quadtree": tokens start from nested image regions
    conv_channels: int = 16  # the conv pair, as in ConvTokenizerConfig
    conv_channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    conv_num_res_blocks: int = 1
    conv_latent_dim: int = 8
    grid_codes: int = 128  # code vectors the decoder chooses among for each grid cell
    grid_decode: str = "soft"  # "soft": softmax mean of the codes; "hard": the likeliest code

    LIMITS: ClassVar[dict[str, int]] = {
        **TokenizerConfig.LIMITS, "image_size": 4096, "patch_size": 64, "width": 2048,
        "depth": 48, "heads": 64, "decoder_width": 2048, "decoder_depth": 48,
        "decoder_heads": 64, "num_latent_tokens": 4096, "conv_channels": 512,
        "conv_channel_mult": 16, "conv_num_res_blocks": 8, "conv_latent_dim": MAX_LATENT_DIM,
        "grid_codes": 1 << 16}
    LENGTHS: ClassVar[dict[str, int]] = {"conv_channel_mult": 6}
    MAX_PATCHES: ClassVar[int] = 4096  # (image_size / patch_size)**2 of the native grid

    def check(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"TiTokConfig.image_size ({self.image_size}) must be a multiple "
                             f"of patch_size ({self.patch_size})")
        if (self.image_size // self.patch_size) ** 2 > self.MAX_PATCHES:
            raise ValueError(f"TiTokConfig: image_size / patch_size gives "
                             f"{(self.image_size // self.patch_size) ** 2} patches, over the "
                             f"limit of {self.MAX_PATCHES}")
        for width, heads in (("width", "heads"), ("decoder_width", "decoder_heads")):
            w, h = getattr(self, width), getattr(self, heads)
            if w % 4 or w % h:  # sine-cosine positions need 4 | width
                raise ValueError(f"TiTokConfig.{width} ({w}) must be a multiple of 4 and of "
                                 f"{heads} ({h})")
        for name, choices in (("pixel_codec", ("patches", "conv")),
                              ("grid_decode", ("soft", "hard")),
                              ("token_regions", ("none", "quadtree"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"TiTokConfig.{name} must be one of {choices}, "
                                 f"got {getattr(self, name)!r}")
        if self.pixel_codec == "conv":
            f = self.conv_config().downsample
            if self.patch_size % f:
                raise ValueError(f"TiTokConfig.patch_size ({self.patch_size}) must be a "
                                 f"multiple of the conv downsample factor ({f})")
            if self.grid_codes < 2:
                raise ValueError(f"TiTokConfig.grid_codes must be an integer >= 2, "
                                 f"got {self.grid_codes!r}")
        if not 0 <= self.nested_dropout <= 1:
            raise ValueError(f"TiTokConfig.nested_dropout must be in [0, 1], "
                             f"got {self.nested_dropout!r}")

    def parameter_estimate(self) -> int:
        """Mirrors TiTokTokenizer: transformer stacks, patch projections, position tables and,
        with pixel_codec="conv", the conv pair and its grid codes."""
        side, p = self.image_size // self.patch_size, self.patch_size
        cell, chans, out, conv = p, 3, 3 * p * p, 0
        if self.pixel_codec == "conv":
            pair = self.conv_config()
            cell, chans = p // pair.downsample, self.conv_latent_dim
            out = self.grid_codes * cell * cell
            conv = pair.parameter_estimate() + self.grid_codes * self.conv_latent_dim
        w, dw, k = self.width, self.decoder_width, self.num_latent_tokens
        stacks = transformer_parameters(w, self.depth) + transformer_parameters(dw,
                                                                                self.decoder_depth)
        embeddings = chans * cell * cell * w + dw * out + (side * side + k) * (w + dw)
        return stacks + embeddings + conv

    def conv_config(self) -> ConvTokenizerConfig:
        """The conv encoder/decoder pair's config (its quantizer fields are not used)."""
        return ConvTokenizerConfig(channels=self.conv_channels,
                                   channel_mult=tuple(self.conv_channel_mult),
                                   num_res_blocks=self.conv_num_res_blocks,
                                   latent_dim=self.conv_latent_dim)


def _grid_embedding(table: Tensor, grid: tuple[int, int]) -> Tensor:
    """Position table [1, g*g, C] for the native grid, resized to `grid` when it differs."""
    side = int(round(table.shape[1] ** 0.5))
    if grid == (side, side):
        return table
    img = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=grid, mode="bicubic", align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)


@functools.lru_cache(maxsize=64)  # one small table per image size, asked for on every call
def quadtree_regions(num_tokens: int, grid: tuple[int, int], native: int) -> Tensor:
    """`[num_tokens, gh*gw]` 0/1 membership of each patch (by its centre) in each token's
    region: level l splits the image into 2**l x 2**l cells, in raster order, for every level
    whose cells are no smaller than a patch of the `native` x `native` grid; after the finest
    level the levels start again from the whole image (a second, refining pass)."""
    gh, gw = grid
    cy = ((torch.arange(gh) + 0.5) / gh)[:, None].expand(gh, gw).reshape(-1)
    cx = ((torch.arange(gw) + 0.5) / gw)[None, :].expand(gh, gw).reshape(-1)
    rows, level = [], 0
    while len(rows) < num_tokens:
        n = 2**level
        iy, ix = (cy * n).floor().clamp(max=n - 1), (cx * n).floor().clamp(max=n - 1)
        cell = (iy * n + ix).long()
        rows += [cell == i for i in range(min(n * n, num_tokens - len(rows)))]
        level = level + 1 if 2 ** (level + 1) <= native else 0
    return torch.stack(rows).float()


@ARCHITECTURES.register("titok")
class TiTokTokenizer(Tokenizer):
    """Images -> `[B, k]` token sequence, k <= num_latent_tokens."""

    architecture = "titok"
    config_class = TiTokConfig

    def __init__(self, config: TiTokConfig) -> None:
        super().__init__(config)
        c = config
        p, side, k = c.patch_size, c.image_size // c.patch_size, c.num_latent_tokens
        # a patch covers `cell` x `cell` positions of `chans` channels: pixels or grid cells
        self.cell, chans, out = p, 3, 3 * p * p
        if c.pixel_codec == "conv":
            conv = c.conv_config()
            self.pixel_encoder, self.pixel_decoder = Encoder2d(conv), Decoder2d(conv)
            self.grid_codebook = nn.Parameter(torch.randn(c.grid_codes, conv.latent_dim))
            self.cell, chans = p // conv.downsample, conv.latent_dim
            out = c.grid_codes * self.cell**2
        self.patch_embed = nn.Conv2d(chans, c.width, self.cell, stride=self.cell)
        # positions start as a sine-cosine table (the decoder gets spatial structure from the
        # first step) and latent tokens at TiTok's width**-0.5 scale; all stay learnable
        self.patch_pos = nn.Parameter(sincos_2d(side, c.width))
        self.latents = nn.Parameter(torch.randn(1, k, c.width) * c.width**-0.5)
        self.encoder = nn.ModuleList(TransformerBlock(c.width, c.heads) for _ in range(c.depth))
        self.encoder_norm = nn.LayerNorm(c.width)
        self.to_latent = nn.Linear(c.width, c.latent_dim)

        self.from_latent = nn.Linear(c.latent_dim, c.decoder_width)
        self.token_pos = nn.Parameter(torch.randn(1, k, c.decoder_width) * c.decoder_width**-0.5)
        self.mask_token = nn.Parameter(torch.randn(1, 1, c.decoder_width) * 0.02)
        self.mask_pos = nn.Parameter(sincos_2d(side, c.decoder_width))
        self.decoder = nn.ModuleList(
            TransformerBlock(c.decoder_width, c.decoder_heads) for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(c.decoder_width)
        self.to_pixels = nn.Linear(c.decoder_width, out)

    @property
    def variable_length(self) -> bool:
        return True

    @property
    def max_tokens(self) -> int:
        return self.config.num_latent_tokens

    def _grid(self, size: tuple[int, int]) -> tuple[int, int]:
        p = self.config.patch_size
        return (-(-size[0] // p), -(-size[1] // p))

    def _quantize(self, images: Tensor):
        x = pad_to_multiple(images, self.config.patch_size) * 2 - 1
        if self.config.pixel_codec == "conv":
            x = self.pixel_encoder(x)
        return self.quantize_grid(x)

    def quantize_grid(self, x: Tensor):
        """Quantizer output for `[B, C, H, W]` encoder input: pixels in [-1, 1], or the conv
        encoder's latent grid with pixel_codec="conv"."""
        return self.quantizer(self.latents_of(x))

    def latents_of(self, x: Tensor) -> Tensor:
        """The K latent tokens `[B, K, latent_dim]` before quantization."""
        x = self.patch_embed(x)
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2) + _grid_embedding(self.patch_pos, grid)
        n = x.shape[1]
        latents = self.latents.expand(x.shape[0], -1, -1)
        if self.config.token_regions == "quadtree":
            member = self._regions(grid, x.device)
            latents = latents + (member / member.sum(1, keepdim=True).clamp(min=1)) @ x
        x = torch.cat([x, latents], 1)
        for block in self.encoder:
            x = block(x)
        return self.to_latent(self.encoder_norm(x[:, n:]))

    def _to_pixels(self, z_q: Tensor, size: tuple[int, int]) -> Tensor:
        out = self.decode_grid(z_q, self._grid(size))
        if self.config.pixel_codec == "conv":
            codes = self.grid_codebook
            if self.config.grid_decode == "hard":
                out = F.embedding(out.argmax(1), codes).permute(0, 3, 1, 2)
            else:
                out = torch.einsum("bkhw,kd->bdhw", out.softmax(1), codes)
            out = self.pixel_decoder(out)
        return (out[..., : size[0], : size[1]] + 1) / 2

    def decode_grid(self, z_q: Tensor, grid: tuple[int, int]) -> Tensor:
        """`[B, C, gh*cell, gw*cell]` from quantized tokens: pixels in [-1, 1], or per grid
        cell logits over the grid codes with pixel_codec="conv"."""
        (gh, gw), cell = grid, self.cell
        b, k = z_q.shape[:2]
        tokens = self.from_latent(z_q) + self.token_pos[:, :k]
        masks = (self.mask_token + _grid_embedding(self.mask_pos, (gh, gw))).expand(b, -1, -1)
        if self.config.token_regions == "quadtree":
            cover = self._regions((gh, gw), z_q.device)[:k].T  # [patches, kept tokens]
            masks = masks + (cover / cover.sum(1, keepdim=True).clamp(min=1)) @ tokens
        x = torch.cat([masks, tokens], 1)
        for block in self.decoder:
            x = block(x)
        patches = self.to_pixels(self.decoder_norm(x[:, : gh * gw]))
        img = patches.view(b, gh, gw, -1, cell, cell).permute(0, 3, 1, 4, 2, 5)
        return img.reshape(b, -1, gh * cell, gw * cell)

    def _regions(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        native = self.config.image_size // self.config.patch_size
        return quadtree_regions(self.max_tokens, grid, native).to(device)

    def token_shape(self, image_size: tuple[int, int], num_tokens: int | None = None,
                    frames: int = 1) -> tuple[int, ...]:
        self.refuse_clips(frames)
        if num_tokens is not None and not (isinstance(num_tokens, int)
                                           and 1 <= num_tokens <= self.max_tokens):
            raise ValueError(f"this tokenizer gives 1 to {self.max_tokens} tokens in a "
                             f"sequence, not ({num_tokens},)")
        gh, gw = self._grid(image_size)
        native = (self.config.image_size // self.config.patch_size) ** 2
        if gh * gw > 16 * native:
            raise ValueError(f"a {image_size[1]}x{image_size[0]} image is more than 16 times "
                             f"the {self.config.image_size}x{self.config.image_size} this "
                             f"tokenizer was made for")
        return (self.max_tokens if num_tokens is None else num_tokens,)

    def _check_count(self, num_tokens: int | None) -> int:
        k = self.max_tokens
        if num_tokens is None:
            return k
        if not isinstance(num_tokens, int) or not 1 <= num_tokens <= k:
            raise ValueError(f"num_tokens must be an integer in [1, {k}], got {num_tokens!r}")
        return num_tokens

    def forward(self, images: Tensor, num_tokens: int | None = None) -> dict[str, Any]:
        out = self._quantize(images)
        k = self._check_count(num_tokens)
        if num_tokens is None and self.training and torch.rand(()) < self.config.nested_dropout:
            k = int(torch.randint(1, self.max_tokens + 1, ()))  # keep a random prefix
        recon = self._to_pixels(out.z_q[:, :k], tuple(images.shape[-2:]))
        return {"recon": recon, "quant_loss": out.loss, "metrics": out.metrics,
                "indices": out.indices[:, :k], "num_tokens": k}

    def last_layer(self) -> Tensor:
        if self.config.pixel_codec == "conv":
            return self.pixel_decoder.layers[-1].weight
        return self.to_pixels.weight

    def _encode(self, images: Tensor, num_tokens: int | None) -> Tokens:
        k = self._check_count(num_tokens)
        self.token_shape(tuple(images.shape[-2:]), k)
        indices = self._quantize(images).indices[:, :k]
        return Tokens(indices, (k,), tuple(images.shape[-2:]), self.tokenizer_id, k)

    def _decode(self, tokens: Tokens) -> Tensor:
        return self._to_pixels(self.quantizer.decode(tokens.indices), tokens.image_size)
