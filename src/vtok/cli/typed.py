"""Command lines built from typed dataclass fields with jsonargparse (`vtok train`,
`vtok reduce-bench`): each field an option of its annotated type, checked as it is read;
`--config FILE` (YAML or JSON holding any of them; options after it override it) and
`--print_config` (the whole resolved configuration, to save and pass back with --config).

Options are spelt --field-name; fields under a prefix keep their names (--model.channel_mult).
jsonargparse is imported only when such a command runs, so `vtok --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Sequence
from typing import Any


class OptionError(ValueError):
    """A command line the parser refused; the message, on one line, names the option."""


class FlagError(argparse.ArgumentTypeError, ValueError):
    """argparse shows an ArgumentTypeError's message; jsonargparse, a ValueError's."""


class Flag:
    """A strict true/false (or null) value. jsonargparse reads values as YAML 1.1, where yes,
    no, on and off are booleans too; on the command line only true and false are."""

    def __init__(self, nullable: bool = False) -> None:
        self.nullable = nullable

    def __call__(self, value: Any) -> bool | None:
        if isinstance(value, bool) or (self.nullable and value is None):
            return value  # already read from a config file
        if value in ("true", "false"):
            return value == "true"
        if self.nullable and value == "null":
            return None
        raise FlagError(f"expected {self.choices}, got {value!r}")

    @property
    def choices(self) -> str:
        return "true, false or null" if self.nullable else "true or false"

    def __repr__(self) -> str:  # the type --help shows
        return "bool | null" if self.nullable else "bool"


def new_parser(command: str, description: str, extra: str, **kwargs: Any):
    """A parser for `vtok COMMAND` with --config and --print_config. `extra`: the package
    extra that installs jsonargparse, named when it is missing."""
    try:
        from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter
    except ImportError:
        raise SystemExit(f"vtok {command} needs jsonargparse: pip install 'vtok[{extra}]'"
                         ) from None

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """jsonargparse's (types and defaults listed), keeping the description's lines."""

    parser = ArgumentParser(prog=f"vtok {command}", description=description,
                            formatter_class=Formatter, exit_on_error=False, **kwargs)
    parser.add_argument("--config", action=ActionConfigFile, metavar="FILE",
                        help="YAML or JSON file of options, keyed by field name (batch_size: "
                             "8); options after it override it")
    return parser


def add_fields(parser, source: Any, prefix: str = "", skip: Sequence[str] = (),
               extra: dict[str, dict[str, Any]] | None = None) -> None:
    """Every field of the dataclass `source` as an option of its type, defaulting to the
    field's default (a class) or value (an instance): --NAME-WITH-DASHES, or --PREFIX.NAME.
    A field's `metadata` and `extra[name]` add add_argument options (help, metavar...)."""
    cls = source if isinstance(source, type) else type(source)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        options = {"default": _default(source, f), **_typed(hints[f.name]), **f.metadata,
                   **(extra or {}).get(f.name, {})}
        if options.get("required"):
            del options["default"]  # a default would count as given
        parser.add_argument(f"--{prefix}.{f.name}" if prefix else option_name(f.name),
                            **options)


def option_name(key: str) -> str:
    """The option of a parsed key: batch_size -> --batch-size, model.channel_mult -> itself."""
    return f"--{key}" if "." in key else "--" + key.replace("_", "-")


def parse(parser, argv: Sequence[str]) -> dict[str, Any]:
    """The parsed options as a plain dict (without --config); OptionError when refused."""
    try:
        values = parser.parse_args(list(argv)).as_dict()
    except argparse.ArgumentError as err:
        raise OptionError(_one_line(str(err))) from None
    values.pop("config", None)
    return values


def _default(source: Any, f: dataclasses.Field) -> Any:
    if not isinstance(source, type):
        value = getattr(source, f.name)
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    return list(value) if isinstance(value, tuple) else value


def _typed(kind: Any) -> dict[str, Any]:
    """add_argument options for a field annotated `kind`: booleans strictly true/false (or
    null), lists and tuple[T, ...] as space-separated values (--keeps 0.5 0.25), anything
    else as jsonargparse reads that type (YAML or JSON for a mapping)."""
    args = typing.get_args(kind)
    optional = len(args) == 2 and type(None) in args
    inner = next(a for a in args if a is not type(None)) if optional else kind
    if inner is bool:
        flag = Flag(optional)
        return {"type": flag, "metavar": "{true,false,null}" if optional else "{true,false}"}
    items = typing.get_args(inner)
    if typing.get_origin(inner) is list or (typing.get_origin(inner) is tuple
                                             and items[1:] == (Ellipsis,)):
        return {"type": items[0], "nargs": "+"}
    return {"type": kind}


def _one_line(message: str) -> str:
    """jsonargparse's message on one line, naming the option as it is typed."""
    text = " ".join(message.split())
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("NoneType", "null")
    found = re.match(r'Parser key "([^"]+)"(?: element \d+)?: (.*)', text)
    if not found:  # argparse's own: "argument --bf16: ...", "unrecognized arguments: ..."
        text = re.sub(r"^Option '([^']+)' is not accepted",  # a config file's unknown key
                      lambda unknown: f"unknown option {option_name(unknown[1])}", text)
        text = re.sub(r"^(the following arguments are required: )(.*)", lambda missing:
                      missing[1] + ", ".join(map(option_name, missing[2].split(", "))), text)
        return re.sub(r"^argument (--[^\s/:]+)\S*:", r"option \1:", text)
    key, detail = found.groups()
    union = re.match(r"Does not validate against any of the Union subtypes Subtypes: "
                     r"\[(.*?)\] Errors: .* Given value: (.*)", detail)
    if union:
        detail = f"expected {union[1].replace(', ', ' or ')}, got {union[2]}"
    detail = re.sub(r"^Expected an? (.+?)\. Got value: ", r"expected \1, got ", detail)
    return f"option {option_name(key)}: {detail}"
