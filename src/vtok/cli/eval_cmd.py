"""Score tokenizers side by side with JPEG/WebP/AVIF: quality, rate, text, robustness, report.

`vtok eval --tokenizers conv2d-f8 titok-flex runs/mine --images DIR --out report/` writes
results.json (one row per tokenizer or codec setting), PNG plots and report.html into the
--out folder, all at once at the end: a run that fails leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vtok.cli.options import add_cache_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizers", "-t", nargs="+", required=True, metavar="TOK",
                        help="tokenizer folders, shipped names (conv2d-f8, titok-flex) or "
                        "presets (built untrained)")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="a folder of images (recursive); default: the validation photos "
                        "of `vtok data prepare`")
    parser.add_argument("--out", type=Path, default=Path("eval"),
                        help="folder for results.json, the plots and report.html")
    parser.add_argument("--size", type=int, default=256,
                        help="images are centre-cropped to SIZE x SIZE (default 256)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--token-counts", type=int, nargs="+", default=None, metavar="K",
                        help="token counts of variable-length tokenizers (default 8, 16, ... "
                        "up to the maximum)")
    parser.add_argument("--codecs", nargs="*", default=["jpeg", "webp", "avif"],
                        choices=["jpeg", "webp", "avif"],
                        help="classic codecs swept over qualities (none: --codecs alone)")
    parser.add_argument("--qualities", nargs="+", default=None, metavar="CODEC=Q,Q",
                        help="quality sweeps, e.g. avif=0,10,30 jpeg=5,25 (default: 6 qualities "
                        "from each codec's lowest)")
    parser.add_argument("--text-photos", type=int, default=4,
                        help="photos the text-fidelity words are drawn on (default 4)")
    parser.add_argument("--text-sizes", type=int, nargs="+", default=None, metavar="PX",
                        help="font sizes of the text-fidelity words (default 8 12 16 24 32 48 64)")
    parser.add_argument("--no-text", action="store_true", help="skip text fidelity")
    parser.add_argument("--no-robustness", action="store_true", help="skip the token-error probe")
    parser.add_argument("--no-features", action="store_true",
                        help="skip the EfficientNet-Lite0 feature distance")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                        help="local FID Inception-v3 weights (torch-fidelity's "
                        "pt_inception-2015-12-05 .pth, or .safetensors): adds real FID to "
                        "every row; nothing is downloaded")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, "
                        "cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    add_cache_option(parser)


def parse_qualities(words: list[str] | None) -> dict[str, list[int]] | None:
    """{"avif": [0, 10, 30], ...} from ["avif=0,10,30", ...]; the codecs not named keep
    their default sweeps. ValueError naming the bad word."""
    from vtok.eval.methods import QUALITIES

    if not words:
        return None
    sweeps = {codec: list(qs) for codec, qs in QUALITIES.items()}
    for word in words:
        codec, _, values = word.partition("=")
        try:
            qualities = sorted({int(v) for v in values.split(",")})
        except ValueError:
            qualities = []
        if codec not in QUALITIES or not qualities or not all(0 <= q <= 100 for q in qualities):
            raise ValueError(f"--qualities {word!r}: expected CODEC=Q,Q,... with CODEC one of "
                             f"{', '.join(QUALITIES)} and qualities 0-100")
        sweeps[codec] = qualities
    return sweeps


def run(args: argparse.Namespace) -> int:
    from vtok.eval.compare import EvalConfig, EvalError, evaluate

    try:
        qualities = parse_qualities(args.qualities)
    except ValueError as err:
        print(f"vtok eval: {err}", file=sys.stderr)
        return 2
    try:
        config = EvalConfig(
            tokenizers=args.tokenizers, images=args.images, out=args.out, size=args.size,
            limit=args.limit, batch_size=args.batch_size, token_counts=args.token_counts,
            codecs=args.codecs, qualities=qualities, text=not args.no_text,
            text_photos=args.text_photos,
            **({"text_sizes": args.text_sizes} if args.text_sizes else {}),
            robustness=not args.no_robustness, features=not args.no_features,
            inception_weights=args.inception_weights, device=args.device, cache=args.cache,
            seed=args.seed, progress=sys.stderr.isatty())
        results = evaluate(config)
    except EvalError as err:
        print(f"vtok eval: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as err:
        print(f"vtok eval: {err}", file=sys.stderr)
        return 1
    print(table(results["rows"]))
    for note in results["notes"]:
        print(f"note: {note}")
    for entry in results["skipped"]:
        print(f"skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    print(f"report: {Path(args.out) / 'report.html'} ({len(results['images'])} images, "
          f"{results['seconds']:.0f} s)")
    return 0


def table(rows: list[dict]) -> str:
    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    width = max([14] + [len(r["method"]) for r in rows])  # folder names are not cut short
    lines = [f"{'method':{width}s} {'setting':12s} {'bpp':>8s} {'PSNR':>6s} {'SSIM':>6s} "
             f"{'LPIPS-A':>7s} {'LPIPS-V':>7s}"]
    lines += [f"{r['method']:{width}s} {r['setting']:12s} {fmt(r['bpp'], '8.4f')} "
              f"{fmt(r['psnr'], '6.2f')} {fmt(r['ssim'], '6.3f')} {fmt(r['lpips_alex'], '7.3f')} "
              f"{fmt(r['lpips_vgg'], '7.3f')}" for r in rows]
    return "\n".join(lines)
