"""Bits saved by entropy coding and coding throughput for every shipped tokenizer.

On the val photos' 256x256 centre crops: the bytes of each image's .vtok file with raw bit
packing and with entropy coding (headers included), and images per second for encode
(tokenizer + coding + file bytes) and decode (parsing + decoding + tokenizer), 2 threads.

Usage: python benchmarks/codec.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vtok.codec.container import VtokFile
from vtok.codec.tokens_file import from_vtok, has_prior, make_coder, to_vtok
from vtok.data.datasets import center_crop
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.eval.demo import token_counts
from vtok.models import Tokenizer, list_pretrained

OUT = Path(__file__).parent / "results" / "codec.json"


def measure(tok: Tokenizer, images: torch.Tensor, coder, k: int | None) -> dict:
    start = time.perf_counter()
    files = [to_vtok([tok.encode(x[None], num_tokens=k)], tok.codebook_size, coder).to_bytes()
             for x in images]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    for data in files:
        (tokens,) = from_vtok(VtokFile.from_bytes(data), coder, tok.tokenizer_id)
        tok.decode(tokens)
    decode_s = time.perf_counter() - start
    pixels = images.shape[-1] * images.shape[-2]
    return {"bpp": sum(map(len, files)) * 8 / (pixels * len(files)),
            "bytes_per_image": sum(map(len, files)) / len(files),
            "encode_images_per_s": len(files) / encode_s,
            "decode_images_per_s": len(files) / decode_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = torch.stack([center_crop(read_image(p), 256) for p in photo_paths("val")])
    rows = []
    print(f"{len(images)} val photos, 256x256; bytes per image of the .vtok file (headers "
          f"included); images/s at 2 threads")
    print(f"{'tokenizer':12s} {'tokens':>6s} {'raw B':>7s} {'entropy B':>9s} {'saved':>6s} "
          f"{'enc/s raw':>9s} {'enc/s ent':>9s} {'dec/s raw':>9s} {'dec/s ent':>9s}")
    for entry in list_pretrained():
        directory = Path(entry["path"])
        tok = Tokenizer.from_pretrained(directory)
        if not has_prior(directory):
            print(f"{entry['name']}: no token prior shipped, skipped")
            continue
        for k in token_counts(tok):
            raw = measure(tok, images, make_coder("raw", tok, directory), k)
            ent = measure(tok, images, make_coder("entropy", tok, directory), k)
            saved = 1 - ent["bytes_per_image"] / raw["bytes_per_image"]
            n = k or tok.encode(images[:1]).num_tokens
            rows.append({"tokenizer": entry["name"], "tokens": n, "raw": raw, "entropy": ent,
                         "saved": saved})
            print(f"{entry['name']:12s} {n:6d} {raw['bytes_per_image']:7.1f} "
                  f"{ent['bytes_per_image']:9.1f} {saved:6.1%} "
                  f"{raw['encode_images_per_s']:9.1f} {ent['encode_images_per_s']:9.1f} "
                  f"{raw['decode_images_per_s']:9.1f} {ent['decode_images_per_s']:9.1f}",
                  flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": 256, "rows": rows}, indent=2) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
