"""Train a tokenizer from a preset on a folder of images or the default photos.

Any training field can be set as --FIELD VALUE (e.g. --lr 1e-4 --gan-start 500) and any model
field of the preset as --model.FIELD VALUE (e.g. --model.channels 64). Values are JSON when
they parse as JSON ({"codebook_size": 4096}, 1e-4, true), strings otherwise.
Under torchrun (`torchrun --nproc_per_node=N -m vtok train ...`) it trains with DDP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from vtok.cli.options import add_cache_option

TAKES_OVERRIDES = True  # the dispatcher hands unparsed --FIELD VALUE pairs to `run`


def _fields() -> set[str]:
    from vtok.train.config import TrainConfig  # imports torch: only when training

    return {f.name for f in dataclasses.fields(TrainConfig)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtok.train.config import TrainConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1] + "\nfields: " + ", ".join(sorted(_fields()))
    parser.add_argument("--preset", default=TrainConfig.preset, help="tokenizer preset")
    parser.add_argument("--data", default=None, help="image folder or .tar shards "
                        "(default: the default photos' train split)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_cache_option(parser)


def parse_overrides(tokens: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """['--lr', '1e-4', '--model.channels=64'] -> ({'lr': 1e-4}, {'channels': 64})."""
    train, model, fields = {}, {}, _fields()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}; options look like --FIELD VALUE")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise ValueError(f"option --{key} needs a value")
            value, i = tokens[i + 1], i + 1
        i += 1
        if key.startswith("model."):
            model[key[len("model."):].replace("-", "_")] = _value(value)
        else:
            name = key.replace("-", "_")
            if name not in fields:
                raise ValueError(f"unknown option --{key}; training fields: "
                                 f"{', '.join(sorted(fields))}")
            train[name] = _value(value)
    return train, model


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(args: argparse.Namespace) -> int:
    from vtok.cache import MissingAssetError
    from vtok.models.presets import preset_config
    from vtok.train.config import TrainConfig
    from vtok.train.loop import train

    try:
        extra, model = parse_overrides(args.overrides)
        preset_config(args.preset, **model)  # fail early on a bad model field
        cache = None if args.cache is None else str(args.cache)
        config = TrainConfig(preset=args.preset, data=args.data, steps=args.steps, out=args.out,
                             model=model, cache=cache, **extra)
        summary = train(config, resume=args.resume)
    except ValueError as err:
        print(f"vtok train: {err}", file=sys.stderr)
        return 2
    except MissingAssetError as err:  # names `vtok data prepare`
        print(f"vtok train: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped_images"}))
    return 0
