"""Prepare the default photo set (`vtok data prepare`) into the cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="gather the default photos into the cache")
    prep.add_argument("--cache", type=Path, default=None,
                      help="cache folder (default: $VTOK_CACHE or ~/.cache/vtok)")


def run(args: argparse.Namespace) -> int:
    from vtok.data.photos import cache_dir, prepare

    cache = args.cache or cache_dir()
    report = prepare(cache, progress=sys.stderr.isatty())
    print(report.summary())
    print(f"cache: {cache / 'photos'}")
    return 0 if report.ok else 1
