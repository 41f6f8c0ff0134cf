"""Checks of a TrainConfig against the model it trains, before any work: the preset's field
overrides (typed and bounded, so a typo cannot ask for terabytes), the model built on the meta
device (no memory, no random numbers), the crop size against the model's downsampling and
the discriminator's depth, and for a tokenizer of clips the clip length against its frame
grouping."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from vtok.models.base import Tokenizer
from vtok.models.limits import MAX_CODEBOOK_SIZE as MAX_CODEBOOK
from vtok.models.limits import MAX_PARAMETERS as MAX_PARAMS
from vtok.models.presets import PRESETS, architecture_of, preset_config
from vtok.quant import create_quantizer
from vtok.train.config import ConfigError, TrainConfig

# the bounds of a --model.FIELD override are the model config's own (its LIMITS and LENGTHS,
# vtok.models.limits), so that training and loading refuse the same values
MAX_COPIES = 64  # quantizer_options num_quantizers (residual) and groups (grouped)
MIN_CROP = 32  # LPIPS's AlexNet needs 31 pixels; smaller crops teach nothing useful


def check_model(config: TrainConfig) -> None:
    """ConfigError naming the field when the preset, a model override or the crop size cannot
    make a model that trains within the documented bounds."""
    try:
        base = PRESETS.get(config.preset)()
    except ValueError as err:
        raise ConfigError("preset", f"TrainConfig.preset: {err}") from None
    types = {f.name: _annotation(f.type) for f in dataclasses.fields(base)}
    for name, value in config.model.items():
        if name not in types:
            raise ConfigError(f"model.{name}", f"preset {config.preset!r} has no field {name}; "
                                               f"its fields are: {', '.join(sorted(types))}")
        problem = _field_problem(name, types[name], value, type(base))
        if problem:
            raise ConfigError(f"model.{name}", f"TrainConfig.model.{name} must be {problem}, "
                                               f"got {value!r}")
    options = config.model.get("quantizer_options", {})
    for name in ("num_quantizers", "groups"):  # copies of a quantizer
        if name in options and not (isinstance(options[name], int)
                                    and 1 <= options[name] <= MAX_COPIES):
            raise ConfigError("model.quantizer_options", f"TrainConfig.model.quantizer_options."
                                                         f"{name} must be an integer in [1, "
                                                         f"{MAX_COPIES}], got {options[name]!r}")
    try:
        model_config = preset_config(config.preset, **config.model)
        model, params, codes = _size_on_meta(model_config)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ConfigError("model", f"TrainConfig.model: the {config.preset!r} model cannot be "
                                   f"built with {config.model}: {err}") from None
    if params > MAX_PARAMS:
        raise ConfigError("model", f"TrainConfig.model: {config.model} makes a model of "
                                   f"{params:,} parameters, more than {MAX_PARAMS:,}")
    if codes > MAX_CODEBOOK:
        raise ConfigError("model", f"TrainConfig.model: {config.model} makes a codebook of "
                                   f"{codes:,} codes, more than {MAX_CODEBOOK:,}")
    _check_crop(config, model_config)
    _check_clips(config, model)


def _size_on_meta(model_config: Any) -> tuple[Tokenizer, int, int]:
    """(the model, its parameters, codes per index), built on the meta device: no memory, no
    random numbers. A quantizer that computes with its tensors while it is built (FSQ) is built
    for real on its own, and a two-code VQ stands in for it in the model."""
    try:
        with torch.device("meta"):
            model = architecture_of(model_config)(model_config)
        return model, sum(p.numel() for p in model.parameters()), model.codebook_size
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
    quantizer = create_quantizer(model_config.quantizer, dim=model_config.latent_dim,
                                 **model_config.quantizer_options)
    stand_in = dataclasses.replace(model_config, quantizer="vq",
                                   quantizer_options={"codebook_size": 2})
    with torch.device("meta"):
        model = architecture_of(stand_in)(stand_in)
    params = sum(p.numel() for p in model.parameters())
    params += sum(p.numel() for p in quantizer.parameters())
    params -= sum(p.numel() for p in model.quantizer.parameters())
    return model, params, quantizer.codebook_size


def _annotation(kind: Any) -> str:
    """A field's annotation as written ("int", "tuple[int, ...]"), postponed or not."""
    return kind if isinstance(kind, str) else kind.__name__ if isinstance(kind, type) \
        else str(kind)


def _field_problem(name: str, kind: str, value: Any, config_class: Any) -> str | None:
    """What `value` should be for a model field of annotation `kind`, or None if it is."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    limits, lengths = config_class.LIMITS, config_class.LENGTHS
    if kind == "int":
        high = limits[name]
        return None if is_int and 1 <= value <= high else f"an integer in [1, {high}]"
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "a finite number"
    if kind == "str":
        return None if isinstance(value, str) else "a string"
    if kind.startswith("tuple[int"):
        most, high = lengths[name], limits[name]
        ok = (isinstance(value, (list, tuple)) and 1 <= len(value) <= most
              and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high
                      for v in value))
        return None if ok else (f"a list of 1 to {most} integers in [1, {high}]")
    if kind.startswith("dict"):
        return None if isinstance(value, dict) else "a dict"
    return None  # other kinds are checked by the model's own config


def _check_crop(config: TrainConfig, model_config: Any) -> None:
    # pixels per token cell: the patch of a 1D tokenizer, the downsampling of a 2D grid
    cell = getattr(model_config, "patch_size", None) or getattr(model_config, "downsample", 1)
    low = max(MIN_CROP, cell) + (-max(MIN_CROP, cell)) % cell  # smallest multiple >= MIN_CROP
    high = 2048 - 2048 % cell
    native = getattr(model_config, "image_size", None)
    if native is not None:  # position tables stretch to at most 4x the native side
        high = min(high, 4 * native - 4 * native % cell)
    crop = config.crop_size
    if not (low <= crop <= high and crop % cell == 0):
        raise ConfigError("crop_size", f"TrainConfig.crop_size must be a multiple of {cell} "
                                       f"in [{low}, {high}] for preset {config.preset!r} "
                                       f"(it works on {cell}x{cell}-pixel cells), "
                                       f"got {crop}")
    if config.gan_weight > 0 and discriminator_output(crop, config.disc_layers) < 1:
        most = max(n for n in range(1, 9) if discriminator_output(crop, n) >= 1) \
            if discriminator_output(crop, 1) >= 1 else 0
        raise ConfigError("disc_layers", f"TrainConfig.disc_layers must be in [1, {most}] for "
                                         f"{crop}x{crop} crops (each layer halves them), "
                                         f"got {config.disc_layers}")


def _check_clips(config: TrainConfig, model: Tokenizer) -> None:
    """A tokenizer of clips trains on clips of a length it codes as they are (no padded
    frames to reconstruct); the 3D critic scores clips, so it needs such a tokenizer."""
    if not model.codes_clips:
        if config.disc_kind == "3d":
            raise ConfigError("disc_kind", f"TrainConfig.disc_kind '3d' scores clips, but "
                                           f"preset {config.preset!r} codes still images; "
                                           f"use '2d'")
        return
    frames = config.clip_frames
    if model.coded_frames(frames) != frames:
        fits = [n for n in range(1, 1025) if model.coded_frames(n) == n]
        shown = ", ".join(map(str, fits[:5])) + (", ..." if len(fits) > 5 else "")
        raise ConfigError("clip_frames", f"TrainConfig.clip_frames must be a length preset "
                                         f"{config.preset!r} codes without padding ({shown}), "
                                         f"got {frames}")


def discriminator_output(size: int, layers: int) -> int:
    """Side of the PatchDiscriminator's (and PatchDiscriminator3d's) score map for `size`
    pixels: 4x4 convolutions with padding 1, stride 2 in the first `layers` of them, then two
    of stride 1."""
    for _ in range(layers):
        size = (size + 2 - 4) // 2 + 1
    return size - 2
