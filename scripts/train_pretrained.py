"""Train one of the tokenizers shipped in `src/vtok/pretrained/` and record how it was made.

    python scripts/train_pretrained.py conv2d-f8        # or titok-cpu; add --resume to continue

Trains with the fixed recipe below on the default photos' train split (never the val split),
copies the exported EMA model to src/vtok/pretrained/NAME/ and writes TRAINING.md there with
the command, the machine, the wall time and the final training metrics. Works under torchrun.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from vtok.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "conv2d-f8": TrainConfig(
        preset="conv2d-f8-cpu", steps=3600, batch_size=8, crop_size=128, lr=4e-4, warmup=200,
        gan_start=2400, gan_weight=0.1, ema_decay=0.999, checkpoint_every=250, sample_every=500,
        log_every=25, out="runs/pretrained-conv2d-f8"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    config = RECIPES[args.name]
    started = time.time()
    summary = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    dest = ROOT / "src" / "vtok" / "pretrained" / args.name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(Path(config.out) / "model", dest)
    with open(Path(config.out) / "log.csv") as f:
        rows = list(csv.DictReader(f))
    last = {k: v for k, v in rows[-1].items() if k in ("l1", "lpips", "psnr", "usage", "loss")}
    lines = [
        f"# {args.name}",
        "",
        f"Made by `python scripts/train_pretrained.py {args.name}`"
        + (" (resumed)" if args.resume else "") + " on the default photos' train split.",
        "",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, world size {summary['world_size']}",
        f"- wall time of this invocation: {(time.time() - started) / 60:.1f} min "
        f"({summary['steps']} steps, {summary['skipped_steps']} skipped)",
        f"- recipe: `{json.dumps(config.to_dict())}`",
        f"- last logged training metrics (128x128 crops): {json.dumps(last)}",
        "",
        "Validation results: see `benchmarks/tokenizers.py` and its JSON in "
        "`benchmarks/results/tokenizers.json`.",
    ]
    (dest / "TRAINING.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
