"""Train a tokenizer from a preset on a folder of images or the default photos; a video
tokenizer (one that codes clips, such as the conv3d presets) on a folder of videos or the
default clips, in clips of --clip-frames frames.

Every training field is an option of its type (--lr 1e-4 --gan-start 500 --progress false)
and every field of the preset's model one as --model.FIELD (--model.channels 64,
--model.channel_mult 1 2 4, --model.quantizer_options '{"codebook_size": 256}');
`vtok train --preset NAME --help` lists that preset's model fields and defaults.
--config FILE reads any of them from YAML or JSON (model fields under `model:`); options
after it override it. --print_config prints the whole resolved configuration in that form.
Values of the wrong type or out of range are refused before any work (exit code 2).
Under torchrun (`torchrun --nproc_per_node=N -m vtok train ...`) it trains with DDP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OPTIONS = {  # add_argument options beyond each field's type and default
    "preset": {"help": "tokenizer preset (`vtok list presets`)"},
    "data": {"help": "image folder or .tar shards (default: the default photos' train split); "
                     "for a video tokenizer a folder of videos, images in it being one-frame "
                     "clips (default: the default clips' train split)"},
    "val_data": {"help": "images (videos) scored every --sample-every steps (default: none; "
                         "the default clips' val split for a video tokenizer on them)"},
    "clip_frames": {"help": "video tokenizers: frames per training clip, a length the "
                            "tokenizer codes without padding (1 + 4k for conv3d)"},
    "frame_stride": {"help": "video tokenizers: take every n-th frame of a video"},
    "image_every": {"help": "video tokenizers: every n-th step trains on one-frame clips (the "
                            "data's images and single video frames); 0: never"},
    "lpips_frames": {"help": "LPIPS on this many random frames of each clip (0: all)"},
    "photo_motion": {"help": "video tokenizers: this share of the clips are photos seen "
                             "through a random camera move (pan and zoom)"},
    "motion_data": {"help": "the photos for --photo-motion (default: the default photos' train "
                            "split)"},
    "disc_kind": {"help": "2d: PatchGAN on images (clips frame by frame); 3d: on clips"},
    "init": {"help": "start from this tokenizer's weights: a shipped name or a folder (a "
                     "conv2d one for a conv3d preset is inflated: same widths and blocks)"},
    "out": {"help": "run folder", "required": True},
    "grow_codebook": {"help": "with --init: a smaller VQ codebook grows by splitting its most "
                              "used codes"},
    "train_only": {"metavar": "PART", "help": "train only these top-level parts (e.g. decoder); "
                                              "the others keep their weights"},
    "stop_at": {"help": "end this invocation early (the schedule still spans --steps)"},
    "batch_size": {"help": "per process"},
    "min_scale": {"help": "random zoom-out: crops cover up to crop-size/min-scale pixels"},
    "ema_decay": {"help": "EMA of the weights; 0 turns it off"},
    "gan_start": {"help": "adversarial terms start at this step"},
    "bf16": {"help": "bf16 autocast (null: on CUDA only)"},
}


def main(argv: Sequence[str]) -> int:
    from vtok.cli.typed import OptionError, option_name
    from vtok.train.config import ConfigError

    try:  # every option is checked before any work
        config, resume = read_options(argv)
    except OptionError as err:
        print(f"vtok train: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        option = "--model.*" if err.field == "model" else option_name(err.field)
        print(f"vtok train: option {option}: {err}", file=sys.stderr)
        return 2
    return run(config, resume)


def read_options(argv: Sequence[str]):
    """(TrainConfig, resume) from the command line; OptionError or ConfigError naming the
    option. --model.* options are typed by the preset's model config, so the preset is
    looked up first."""
    from vtok.cli.typed import parse
    from vtok.train.config import TrainConfig

    preset = preset_named(argv)
    values = parse(build_parser(preset), argv)
    if values["preset"] != preset:  # named in a way the first look missed: read it again
        preset = values["preset"]
        values = parse(build_parser(preset), argv)
    resume = values.pop("resume")
    values["model"] = model_overrides(preset, values.pop("model", {}))
    return TrainConfig(**values), resume


def build_parser(preset: str):
    """The options of TrainConfig and of `preset`'s model config (none when it is unknown)."""
    from vtok.cli.options import cache_help
    from vtok.cli.typed import add_fields, new_parser
    from vtok.models.presets import PRESETS
    from vtok.train.config import TrainConfig

    parser = new_parser("train", __doc__, "train", allow_abbrev=False)
    add_fields(parser, TrainConfig, skip=["model"],
               extra={**OPTIONS, "cache": {"metavar": "DIR", "help": cache_help()}})
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    with contextlib.suppress(ValueError):  # an unknown preset: TrainConfig names it
        add_fields(parser, PRESETS.get(preset)(), prefix="model")
    return parser


def preset_named(argv: Sequence[str]) -> str:
    """The preset `argv` asks for: its last --preset, or the `preset:` of a --config file
    given after it."""
    from vtok.train.config import TrainConfig

    look = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    look.add_argument("--preset", dest="found", action="append")
    look.add_argument("--config", dest="found", action="append", type=_preset_in_file)
    try:
        found = [p for p in look.parse_known_args(list(argv))[0].found or [] if p]
    except argparse.ArgumentError:  # the real parser says what is wrong
        found = []
    return found[-1] if found else TrainConfig.preset


def _preset_in_file(source: str) -> str | None:
    """A --config file's `preset:` (jsonargparse also takes the file's text itself)."""
    import yaml

    try:
        text = Path(source).read_text() if Path(source).is_file() else source
        values = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    preset = values.get("preset") if isinstance(values, dict) else None
    return preset if isinstance(preset, str) else None


def model_overrides(preset: str, model: dict[str, Any]) -> dict[str, Any]:
    """The model fields whose values differ from the preset's (tuples as lists, as JSON)."""
    from vtok.models.presets import PRESETS

    if not model:
        return {}
    base = PRESETS.get(preset)()
    plain = lambda value: json.loads(json.dumps(value))
    return {name: plain(value) for name, value in model.items()
            if plain(value) != plain(getattr(base, name))}


def run(config, resume: bool) -> int:
    from vtok.cache import MissingAssetError
    from vtok.train.loop import TrainingFailed, train

    try:
        summary = train(config, resume=resume)
    except TrainingFailed as err:
        print(f"vtok train: training failed: {err}", file=sys.stderr)
        return 1
    except MissingAssetError as err:  # names `vtok data prepare`
        print(f"vtok train: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"vtok train: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("skipped_images", "skipped_videos")}))
    return 0
