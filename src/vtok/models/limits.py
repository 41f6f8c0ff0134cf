"""Bounds on tokenizer configs, checked in `__post_init__` before anything is built.

A `config.json` decides how much memory a tokenizer takes before a single weight is read, so
every field is checked for its type (bool is not int; tuples hold ints) and every size against a
maximum. The maxima leave room above the published scales of the presets (vqgan-f16: channels
128 x mult 4, latent 256, 16,384 codes; titok-s-128: width 512, depth 8, 128 tokens), and the
estimated weights of the whole tokenizer must stay under `MAX_PARAMETERS`, so no combination
of allowed values exhausts a machine's memory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

MAX_PARAMETERS = 1_500_000_000  # estimated weights of one tokenizer: 6 GB in float32 (TiTok-L fits)
MAX_CODEBOOK_SIZE = 1 << 18  # codes of one stored codebook (vq); lfq/bsq/fsq store none
MAX_LATENT_DIM = 1024
COMPOSITES = {"rvq": ("num_quantizers", "shared_codebook", "quantize_dropout"),
              "msrvq": ("scales",), "gvq": ("groups", "disentangle_weight")}
IMPLICIT = ("lfq", "bsq", "fsq")  # codes are computed, not stored


def check_fields(config: Any, limits: dict[str, int], lengths: dict[str, int]) -> None:
    """Type of every dataclass field, and `1 <= value <= limits[name]` for sizes; tuple fields
    hold 1..lengths[name] integers each in [1, limits[name]]."""
    cls = type(config).__name__
    for f in dataclasses.fields(config):
        name, value, kind = f.name, getattr(config, f.name), str(f.type)
        where = f"{cls}.{name}"
        if kind == "int":
            _check_int(where, value, limits[name])
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        elif kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        elif kind.startswith("tuple"):
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= lengths[name]:
                raise ValueError(f"{where} must be a list of 1 to {lengths[name]} integers, "
                                 f"got {value!r}")
            for v in value:
                _check_int(where, v, limits[name], f" (each of {value!r})")
            setattr(config, name, tuple(value))
        elif kind.startswith("dict") and not (
                isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise ValueError(f"{where} must be a dict of named options, got {value!r}")


def _check_int(where: str, value: Any, maximum: int, context: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValueError(f"{where} must be an integer in [1, {maximum}]{context}, got {value!r}")


def check_quantizer(where: str, name: Any, options: Any, dim: int) -> int:
    """Refuse stored codebooks over MAX_CODEBOOK_SIZE (nested quantizers included, in either
    option form); the floats their codebooks hold, for the parameter estimate. Anything else
    about the options is left to the quantizer, which checks before it allocates."""
    if not isinstance(name, str) or not isinstance(options, dict):
        return 0  # the quantizer registry names the problem
    if name in COMPOSITES:
        inner_name = options.get("quantizer", "vq")
        inner = options.get("quantizer_options")
        if inner is None:  # flat form: the composite's own options are not the inner's
            skip = (*COMPOSITES[name], "quantizer")
            inner = {k: v for k, v in options.items() if k not in skip}
        copies = 1
        if name == "gvq":
            groups = options.get("groups", 2)
            copies = groups if isinstance(groups, int) and groups >= 1 else 1
            dim = max(1, dim // copies)
        elif name == "rvq" and not options.get("shared_codebook", False):
            levels = options.get("num_quantizers", 1)
            copies = levels if isinstance(levels, int) and levels >= 1 else 1
        return copies * check_quantizer(f"{where}.quantizer_options", inner_name, inner, dim)
    size = options.get("codebook_size")
    if name in IMPLICIT or size is None:
        return 0
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= MAX_CODEBOOK_SIZE:
        raise ValueError(f"{where}.codebook_size must be an integer in [2, {MAX_CODEBOOK_SIZE}]"
                         f", got {size!r}")
    lookup = options.get("codebook_dim") or dim
    lookup = lookup if isinstance(lookup, int) and not isinstance(lookup, bool) else dim
    _check_int(f"{where}.codebook_dim", lookup, MAX_LATENT_DIM)
    return 3 * size * lookup  # codebook and its EMA sums, with in/out projections aside


def check_budget(config: Any, parameters: int) -> None:
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"{type(config).__name__} would hold about {parameters / 1e6:.0f}M "
                         f"parameters, over the limit of {MAX_PARAMETERS / 1e6:.0f}M "
                         f"(vtok.models.limits.MAX_PARAMETERS); make it smaller")


def resblock_parameters(a: int, b: int) -> int:
    """Weights of a ResBlock from a to b channels (two 3x3 convs, a 1x1 skip when a != b)."""
    return 9 * a * b + 9 * b * b + (a * b if a != b else 0)


def transformer_parameters(width: int, depth: int) -> int:
    """Weights of `depth` transformer blocks (attention 4 w^2, MLP 8 w^2)."""
    return 12 * width * width * depth
