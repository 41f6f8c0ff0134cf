"""The main job: shipped tokenizers vs JPEG/WebP/AVIF on the validation photos, with a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vtok.cli.options import add_cache_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo"),
                        help="folder for results.json, report.html and the plots")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    add_cache_option(parser)


def run(args: argparse.Namespace) -> int:
    from vtok.eval.demo import run_demo, table

    if args.limit is not None and args.limit < 1:
        print(f"vtok demo: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"vtok demo: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        results = run_demo(args.out, limit=args.limit, progress=sys.stderr.isatty(),
                           cache=args.cache)
    except (RuntimeError, ValueError, OSError) as err:  # photos missing or unreadable, ...
        print(f"vtok demo: {err}", file=sys.stderr)
        return 1
    print(table(results))
    print(f"report: {args.out / 'report.html'}  (results.json, rd_lpips.png, rd_psnr.png)")
    return 0
