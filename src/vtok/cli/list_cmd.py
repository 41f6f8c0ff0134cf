"""List the registered components (quantizers) with their size and a one-line summary."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="quantizers", choices=["quantizers"])


def run(args: argparse.Namespace) -> int:
    from vtok.quant import QUANTIZERS

    for name in QUANTIZERS.names():
        doc = (QUANTIZERS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:8s} {doc}")
    return 0
