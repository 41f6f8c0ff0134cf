"""Train a tokenizer from a preset on a folder of images or the default photos.

Any training field can be set as --FIELD VALUE (e.g. --lr 1e-4 --gan-start 500) and any model
field of the preset as --model.FIELD VALUE (e.g. --model.channels 64). Each value must be of
its field's type: true/false, an integer, a finite number, a string, a list (1,2,4 or [1,2,4])
or a JSON object ({"codebook_size": 4096}); null clears an optional field. Out-of-range values
are refused before any work (exit code 2).
Under torchrun (`torchrun --nproc_per_node=N -m vtok train ...`) it trains with DDP.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
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


def parse_overrides(tokens: list[str], preset: str | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """['--lr', '1e-4', '--model.channels=64'] -> ({'lr': 1e-4}, {'channels': 64}).

    Each value is parsed as its field's type, strictly: a bool takes true or false, an int
    refuses 1.5 and true, a float refuses true and non-finite values. Model fields are typed
    by `preset` (left as JSON without one). ValueError naming the option and the value."""
    from vtok.train.config import TrainConfig

    train, model, fields = {}, {}, _fields()
    kinds = {f.name: _annotation(f.type) for f in dataclasses.fields(TrainConfig)}
    model_kinds = _model_kinds(preset)
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
            name = key[len("model."):].replace("-", "_")
            kind = model_kinds.get(name, "json")  # an unknown field is named by TrainConfig
            model[name] = parse_value(f"--{key}", value, kind)
        else:
            name = key.replace("-", "_")
            if name == "model":
                raise ValueError("set model fields one by one: --model.FIELD VALUE")
            if name not in fields:
                raise ValueError(f"unknown option --{key}; training fields: "
                                 f"{', '.join(sorted(fields))}")
            train[name] = parse_value(f"--{key}", value, kinds[name])
    return train, model


def parse_value(option: str, text: str, kind: str) -> Any:
    """`text` as a value of a field annotated `kind` ("int", "float | None", "bool",
    "list[str] | None", "tuple[int, ...]", "dict[str, Any]"...)."""
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if optional and text in ("null", "none", "None"):
        return None
    if kind == "str":
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text if kind in ("json", "list[str]", "tuple[int, ...]") else _NOT_JSON
        if kind == "float":
            with contextlib.suppress(ValueError):
                value = float(text)  # .5 and friends
    allowed = _ALLOWED.get(kind, "a JSON value") + (" or null" if optional else "")
    if kind in ("list[str]", "tuple[int, ...]") and isinstance(value, str):
        value = [v.strip() for v in value.split(",")]  # decoder,encoder / 1,2,4
        if kind.startswith("tuple"):
            value = [int(v) if v.lstrip("-").isdigit() else v for v in value]
    ok = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                            and math.isfinite(v)),
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "tuple[int, ...]": lambda v: isinstance(v, list) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in v),
        "dict[str, Any]": lambda v: isinstance(v, dict),
    }.get(kind, lambda v: v is not _NOT_JSON)
    if not ok(value):
        raise ValueError(f"option {option} must be {allowed}, got {text!r}")
    return value


_NOT_JSON = object()
_ALLOWED = {"bool": "true or false", "int": "an integer", "float": "a finite number",
            "list[str]": 'a list of names such as decoder,encoder or ["decoder"]',
            "tuple[int, ...]": "a list of integers such as 1,2,4 or [1, 2, 4]",
            "dict[str, Any]": 'a JSON object such as {"codebook_size": 4096}'}


def _annotation(kind: Any) -> str:
    return kind if isinstance(kind, str) else kind.__name__ if isinstance(kind, type) \
        else str(kind)


def _model_kinds(preset: str | None) -> dict[str, str]:
    from vtok.models.presets import PRESETS

    if preset is None or preset not in PRESETS:
        return {}  # TrainConfig names the unknown preset
    return {f.name: _annotation(f.type) for f in dataclasses.fields(PRESETS.get(preset)())}


def run(args: argparse.Namespace) -> int:
    from vtok.cache import MissingAssetError
    from vtok.train.config import ConfigError, TrainConfig
    from vtok.train.loop import TrainingFailed, train

    try:  # every option is checked before any work
        extra, model = parse_overrides(args.overrides, args.preset)
        cache = None if args.cache is None else str(args.cache)
        config = TrainConfig(preset=args.preset, data=args.data, steps=args.steps, out=args.out,
                             model=model, cache=cache, **extra)
    except ConfigError as err:
        option = (f"--{err.field}" if err.field.startswith("model.") else "--model.*"
                  if err.field == "model" else "--" + err.field.replace("_", "-"))
        print(f"vtok train: option {option}: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"vtok train: {err}", file=sys.stderr)
        return 2
    try:
        summary = train(config, resume=args.resume)
    except TrainingFailed as err:
        print(f"vtok train: training failed: {err}", file=sys.stderr)
        return 1
    except MissingAssetError as err:  # names `vtok data prepare`
        print(f"vtok train: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"vtok train: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped_images"}))
    return 0
