"""List the registered quantizers, the tokenizer presets, or the shipped trained tokenizers.

Read from the sources and the shipped config.json files, without importing torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="quantizers",
                        choices=["quantizers", "presets", "pretrained"])


def first_line(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def registered(kind: str) -> dict[str, str]:
    """name -> docstring of the registered quantizers or presets, found in the sources."""
    from vtok.registry import registered_in

    if kind == "quantizers":
        return registered_in(sorted((PACKAGE / "quant").glob("*.py")), "QUANTIZERS")
    return registered_in([PACKAGE / "models" / "presets.py"], "PRESETS")


def run(args: argparse.Namespace) -> int:
    if args.kind == "pretrained":
        from vtok.models.shipped import list_pretrained

        for entry in list_pretrained():
            tokens = entry.get("tokens", "")
            print(f"{entry['name']:14s} {entry['architecture']:7s} {tokens}")
        return 0
    width = 8 if args.kind == "quantizers" else 14
    for name, doc in registered(args.kind).items():
        print(f"{name:{width}s} {first_line(doc)}")
    return 0
