"""The main job: shipped tokenizers vs JPEG/WebP/AVIF on the validation photos, and video
tokenizers vs H.264/H.265/AV1 on the validation clips, with a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vtok.cli.options import add_cache_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo"),
                        help="folder for results.json, report.html and the plots")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--tokenizers", nargs="+", metavar="NAME_OR_DIR",
                        help="shipped names or tokenizer folders (default: every shipped one)")
    parser.add_argument("--no-video", action="store_true",
                        help="skip the video section (video tokenizers vs H.264/H.265/AV1)")
    parser.add_argument("--clips", nargs="+", type=Path, metavar="FILE",
                        help="video files for the video section (default: the val clips)")
    parser.add_argument("--video-frames", type=int, default=17,
                        help="first frames of each clip (default 17)")
    parser.add_argument("--video-side", type=int, default=256,
                        help="largest frame side of the clips, in pixels (default 256)")
    add_cache_option(parser)


def run(args: argparse.Namespace) -> int:
    from vtok.eval.demo import run_demo, table
    from vtok.eval.demo_video import VideoOptions

    if args.limit is not None and args.limit < 1:
        print(f"vtok demo: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"vtok demo: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        video = None if args.no_video else VideoOptions(
            None if args.clips is None else tuple(args.clips), args.video_frames,
            args.video_side)
    except ValueError as err:
        print(f"vtok demo: {err}", file=sys.stderr)
        return 2
    try:
        demo = run_demo(args.out, limit=args.limit, progress=sys.stderr.isatty(),
                        cache=args.cache, tokenizers=args.tokenizers, video=video)
    except (RuntimeError, ValueError, OSError) as err:  # photos missing or unreadable, ...
        print(f"vtok demo: {err}", file=sys.stderr)
        return 1
    print(table(demo.results))
    print(demo.video.text())
    print(f"report: {args.out / 'report.html'}  (results.json, rd_lpips.png, rd_psnr.png"
          f"{', video/' if demo.video.shown else ''})")
    return 0
