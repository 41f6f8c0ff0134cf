"""List the registered quantizers, the tokenizer presets, or the shipped trained tokenizers."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="quantizers",
                        choices=["quantizers", "presets", "pretrained"])


def _first_line(obj: object) -> str:
    return " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())


def run(args: argparse.Namespace) -> int:
    if args.kind == "quantizers":
        from vtok.quant import QUANTIZERS

        for name in QUANTIZERS.names():
            print(f"{name:8s} {_first_line(QUANTIZERS.get(name))}")
    elif args.kind == "presets":
        from vtok.models.presets import PRESETS

        for name in PRESETS.names():
            print(f"{name:14s} {_first_line(PRESETS.get(name))}")
    else:
        from vtok.models import list_pretrained

        for entry in list_pretrained():
            tokens = entry.get("tokens", "")
            print(f"{entry['name']:14s} {entry['architecture']:7s} {tokens}")
    return 0
