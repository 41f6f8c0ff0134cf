"""Reconstruction quality of the shipped tokenizers on the validation photos.

For every tokenizer in src/vtok/pretrained (or the ones named with --tokenizer, a tokenizer
folder or a training run folder) and each of its token counts: PSNR (8-bit RGB, per image,
averaged), LPIPS-Alex and bits per pixel of the raw indices (tokens x log2(codebook) / pixels)
on 256x256 centre crops of the default photos' val split, which no shipped model trained on.
Codebook usage is counted over the tokens of every whole 256x256 tile of the val photos (the
centre crops alone hold too few tokens to meet a codebook of a few hundred codes).

Usage: python benchmarks/tokenizer_quality.py [--tokenizer DIR ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vtok.data.datasets import center_crop, fit_short_side
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.eval import psnr, raw_bits
from vtok.eval.demo import token_counts
from vtok.losses import LPIPS
from vtok.models import Tokenizer, list_pretrained
from vtok.train.distill import latest_student
from vtok.train.loop import load_run_model

OUT = Path(__file__).parent / "results" / "tokenizers.json"
SIZE = 256
# measured elsewhere on comparable 256x256 photos with real file sizes (issue #3)
REFERENCES = [("AVIF q0", 0.121, 27.0, 0.272), ("WebP q0", 0.139, 26.5, 0.279),
              ("JPEG q5", 0.296, 24.2, 0.401)]


def val_tiles(photos: list[torch.Tensor]) -> torch.Tensor:
    """Every non-overlapping SIZE x SIZE tile of each photo (photos smaller than SIZE upscaled)."""
    tiles = []
    for photo in photos:
        photo = fit_short_side(photo, SIZE)
        h, w = photo.shape[-2:]
        tiles += [photo[:, y : y + SIZE, x : x + SIZE]
                  for y in range(0, h - SIZE + 1, SIZE) for x in range(0, w - SIZE + 1, SIZE)]
    return torch.stack(tiles)


def usage(tok: Tokenizer, tiles: torch.Tensor, num_tokens: int | None) -> float:
    codes = torch.cat([tok.encode(b, num_tokens=num_tokens).indices.reshape(-1)
                       for b in tiles.split(8)])
    return torch.unique(codes).numel() / tok.codebook_size


def evaluate(name: str, tok: Tokenizer, images: torch.Tensor, tiles: torch.Tensor,
             lpips: LPIPS) -> list[dict]:
    rows = []
    for k in token_counts(tok):
        start = time.perf_counter()
        recons, bits = [], []
        for batch in images.split(4):
            tokens = tok.encode(batch, num_tokens=k)
            recons.append(tok.decode(tokens))
            bits.append(raw_bits(tokens, tok.codebook_size))
        seconds = time.perf_counter() - start
        recon = torch.cat(recons)
        with torch.no_grad():
            lp = torch.cat([lpips(a, b) for a, b in zip(images.split(4), recon.split(4))])
        rows.append({
            "tokenizer": name, "architecture": tok.architecture,
            "tokens": tokens.num_tokens, "codebook_size": tok.codebook_size,
            "bpp": bits[0] / (SIZE * SIZE), "psnr": psnr(images, recon).mean().item(),
            "lpips_alex": lp.mean().item(), "usage": usage(tok, tiles, k),
            "n_images": images.shape[0], "usage_tiles": tiles.shape[0],
            "images_per_s": images.shape[0] / seconds,
        })
    return rows


def rises(rows: list[dict], key: str, sign: int = 1) -> bool:
    values = [sign * row[key] for row in rows]
    return all(b > a for a, b in zip(values, values[1:]))


def load_any(path: Path) -> Tokenizer:
    """A tokenizer folder, a training run or a distillation run (its latest weights)."""
    if (path / "model.safetensors").exists():
        return Tokenizer.from_pretrained(path)
    if (path / "distill.json").exists():
        return latest_student(path)
    return load_run_model(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", action="append", default=[],
                        help="tokenizer folder or training run folder (repeatable)")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    photos = [read_image(p) for p in photo_paths("val")]
    images = torch.stack([center_crop(p, SIZE) for p in photos])
    tiles = val_tiles(photos)
    if args.tokenizer:
        models = [(Path(t).name, load_any(Path(t))) for t in args.tokenizer]
    else:
        models = [(p["name"], Tokenizer.from_pretrained(p["path"])) for p in list_pretrained()]
    lpips = LPIPS("alex")
    rows = []
    print(f"{len(images)} validation photos, {SIZE}x{SIZE} centre crops "
          f"(usage over all {len(tiles)} whole {SIZE}x{SIZE} tiles of them)")
    print(f"{'tokenizer':24s} {'tokens':>6s} {'bpp':>7s} {'PSNR':>6s} {'LPIPS':>6s} "
          f"{'usage':>6s} {'img/s':>6s}")
    for name, tok in models:
        own = []
        for row in evaluate(name, tok, images, tiles, lpips):
            own.append(row)
            print(f"{name:24s} {row['tokens']:6d} {row['bpp']:7.4f} {row['psnr']:6.2f} "
                  f"{row['lpips_alex']:6.3f} {row['usage']:6.1%} {row['images_per_s']:6.1f}",
                  flush=True)
        if len(own) > 1:
            print(f"{name}: PSNR rises with every token count: {rises(own, 'psnr')}; "
                  f"LPIPS falls with every token count: {rises(own, 'lpips_alex', -1)}")
        rows += own
    print("reference codecs (real file sizes, measured separately):")
    for label, bpp, p, lp in REFERENCES:
        print(f"{label:24s} {'':6s} {bpp:7.3f} {p:6.1f} {lp:6.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": SIZE, "rows": rows}, indent=2) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
