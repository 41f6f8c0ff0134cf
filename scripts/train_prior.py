"""Train the token prior that entropy-codes a shipped tokenizer's .vtok files.

    python scripts/train_prior.py conv2d-f8 [--crops 1200] [--steps 3000]

Tokenizes random 256x256 crops (with zoom-out) of the default photos' train split, fits the
prior (a grid prior for conv2d tokens, a sequence prior for titok tokens) and measures on the
val photos' 256x256 centre crops the real entropy-coded payloads against raw bit packing.
Writes prior.json + prior.safetensors beside the tokenizer's weights and records the command,
wall time and results in its TRAINING.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time

import torch

import vtok
from vtok.codec.prior import EntropyCoder, PriorConfig, train_prior
from vtok.data.datasets import RandomCrops, center_crop, image_items
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.models.presets import tokenizer_dir


def tokens_of(tok, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([tok.encode(batch).indices for batch in images.split(16)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="shipped tokenizer")
    parser.add_argument("--crops", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    directory = tokenizer_dir(args.name)
    tok = vtok.load(args.name)
    train_dir = photo_paths("train")[0].parent
    crops = RandomCrops(image_items(str(train_dir)), 256, seed=args.seed + 1, min_scale=0.5)
    images = torch.stack([crops[i] for i in range(args.crops)])
    train_tokens = tokens_of(tok, images)
    if tok.architecture == "titok":
        config = PriorConfig(tok.codebook_size, "sequence", tok.tokenizer_id,
                             max_len=tok.max_tokens, context=8)
    else:
        config = PriorConfig(tok.codebook_size, "grid", tok.tokenizer_id)
    prior = train_prior(train_tokens, config, steps=args.steps, batch_size=16,
                        seed=args.seed, progress=True)

    val = torch.stack([center_crop(read_image(p), 256) for p in photo_paths("val")])
    val_tokens = tokens_of(tok, val)
    coder = EntropyCoder(prior)
    start = time.perf_counter()
    coded = [len(coder.encode(t.numpy())) * 8 for t in val_tokens]
    seconds = time.perf_counter() - start
    raw = val_tokens[0].numel() * math.ceil(math.log2(tok.codebook_size))
    ideal = prior.bits(val_tokens).mean().item()
    saving = 1 - sum(coded) / (raw * len(coded))
    result = {
        "val_images": len(coded), "tokens_per_image": val_tokens[0].numel(),
        "raw_bits_per_image": raw, "entropy_coded_bits_per_image": sum(coded) / len(coded),
        "ideal_bits_per_image": ideal, "saving_vs_raw": saving,
        "encode_images_per_s": len(coded) / seconds, "train_crops": args.crops,
        "steps": args.steps, "wall_minutes": (time.time() - started) / 60,
    }
    print(json.dumps(result, indent=2))
    prior.save(directory)
    notes = directory / "TRAINING.md"
    text = notes.read_text() if notes.exists() else f"# {args.name}\n"
    text = re.sub(r"\n## Token prior\n.*", "", text, flags=re.S).rstrip() + "\n"
    text += (f"\n## Token prior\n\nMade by `python scripts/train_prior.py {args.name} "
             f"--crops {args.crops} --steps {args.steps}` in {result['wall_minutes']:.1f} min "
             f"(tokenizing included). On the {len(coded)} val photos (256x256 centre crops): "
             f"raw packing {raw} bits per image, entropy coded "
             f"{result['entropy_coded_bits_per_image']:.0f} bits per image "
             f"({saving:.1%} fewer; the prior's ideal length is {ideal:.0f}).\n")
    notes.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
