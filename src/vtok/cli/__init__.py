"""The `vtok` command: one dispatch table of subcommands, `main(argv)` callable from tests."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import vtok
from vtok.cli import (
    data_cmd,
    decode_cmd,
    demo_cmd,
    encode_cmd,
    info_cmd,
    list_cmd,
    prior_cmd,
    reduce_bench_cmd,
    train_cmd,
)

# name -> module with `add_arguments(parser)` and `run(args) -> int`
COMMANDS = {
    "data": data_cmd,
    "decode": decode_cmd,
    "demo": demo_cmd,
    "encode": encode_cmd,
    "info": info_cmd,
    "list": list_cmd,
    "prior": prior_cmd,
    "reduce-bench": reduce_bench_cmd,
    "train": train_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtok",
        description="Visual tokenization: quantizers, tokenizers, token files, token reduction.",
    )
    parser.add_argument("--version", action="version", version=f"vtok {vtok.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip().splitlines()[0]
        module.add_arguments(sub.add_parser(name, help=doc, description=doc))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None and not extra:
        parser.print_help()
        return 0
    if extra and not getattr(COMMANDS.get(args.command), "TAKES_OVERRIDES", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
