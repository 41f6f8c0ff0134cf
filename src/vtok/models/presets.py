"""Named tokenizer presets: tiny `test-*` ones for tests, CPU ones that train in minutes to
hours here, and ones at the scale of the published models for GPU clusters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vtok.models.base import ARCHITECTURES, Tokenizer, TokenizerConfig
from vtok.models.conv2d import ConvTokenizerConfig
from vtok.models.conv3d import Conv3dTokenizerConfig
from vtok.models.shipped import PRETRAINED_DIR, list_pretrained, shipped_name, tokenizer_dir
from vtok.models.titok import TiTokConfig
from vtok.models.titok_published import PublishedTiTokConfig
from vtok.models.vqgan import LlamaGenVQConfig, TamingVQGANConfig
from vtok.registry import Registry

__all__ = ["PRESETS", "PRETRAINED_DIR", "architecture_of", "create_tokenizer", "list_pretrained",
           "load", "preset_config", "shipped_with_id", "tokenizer_dir"]
PRESETS: Registry[Callable[[], TokenizerConfig]] = Registry("tokenizer preset")


@PRESETS.register("test-conv2d")
def _test_conv2d() -> TokenizerConfig:
    """Tiny x4 conv tokenizer for tests (builds in milliseconds)."""
    return ConvTokenizerConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, latent_dim=4,
                               quantizer_options={"codebook_size": 16})


@PRESETS.register("test-titok")
def _test_titok() -> TokenizerConfig:
    """Tiny 1D tokenizer for tests: 32x32 images, up to 8 tokens."""
    return TiTokConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, decoder_width=32,
                       decoder_depth=1, decoder_heads=2, num_latent_tokens=8, latent_dim=4,
                       quantizer_options={"codebook_size": 16})


@PRESETS.register("test-titok-conv")
def _test_titok_conv() -> TokenizerConfig:
    """Tiny 1D tokenizer over test-conv2d's latent grid (its student in distillation tests)."""
    conv = _test_conv2d()
    return dataclasses.replace(
        _test_titok(), pixel_codec="conv", conv_channels=conv.channels,
        conv_channel_mult=conv.channel_mult, conv_num_res_blocks=conv.num_res_blocks,
        conv_latent_dim=conv.latent_dim, grid_codes=conv.quantizer_options["codebook_size"])


@PRESETS.register("test-conv3d")
def _test_conv3d() -> TokenizerConfig:
    """Tiny causal video tokenizer for tests: x4 in space, x4 in time, 1000 FSQ codes."""
    return Conv3dTokenizerConfig(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                                 latent_dim=4, quantizer="fsq",
                                 quantizer_options={"levels": [8, 5, 5, 5]})


@PRESETS.register("conv2d-f8-cpu")
def _conv2d_f8_cpu() -> TokenizerConfig:
    """x8 grid, 256 codes (the shipped conv2d-f8): 1024 tokens x 8 bits, 0.125 bpp of index
    bits at 256x256 (entropy-coded files spend less); trains on a CPU."""
    return ConvTokenizerConfig(channels=16, channel_mult=(1, 2, 4, 8), num_res_blocks=1,
                               latent_dim=8, quantizer_options={"codebook_size": 256})


@PRESETS.register("titok-cpu")
def _titok_cpu() -> TokenizerConfig:
    """Up to 128 ordered tokens for 256x256 images, 256 codes of 8 dims (8 bits per token);
    32-px patches (an 8x8 grid) keep it small enough to train on a CPU."""
    # Tried on this CPU and dropped: 16-px patches (a 16x16 grid) stayed at PSNR ~11.8 after
    # 575 steps, and FSQ/BSQ codes put every image into the same few codes for hundreds of
    # steps; VQ codes are seeded from the data.
    return TiTokConfig(image_size=256, patch_size=32, width=192, depth=4, heads=4,
                       decoder_width=192, decoder_depth=4, decoder_heads=4,
                       num_latent_tokens=128, latent_dim=8, quantizer="vq",
                       quantizer_options={"codebook_size": 256})


@PRESETS.register("titok-f8-cpu")
def _titok_f8_cpu() -> TokenizerConfig:
    """Up to 128 ordered tokens (512 codes, 9 bits each) over conv2d-f8-cpu's latent grid:
    the transformers read 4x4 cells of the 32x32 grid and predict one of its 256 codes per
    cell, so they train on the CPU by distillation from a trained conv2d-f8-cpu
    (`vtok.train.distill`) without ever decoding pixels. Tokens start tied to quadtree
    regions, which made them useful from the first steps."""
    conv = _conv2d_f8_cpu()
    return TiTokConfig(image_size=256, patch_size=32, width=192, depth=4, heads=4,
                       decoder_width=192, decoder_depth=4, decoder_heads=4,
                       num_latent_tokens=128, latent_dim=12, quantizer="vq",
                       quantizer_options={"codebook_size": 512}, pixel_codec="conv",
                       token_regions="quadtree",
                       conv_channels=conv.channels, conv_channel_mult=conv.channel_mult,
                       conv_num_res_blocks=conv.num_res_blocks,
                       conv_latent_dim=conv.latent_dim,
                       grid_codes=conv.quantizer_options["codebook_size"])


@PRESETS.register("conv3d-f8t4-cpu")
def _conv3d_f8t4_cpu() -> TokenizerConfig:
    """Causal video (and image) tokenizer, x8 in space and x4 in time, 512 VQ codes (9 bits
    per token, each standing for 4 frames of 8x8 pixels); factorized convs (3x3 in space, then
    3 frames in time) keep it small enough (3.6M weights) to train on a CPU. Its widths,
    blocks and 8-dim latent are conv2d-f8-cpu's, so it can start from a trained conv2d-f8
    (`TrainConfig.init` inflates it, `grow_codebook` doubles its 256 codes)."""
    conv = _conv2d_f8_cpu()
    return Conv3dTokenizerConfig(channels=conv.channels, channel_mult=conv.channel_mult,
                                 num_res_blocks=conv.num_res_blocks, factorized=True,
                                 latent_dim=conv.latent_dim, quantizer="vq",
                                 quantizer_options={"codebook_size": 512})


@PRESETS.register("vqgan-f16")
def _vqgan_f16() -> TokenizerConfig:
    """VQGAN-class x16 tokenizer for 256x256 ImageNet-style training on 8 GPUs (~70M params);
    16,384 codes looked up in 8 dims with cosine distance (LlamaGen-style)."""
    return ConvTokenizerConfig(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                               attention=True, latent_dim=256,
                               quantizer_options={"codebook_size": 16384, "codebook_dim": 8,
                                                  "distance": "cosine"})


@PRESETS.register("titok-s-128")
def _titok_s_128() -> TokenizerConfig:
    """TiTok-S-128-class 1D tokenizer for 256x256 images: 128 tokens, 4096 codes."""
    return TiTokConfig(image_size=256, patch_size=16, width=512, depth=8, heads=8,
                       decoder_width=512, decoder_depth=8, decoder_heads=8,
                       num_latent_tokens=128, latent_dim=16,
                       quantizer_options={"codebook_size": 4096})


@PRESETS.register("cosmos-dv4x8x8")
def _cosmos_dv4x8x8() -> TokenizerConfig:
    """Cosmos-Tokenizer-DV4x8x8-class causal video tokenizer for GPU clusters (~116M weights):
    x8 in space, x4 in time, factorized convs with attention within frames, 64,000 FSQ codes
    (levels 8,8,8,5,5,5)."""
    return Conv3dTokenizerConfig(channels=128, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                                 factorized=True, attention=True, latent_dim=6, quantizer="fsq",
                                 quantizer_options={"levels": [8, 8, 8, 5, 5, 5]})


@PRESETS.register("magvit2")
def _magvit2() -> TokenizerConfig:
    """MAGVIT-v2-class causal video tokenizer for GPU clusters (~263M weights): full 3x3x3
    causal convs, 128 channels x (1, 2, 2, 4), 4 ResBlocks a stage, x8 in space, x4 in time,
    lookup-free quantization of 18 bits (262,144 codes)."""
    return Conv3dTokenizerConfig(channels=128, channel_mult=(1, 2, 2, 4), num_res_blocks=4,
                                 latent_dim=18, quantizer="lfq", quantizer_options={})


# The released tokenizers' configurations (their weights load with `vtok convert`); the
# parameter counts are checked in tests/models/published/test_presets.py.
@PRESETS.register("llamagen-vq-16")
def _llamagen_vq_16() -> TokenizerConfig:
    """LlamaGen's VQ-16 (vq_ds16_c2i.pt, 72M): x16 grid, 16,384 l2-normalised codes of 8 dims."""
    return LlamaGenVQConfig(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                            z_channels=256, attention_factors=(16,), latent_dim=8)


@PRESETS.register("llamagen-vq-8")
def _llamagen_vq_8() -> TokenizerConfig:
    """LlamaGen's VQ-8 (vq_ds8_c2i.pt, 70M): x8 grid, 16,384 l2-normalised codes of 8 dims."""
    return LlamaGenVQConfig(channels=128, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                            z_channels=256, attention_factors=(8,), latent_dim=8)


def _taming(codes: int) -> TamingVQGANConfig:
    options = {**TamingVQGANConfig().quantizer_options, "codebook_size": codes}
    return TamingVQGANConfig(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                             z_channels=256, attention_factors=(16,), latent_dim=256,
                             quantizer_options=options)


@PRESETS.register("taming-vqgan-f16-16384")
def _taming_f16_16384() -> TokenizerConfig:
    """taming-transformers' VQGAN ImageNet f16, 16,384 codes of 256 dims (x16 grid)."""
    return _taming(16384)


@PRESETS.register("taming-vqgan-f16-1024")
def _taming_f16_1024() -> TokenizerConfig:
    """taming-transformers' VQGAN ImageNet f16, 1,024 codes of 256 dims (x16 grid)."""
    return _taming(1024)


def _titok(width: int, depth: int, heads: int, tokens: int) -> PublishedTiTokConfig:
    return PublishedTiTokConfig(width=width, depth=depth, heads=heads, decoder_width=width,
                                decoder_depth=depth, decoder_heads=heads,
                                num_latent_tokens=tokens)


@PRESETS.register("titok-published-l-32")
def _titok_l_32() -> TokenizerConfig:
    """Released TiTok-L-32: 32 tokens of 4,096 codes for 256x256 images, ViT-L."""
    return _titok(1024, 24, 16, 32)


@PRESETS.register("titok-published-b-64")
def _titok_b_64() -> TokenizerConfig:
    """Released TiTok-B-64: 64 tokens of 4,096 codes for 256x256 images, ViT-B."""
    return _titok(768, 12, 12, 64)


@PRESETS.register("titok-published-s-128")
def _titok_s_128_published() -> TokenizerConfig:
    """Released TiTok-S-128: 128 tokens of 4,096 codes for 256x256 images, ViT-S."""
    return _titok(512, 8, 8, 128)


def preset_config(name: str, **overrides: Any) -> TokenizerConfig:
    config = PRESETS.get(name)()
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"preset {name!r} has no field {', '.join(unknown)}; "
                         f"its fields are: {', '.join(sorted(names))}")
    return dataclasses.replace(config, **overrides)


def architecture_of(config: TokenizerConfig) -> type[Tokenizer]:
    for arch in ARCHITECTURES.names():
        cls = ARCHITECTURES.get(arch)
        if type(config) is cls.config_class:
            return cls
    raise ValueError(f"no tokenizer architecture takes a {type(config).__name__}")


def create_tokenizer(name: str, **overrides: Any) -> Tokenizer:
    """A freshly initialized tokenizer from a preset, e.g. `create_tokenizer("test-titok")`."""
    config = preset_config(name, **overrides)
    return architecture_of(config)(config)


def load(name_or_dir: str | Path) -> Tokenizer:
    """A shipped tokenizer by name, or any tokenizer directory (config.json + model.safetensors)."""
    return Tokenizer.from_pretrained(tokenizer_dir(name_or_dir))


def load_or_build(spec: str) -> tuple[Tokenizer, Path | None]:
    """(tokenizer, its folder): a tokenizer folder or shipped name as `load` reads it, else a
    preset built untrained with seed 0 (folder None), for benchmarks run before any model is
    trained. ValueError when `spec` is none of the three."""
    try:
        directory = tokenizer_dir(spec)
    except ValueError:
        if spec not in PRESETS:
            raise ValueError(f"{spec!r} is neither a tokenizer folder, a shipped tokenizer nor "
                             f"a preset") from None
        torch.manual_seed(0)
        return create_tokenizer(spec), None
    return Tokenizer.from_pretrained(directory), directory


def shipped_with_id(tokenizer_id: str) -> tuple[str, Tokenizer] | None:
    """(name, tokenizer) of the shipped tokenizer whose stored id is `tokenizer_id`, if there is
    one; loading it recomputes the id from its config and weights and refuses a mismatch."""
    name = shipped_name(tokenizer_id)
    return None if name is None else (name, load(name))
