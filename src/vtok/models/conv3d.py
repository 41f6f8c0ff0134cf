"""Causal 3D convolutional tokenizer for video and images (MAGVIT-v2, Yu et al. 2023; Cosmos,
NVIDIA 2025): a `(frames, h, w)` grid of tokens, the first frame coded on its own.

A still image is a one-frame video, so one model codes both. With the default 4x time
compression a clip of 1 + 4k frames gives 1 + k latent frames: frame 0 alone, then each group
of 4. Any other length is padded at the end by repeating its last frame up to the next 1 + 4k
and trimmed back on decoding (`Tokens.frames` records the length), so a clip of T frames gives
1 + ceil((T - 1) / 4) latent frames. Every layer is causal in time (see `vtok.nn.causal`):
latent frame j depends on input frames <= 4j only, and decoded frame t on latent frames
<= ceil(t / 4) only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vtok.models.base import (
    ARCHITECTURES,
    Tokenizer,
    TokenizerConfig,
    Tokens,
    check_images,
    pad_to_multiple,
)
from vtok.nn.causal import (
    CausalConv3d,
    Downsample3d,
    FrameAttention,
    ResBlock3d,
    Upsample3d,
    conv3,
    frame_group_norm,
    run,
)

DEFAULT_STICK = 0.5  # VQ codes kept from frame to frame within this slack: see the class doc
DEFAULT_CHUNK_FRAMES = 16  # input frames per chunk (after the first frame) when coding a clip


@dataclass
class Conv3dTokenizerConfig(TokenizerConfig):
    """channels * channel_mult[i] channels at stage i; each of the 2**(stages-1)-times smaller
    latent frames stands for `time_downsample` input frames (the first for one). `factorized`:
    3x3 convs in space followed by 3-frame convs in time (Cosmos) instead of full 3x3x3 convs
    (MAGVIT-v2). `attention`: self-attention within each frame in the middle blocks."""

    latent_dim: int = 4
    quantizer: str = "fsq"
    quantizer_options: dict[str, Any] = field(default_factory=lambda: {"levels": [8, 5, 5, 5]})
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 1
    time_downsample: int = 4
    factorized: bool = False
    attention: bool = False

    LIMITS: ClassVar[dict[str, int]] = {
        **TokenizerConfig.LIMITS, "channels": 512, "channel_mult": 16, "num_res_blocks": 8,
        "time_downsample": 32}
    LENGTHS: ClassVar[dict[str, int]] = {"channel_mult": 6}  # at most a x32 grid
    MAX_WIDTH: ClassVar[int] = 2048  # channels * channel_mult of the widest stage

    def check(self) -> None:
        name = type(self).__name__
        widest = self.channels * max(self.channel_mult)
        if widest > self.MAX_WIDTH:
            raise ValueError(f"{name}: channels * channel_mult reaches {widest} channels, "
                             f"over the limit of {self.MAX_WIDTH}")
        stages = len(self.channel_mult) - 1
        t = self.time_downsample
        if t & (t - 1) or t > 2**stages:
            raise ValueError(f"{name}.time_downsample must be a power of 2 of at most "
                             f"{2**stages} (one halving per downsampling stage), got {t}")
        if self.quantizer == "msrvq":
            raise ValueError(f"{name}: msrvq's multi-scale tokens do not form the (frames, h, "
                             f"w) grid a conv3d tokenizer codes; choose another quantizer")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def time_stages(self) -> int:
        """How many of the downsampling stages (the first ones) also halve the frames."""
        return self.time_downsample.bit_length() - 1

    def parameter_estimate(self) -> int:
        """Mirrors Encoder3d/Decoder3d: ResBlocks, resampling convs, middle blocks, ends."""
        def conv(a: int, b: int) -> int:  # weights of conv3(a, b)
            return 9 * a * b + 3 * b * b if self.factorized else 27 * a * b

        def block(a: int, b: int) -> int:
            return conv(a, b) + conv(b, b) + (a * b if a != b else 0)

        def resample(ch: int, stage: int) -> int:  # time kernel 3 where time is resampled
            return (27 if stage < self.time_stages else 9) * ch * ch

        widths = [self.channels * m for m in self.channel_mult]
        total, ch = 0, self.channels
        for i, width in enumerate(widths):  # encoder
            for _ in range(self.num_res_blocks):
                total, ch = total + block(ch, width), width
            total += resample(ch, i) if i < len(widths) - 1 else 0
        middle = 2 * block(ch, ch) + (4 * ch * ch if self.attention else 0)
        total += 2 * middle  # encoder and decoder
        for i in reversed(range(len(widths))):  # decoder
            for _ in range(self.num_res_blocks + 1):
                total, ch = total + block(ch, widths[i]), widths[i]
            total += resample(ch, i - 1) if i > 0 else 0
        ends = 2 * 27 * 3 * self.channels + conv(widths[-1], self.latent_dim)
        return total + ends + conv(self.latent_dim, widths[-1])


def _middle(ch: int, c: Conv3dTokenizerConfig) -> list[nn.Module]:
    return [ResBlock3d(ch, ch, c.factorized), *([FrameAttention(ch)] if c.attention else []),
            ResBlock3d(ch, ch, c.factorized)]


class Encoder3d(nn.Module):
    """`[B, 3, T, H, W]` in [-1, 1] -> latents `[B, latent_dim, 1 + (T-1)/t, H/f, W/f]`."""

    def __init__(self, c: Conv3dTokenizerConfig) -> None:
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        layers: list[nn.Module] = [CausalConv3d(3, c.channels)]
        ch = c.channels
        for i, width in enumerate(widths):
            for _ in range(c.num_res_blocks):
                layers.append(ResBlock3d(ch, width, c.factorized))
                ch = width
            if i < len(widths) - 1:
                layers.append(Downsample3d(ch, time=i < c.time_stages))
        layers += _middle(ch, c)
        layers += [frame_group_norm(ch), nn.SiLU(), conv3(ch, c.latent_dim, c.factorized)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, cache: dict | None = None) -> Tensor:
        return run(self.layers, x, cache)


class Decoder3d(nn.Module):
    """Latents `[B, latent_dim, 1 + n, h, w]` -> `[B, 3, 1 + n*t, h*f, w*f]` in about [-1, 1]."""

    def __init__(self, c: Conv3dTokenizerConfig) -> None:
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        ch = widths[-1]
        layers: list[nn.Module] = [conv3(c.latent_dim, ch, c.factorized), *_middle(ch, c)]
        for i in reversed(range(len(widths))):
            for _ in range(c.num_res_blocks + 1):
                layers.append(ResBlock3d(ch, widths[i], c.factorized))
                ch = widths[i]
            if i > 0:  # mirrors the encoder's downsampling after stage i - 1
                layers.append(Upsample3d(ch, time=i - 1 < c.time_stages))
        layers += [frame_group_norm(ch), nn.SiLU(), CausalConv3d(ch, 3)]
        self.layers = nn.ModuleList(layers)

    def forward(self, z: Tensor, cache: dict | None = None) -> Tensor:
        return run(self.layers, z, cache)


def check_clips(images: Tensor) -> None:
    """Images `[B, 3, H, W]` or clips `[B, T, 3, H, W]`, floating point."""
    if isinstance(images, Tensor) and images.ndim == 5:
        if images.shape[2] != 3 or images.shape[1] < 1:
            raise ValueError(f"clips must be a float tensor [B, T, 3, H, W] in [0, 1], got "
                             f"{tuple(images.shape)}")
        images = images[:, 0]
    try:
        check_images(images)
    except ValueError as err:
        raise ValueError(f"{err} (or clips [B, T, 3, H, W])") from None


@ARCHITECTURES.register("conv3d")
class Conv3dTokenizer(Tokenizer):
    """Images `[B, 3, H, W]` or clips `[B, T, 3, H, W]` -> tokens `[B, t, H/f, W/f]`, with
    t = 1 + ceil((T - 1) / time_downsample) (an image is one frame: t = 1).

    `decode` gives back what was encoded: `[B, 3, H, W]` when `Tokens.frames` is 1 (so a
    one-frame clip comes back as an image), else `[B, T, 3, H, W]`.

    `encode` and `decode` work through a clip in chunks of `chunk_frames` input frames (16 by
    default; the first chunk also holds frame 0), carrying from chunk to chunk the few frames
    of each layer's input its causal convs still need. Memory is then bounded by the chunk, not
    the clip, and the result equals coding the whole clip at once (up to float rounding:
    identical tokens, pixels within about 1e-6). `chunk_frames` is rounded down to a multiple
    of `time_downsample`; like `tile_size` it is not part of the config or the tokenizer id.
    Frames are not tiled in space: `tile_size` does not apply.

    `stick` (encoding only, like `chunk_frames`; not part of the config or the tokenizer id),
    for a VQ codebook: a token keeps its code from the previous latent frame when that code's
    squared distance is at most (1 + stick) times the nearest code's
    (`VectorQuantizer.indices_keeping`), so still regions repeat their codes and cost the
    temporal prior few bits, as a video codec's skip mode does. Default `DEFAULT_STICK` (0.5)
    with a VQ codebook, 0 (off: nearest codes) otherwise; set 0 for nearest codes. At 0.5 the
    shipped conv3d-f8t4's files of the val and test clips are 11 % smaller (0.08 dB lower PSNR
    on the val clip, the same PSNR and LPIPS on the test clip). Decoding is unchanged.
    """

    architecture = "conv3d"
    config_class = Conv3dTokenizerConfig

    def __init__(self, config: Conv3dTokenizerConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder3d(config)
        self.decoder = Decoder3d(config)
        self.chunk_frames = DEFAULT_CHUNK_FRAMES
        self.stick = DEFAULT_STICK if hasattr(self.quantizer, "indices_keeping") else 0.0

    @property
    def codes_clips(self) -> bool:
        return True

    def check_input(self, images: Tensor) -> None:
        check_clips(images)

    def coded_frames(self, frames: int) -> int:
        """How many frames a clip of `frames` is padded to: the next 1 + k * time_downsample."""
        t = self.config.time_downsample
        return 1 + t * -(-(frames - 1) // t)

    def _pixels_in(self, clip: Tensor, start: int, stop: int) -> Tensor:
        """Frames [start, stop) of the padded clip as encoder input `[B, 3, n, H', W']` in
        [-1, 1]: past the clip's end its last frame repeats; sides padded to multiples of f."""
        b, frames = clip.shape[:2]
        index = torch.arange(start, stop, device=clip.device).clamp(max=frames - 1)
        x = clip[:, index].flatten(0, 1)
        x = pad_to_multiple(x, self.config.downsample) * 2 - 1
        return x.unflatten(0, (b, stop - start)).transpose(1, 2).contiguous()

    def _chunks(self, frames: int, step: int) -> list[tuple[int, int]]:
        """[start, stop) spans covering `frames` = 1 + k*step' frames: 1 + step, then step."""
        bounds = [0, *range(1 + step, frames, step), frames]
        return list(zip(bounds, bounds[1:]))

    def _step(self) -> int:
        t = self.config.time_downsample
        return max(t, self.chunk_frames // t * t)

    def forward(self, images: Tensor) -> dict[str, Any]:
        """Training path, on the whole clip at once."""
        self.check_input(images)
        clip = images if images.ndim == 5 else images[:, None]
        z = self.encoder(self._pixels_in(clip, 0, self.coded_frames(clip.shape[1])))
        out = self.quantizer(z.permute(0, 2, 3, 4, 1))
        y = self.decoder(out.z_q.permute(0, 4, 1, 2, 3))
        recon = self._pixels_out(y, clip.shape[1], images.shape[-2:])
        return {"recon": recon if images.ndim == 5 else recon[:, 0], "quant_loss": out.loss,
                "metrics": out.metrics, "indices": out.indices}

    def _pixels_out(self, y: Tensor, frames: int, size: tuple[int, int]) -> Tensor:
        """Decoder output `[B, 3, n, H', W']` -> `[B, min(n, frames), 3, H, W]` in about [0, 1]."""
        return ((y[:, :, :frames, : size[0], : size[1]] + 1) / 2).transpose(1, 2)

    def last_layer(self) -> Tensor:
        return self.decoder.layers[-1].weight

    def token_shape(self, image_size: tuple[int, int], num_tokens: int | None = None,
                    frames: int = 1) -> tuple[int, ...]:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
        f = self.config.downsample
        shape = (1 + (self.coded_frames(frames) - 1) // self.config.time_downsample,
                 -(-image_size[0] // f), -(-image_size[1] // f))
        if num_tokens is not None and num_tokens != math.prod(shape):
            raise ValueError(f"num_tokens={num_tokens}: a conv3d tokenizer gives exactly "
                             f"{math.prod(shape)} tokens for this size and frame count")
        return shape

    def _encode(self, images: Tensor, num_tokens: int | None) -> Tokens:
        clip = images if images.ndim == 5 else images[:, None]
        frames, size = clip.shape[1], tuple(images.shape[-2:])
        shape = self.token_shape(size, num_tokens, frames)
        if self.stick and not (math.isfinite(self.stick) and self.stick > 0
                               and hasattr(self.quantizer, "indices_keeping")):
            raise ValueError(f"stick={self.stick!r}: needs a finite number > 0 and a VQ "
                             f"codebook; this tokenizer has a {self.config.quantizer!r} one")
        cache: dict = {}
        indices: list[Tensor] = []
        for start, stop in self._chunks(self.coded_frames(frames), self._step()):
            z = self.encoder(self._pixels_in(clip, start, stop), cache).permute(0, 2, 3, 4, 1)
            if self.stick:  # latent frame by latent frame, each after the one before
                for j in range(z.shape[1]):
                    indices.append((self.quantizer(z[:, j]).indices if not indices else
                                    self.quantizer.indices_keeping(z[:, j], indices[-1][:, -1],
                                                                   self.stick))[:, None])
            else:
                indices.append(self.quantizer(z).indices)
        return Tokens(torch.cat(indices, 1), shape, size, self.tokenizer_id, math.prod(shape),
                      frames=frames)

    def _decode(self, tokens: Tokens) -> Tensor:
        indices, frames, size = tokens.indices, tokens.frames, tokens.image_size
        t = self.config.time_downsample
        expected = self.token_shape(size, frames=frames)[0]
        if indices.ndim < 4 or indices.shape[1] != expected:
            raise ValueError(f"{frames} frames give {expected} latent frames of tokens with "
                             f"this tokenizer, not indices of shape {tuple(indices.shape)}")
        out = None
        cache: dict = {}
        for start, stop in self._chunks(indices.shape[1], self._step() // t):
            z = self.quantizer.decode(indices[:, start:stop]).permute(0, 4, 1, 2, 3)
            first = 0 if start == 0 else 1 + (start - 1) * t  # its first decoded frame
            y = self._pixels_out(self.decoder(z, cache), frames - first, size)
            if out is None:
                out = y.new_empty(y.shape[0], frames, *y.shape[2:])
            out[:, first : first + y.shape[1]] = y
            if first + y.shape[1] >= frames:
                break
        return out[:, 0] if frames == 1 else out


def set_stick(tok: Any, value: float | None, flag: str = "--stick") -> None:
    """Set a video tokenizer's `stick` (None: keep its default), for every command that takes
    one. ValueError naming `flag`: a negative or non-finite value, or one above 0 for a
    tokenizer without a VQ codebook for clips (an image tokenizer, or FSQ). 0 suits any
    tokenizer and changes nothing for one without a stick."""
    if value is None:
        return
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{flag} must be a finite number >= 0, got {value}")
    if value and not (tok.codes_clips and hasattr(tok.quantizer, "indices_keeping")):
        raise ValueError(f"{flag} needs a video tokenizer with a VQ codebook; this is a "
                         f"{tok.architecture} tokenizer with a {tok.config.quantizer!r} one")
    if hasattr(tok, "stick"):
        tok.stick = float(value)
