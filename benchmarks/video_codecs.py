"""A video tokenizer against H.264, H.265 and AV1 on the same clips, real bytes on both sides.

Every clip (default: the val clips of `vtok data prepare --clips`) is cut to its first
--frames frames and centre-cropped (after scaling to cover --size, when given) to sides that
are multiples of the tokenizer's spatial factor and of 2 (4:2:0), and that one 8-bit RGB clip
is what every method codes and is scored against. The tokenizer writes a real .vtok file
(raw bit packing; entropy coding too when a token prior sits beside it); each codec writes an
MP4 file (`vtok.eval.video_codecs`: encoder presets, pixel format) at CRFs searched so that
its rates bracket the tokenizer's. bpp: file bits / (frames x height x width), summed over
clips. PSNR and SSIM (8-bit RGB) and LPIPS-Alex are per frame, averaged over every frame of
every clip; flicker is the mean absolute difference between the frame-to-frame changes of the
reconstruction and of the source (`vtok.eval.metrics.flicker`), averaged over transitions.
Encode and decode frames/s are measured in this run, with --threads threads for torch and
for each codec, so they compare methods on this machine at this load, not across machines.

Usage: python benchmarks/video_codecs.py --tokenizer DIR_OR_NAME [--split val | --clips FILE..]
       [--frames 33] [--size WxH] [--codecs h264 h265 av1] [--points 4] [--device cpu]
       [--stick SLACK] [--json PATH]   (plots beside the JSON: STEM_lpips.png, STEM_psnr.png)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vtok.codec.tokens_file import has_prior, make_coder
from vtok.data.clips import clip_paths
from vtok.eval import video_codecs as vc
from vtok.eval.video_compare import (
    DEFINITIONS,
    HEADER,
    grid_multiple,
    measure,
    read_clips,
    show,
)
from vtok.files import atomic_write, atomic_write_text
from vtok.losses import LPIPS
from vtok.models import Tokenizer
from vtok.models.conv3d import set_stick
from vtok.models.presets import load_or_build

OUT = Path(__file__).parent / "results" / "video_codecs.json"


def load_tokenizer(spec: str, device: str) -> tuple[Tokenizer, Path | None, bool]:
    """(tokenizer, its folder or None, trained?): a folder or shipped name, else a preset
    built untrained with seed 0."""
    tok, directory = load_or_build(spec)
    if not tok.codes_clips:
        raise ValueError(f"{spec}: a {tok.architecture} tokenizer codes still images; "
                         f"give a video tokenizer")
    return tok.to(device).eval(), directory, directory is not None


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes WIDTHxHEIGHT, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"--size must be positive, got {text!r}")
    return h, w


def tokenizer_rows(tok, directory, clips, lpips, notes: list[str]) -> list[dict]:
    codings = ["raw"] + (["entropy"] if directory is not None and has_prior(directory) else [])
    rows = []
    for coding in codings:
        coder = make_coder(coding, tok, directory)
        code = lambda c, k=coder: vc.code_with_tokenizer(tok, c["frames"], k, c["fps"])
        try:
            rows.append(measure("tokenizer", coding, clips, code, lpips))
        except ValueError as err:  # e.g. a prior made for image grids, not (t, h, w) ones
            if coding == "raw":
                raise
            notes.append(f"tokenizer, {coding} coding: skipped ({err})")
    if len(rows) == 2:
        for raw, ent in zip(rows[0]["clips"], rows[1]["clips"]):
            ent["saved_vs_raw"] = 1 - ent["bytes"] / raw["bytes"]
    return rows


def codec_rows(codec: str, clips, lpips, low: float, high: float, points: int, threads: int,
               notes: list[str]) -> list[dict]:
    label = f"{vc.CODECS[codec].label} ({vc.CODECS[codec].encoder})"
    rows = {}

    def rate_at(crf: int) -> float:
        rows[crf] = measure(label, f"crf {crf}", clips,
                            lambda c: vc.code_clip(c["frames"], codec, crf, c["fps"], threads),
                            lpips)
        print(show(rows[crf]), flush=True)
        return rows[crf]["bpp"]

    rates = vc.bracket_crfs(rate_at, low, high, codec, points)
    lo, hi = vc.CODECS[codec].crf_range
    if min(rates.values()) > low:
        notes.append(f"{label}: even CRF {hi} spends more than the tokenizer's {low:.4f} bpp")
    if max(rates.values()) < high:
        notes.append(f"{label}: even CRF {lo} spends less than the tokenizer's {high:.4f} bpp")
    return [rows[crf] for crf in sorted(rows, reverse=True)]


def plot(rows: list[dict], key: str, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["bpp"])
        if method == "tokenizer":
            for r, marker in zip(mine, "*Ps"):
                ax.plot(r["bpp"], r[key], marker, ms=11, label=f"tokenizer ({r['setting']})")
        else:
            ax.plot([r["bpp"] for r in mine], [r[key] for r in mine], "o-", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel per frame (real file bytes)")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True,
                        help="video tokenizer: a folder, a shipped name, or a preset (untrained)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", default="val", choices=["train", "val", "test"],
                        help="which default clips (default val)")
    source.add_argument("--clips", nargs="+", type=Path, help="video files instead")
    parser.add_argument("--frames", type=int, default=33, help="first frames of each clip")
    parser.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT (default: native, "
                        "cropped to the tokenizer's grid)")
    parser.add_argument("--codecs", nargs="+", default=list(vc.CODECS), choices=list(vc.CODECS))
    parser.add_argument("--points", type=int, default=4, help="fewest CRFs per codec")
    parser.add_argument("--threads", type=int, default=2, help="for torch and the codecs")
    parser.add_argument("--device", default="cpu", help="the tokenizer's and LPIPS's device")
    parser.add_argument("--cache", help="vtok cache folder (clips, LPIPS weights)")
    parser.add_argument("--stick", type=float, default=None,
                        help="the tokenizer's Conv3dTokenizer.stick (default: the "
                        "tokenizer's own, 0.5 for a VQ codebook; 0: nearest codes)")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2 (flicker compares consecutive frames)")
    torch.set_num_threads(args.threads)
    notes: list[str] = []
    try:
        tok, directory, trained = load_tokenizer(args.tokenizer, args.device)
        set_stick(tok, args.stick)
        multiple = grid_multiple(tok)
        if args.size and (args.size[0] % multiple or args.size[1] % multiple):
            raise ValueError(f"--size sides must be multiples of {multiple}")
        lpips = LPIPS("alex", cache=args.cache).to(args.device)
        paths = args.clips or clip_paths(args.split, args.cache)
        clips = read_clips(paths, args.frames, args.size, multiple)
    except (ValueError, OSError) as err:  # VideoReadError and MissingAssetError included
        print(f"video_codecs: {err}", file=sys.stderr)
        return 2
    for name in args.codecs:
        if not vc.available(name):
            notes.append(f"{name}: {vc.CODECS[name].encoder} is not in this PyAV; skipped")
    t, h, w = clips[0]["frames"].shape[:3]
    print(f"{len(clips)} clip(s), {', '.join(str(len(c['frames'])) for c in clips)} frames of "
          f"{w}x{h}; tokenizer {args.tokenizer} ({tok.tokenizer_id}"
          f"{'' if trained else ', untrained'}); codecs in {vc.CONTAINER}, {vc.PIXEL_FORMAT}; "
          f"{args.threads} threads, tokenizer on {args.device}")
    print(HEADER)
    started = time.time()
    with torch.no_grad():
        rows = tokenizer_rows(tok, directory, clips, lpips, notes)
        for r in rows:
            print(show(r), flush=True)
        rates = [r["bpp"] for r in rows]
        for name in args.codecs:
            if vc.available(name):
                rows += codec_rows(name, clips, lpips, min(rates), max(rates), args.points,
                                   args.threads, notes)
    print("\nsummary\n" + HEADER)
    for r in rows:
        print(show(r))
    for note in notes:
        print(f"note: {note}")
    import av

    summary = {
        "tokenizer": {"spec": args.tokenizer, "id": tok.tokenizer_id, "trained": trained,
                      "stick": getattr(tok, "stick", 0.0),
                      "architecture": tok.architecture, "device": args.device},
        "clips": [{"name": c["name"], "frames": len(c["frames"]), "fps": str(c["fps"])}
                  for c in clips],
        "size": [w, h], "threads": args.threads, "container": vc.CONTAINER,
        "pixel_format": vc.PIXEL_FORMAT,
        "codecs": {n: {"encoder": vc.CODECS[n].encoder, "options": vc.CODECS[n].options}
                   for n in args.codecs},
        "definitions": DEFINITIONS,
        "versions": {"av": av.__version__, "ffmpeg": str(av.ffmpeg_version_info),
                     "torch": torch.__version__, "python": platform.python_version()},
        "seconds": round(time.time() - started, 1), "notes": notes, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    stem = args.json.with_suffix("")
    plot(rows, "lpips_alex", "LPIPS-Alex (lower is better)", Path(f"{stem}_lpips.png"))
    plot(rows, "psnr", "PSNR dB (8-bit RGB)", Path(f"{stem}_psnr.png"))
    print(f"wrote {args.json} and its plots {stem.name}_lpips.png, {stem.name}_psnr.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
