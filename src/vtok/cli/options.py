"""Options several subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_cache_option(parser: argparse.ArgumentParser) -> None:
    """`--cache DIR`: the folder `vtok data prepare` fills (photos, LPIPS weights)."""
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR", help=cache_help())


def cache_help() -> str:
    from vtok.cache import default_cache_dir

    return ("the folder `vtok data prepare` fills with the default photos and the LPIPS "
            f"weights (default: {default_cache_dir()})")
