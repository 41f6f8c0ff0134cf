"""The `vtok` command: one dispatch table of subcommands, `main(argv)` callable from tests.

Start-up stays fast: the command modules import nothing heavy at the top, and only the chosen
subcommand's options are built (building `train`'s imports torch). `train` and `reduce-bench`
parse their own options from typed fields (`vtok.cli.typed`, with jsonargparse): they have
`main(argv)` instead of `add_arguments` and `run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import vtok
from vtok.cli import (
    convert_cmd,
    data_cmd,
    decode_cmd,
    demo_cmd,
    encode_cmd,
    eval_cmd,
    info_cmd,
    list_cmd,
    prior_cmd,
    reduce_bench_cmd,
    tokenize_cmd,
    train_cmd,
)

# name -> module with `add_arguments(parser)` and `run(args) -> int`, or with `main(argv) -> int`
COMMANDS = {
    "convert": convert_cmd,
    "data": data_cmd,
    "decode": decode_cmd,
    "demo": demo_cmd,
    "encode": encode_cmd,
    "eval": eval_cmd,
    "info": info_cmd,
    "list": list_cmd,
    "prior": prior_cmd,
    "reduce-bench": reduce_bench_cmd,
    "tokenize": tokenize_cmd,
    "train": train_cmd,
}
EVERY = "*"


def build_parser(command: str | None = EVERY) -> argparse.ArgumentParser:
    """The parser with the options of `command` (every subcommand's by default; None: none)."""
    parser = argparse.ArgumentParser(
        prog="vtok",
        description="Visual tokenization: quantizers, tokenizers, token files, token reduction.",
    )
    parser.add_argument("--version", action="version", version=f"vtok {vtok.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip().splitlines()[0]
        subparser = sub.add_parser(name, help=doc, description=doc)
        if command in (EVERY, name) and hasattr(module, "add_arguments"):
            module.add_arguments(subparser)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv`: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = chosen_command(argv)
    parser = build_parser(name)
    if hasattr(COMMANDS.get(name), "main"):  # a typed command reads every word after its name
        at = argv.index(name)
        parser.parse_args(argv[:at + 1])  # what comes before it: --version, --help
        return COMMANDS[name].main(argv[at + 1:])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
