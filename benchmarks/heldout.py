"""The shipped tokenizers on photos they never saw: the test split, against AVIF and WebP at
their lowest quality on the same photos and real bytes.

For every tokenizer (shipped, or the folders named with --tokenizer) at each token count: bits
per pixel of its real .vtok file (entropy coded when it has a token prior, headers included),
PSNR (8-bit RGB, per image, averaged) and LPIPS-Alex on 256x256 centre crops of the test
photos, and the same on the train photos at the largest token count, so the gap between what a
model saw and what it did not is measured the same way. AVIF q0, WebP q0 and JPEG q5 are coded
by Pillow on the same crops. Nothing here is used to choose a model or a setting: the val split
is for that.

Usage: python benchmarks/heldout.py [--tokenizer DIR ...] [--split test] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vtok.data.datasets import center_crop
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.eval import codecs
from vtok.eval.demo import SIZE, Result, classic_results, token_counts, tokenizer_results
from vtok.files import atomic_write_text
from vtok.losses import LPIPS
from vtok.models import Tokenizer, list_pretrained
from vtok.models.shipped import tokenizer_dir

OUT = Path(__file__).parent / "results" / "heldout.json"
CLASSIC = {"avif": 0, "webp": 0, "jpeg": 5}


def crops(split: str) -> tuple[list[str], torch.Tensor]:
    paths = photo_paths(split)
    return [p.name for p in paths], torch.stack([center_crop(read_image(p), SIZE)
                                                 for p in paths])


def row(result: Result, split: str, seconds: float) -> dict:
    return {**result.row(), "split": split, "seconds": round(seconds, 1)}


def show(r: dict) -> None:
    print(f"{r['method']:14s} {r['setting']:22s} {r['split']:5s} {r['bpp']:7.4f} "
          f"{r['psnr']:6.2f} {r['lpips_alex']:6.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", nargs="*", default=None,
                        help="tokenizer names or folders (default: every shipped one)")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--no-train", action="store_true",
                        help="skip the train-photo rows (the generalisation gap)")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = args.tokenizer or [e["name"] for e in list_pretrained()]
    lpips = LPIPS("alex")
    splits = {args.split: crops(args.split)}
    if not args.no_train:
        splits["train"] = crops("train")
    print(", ".join(f"{len(v[1])} {k} photos" for k, v in splits.items())
          + f"; {SIZE}x{SIZE} centre crops; bpp of real files, headers included")
    print(f"{'method':14s} {'setting':22s} {'split':5s} {'bpp':>7s} {'PSNR':>6s} {'LPIPS':>6s}")
    rows = []
    with torch.no_grad():
        for name in names:
            directory = tokenizer_dir(name)
            tok = Tokenizer.from_pretrained(directory)
            for split, (_, images) in splits.items():
                # on the train photos, only the largest token count (the gap is the same idea
                # at every count, and the titoks' small counts cost as much to decode)
                counts = token_counts(tok)[-1:] if split == "train" else None
                start = time.perf_counter()
                results = tokenizer_results(Path(name).name, tok, directory, images, lpips,
                                            lambda: None, counts)
                seconds = (time.perf_counter() - start) / len(results)
                for r in results:
                    rows.append(row(r, split, seconds))
                    show(rows[-1])
        images = splits[args.split][1]
        for codec, quality in CLASSIC.items():
            if not codecs.available(codec):
                print(f"{codec}: not available in this Pillow, skipped")
                continue
            start = time.perf_counter()
            (r,) = classic_results(codec, images, lpips, lambda: None, [quality])
            rows.append(row(r, args.split, time.perf_counter() - start))
            show(rows[-1])
    summary = {"size": SIZE, "split": args.split,
               "photos": {k: v[0] for k, v in splits.items()}, "rows": rows}
    atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
