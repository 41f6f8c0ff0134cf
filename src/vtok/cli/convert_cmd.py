"""Convert a released tokenizer checkpoint (LlamaGen VQ, taming VQGAN, TiTok) into a vtok folder.

`vtok convert --from llamagen vq_ds16_c2i.pt --out converted/llamagen` writes config.json +
model.safetensors, which `vtok.load` and every vtok command read. The architecture's sizes are
read off the checkpoint's tensors (`--preset` checks them against a published configuration
instead); `--set FIELD=VALUE` sets a field the tensors cannot tell, e.g. a reduced TiTok's
`heads`. `.pt`/`.ckpt`/`.bin` files are read with torch.load(weights_only=True) only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SOURCES = ("llamagen", "taming", "titok")
SHOWN = 8  # dropped tensor names printed before "and N more"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=SOURCES, required=True,
                        help="the release's project: llamagen (a .pt with ['model']), taming "
                        "(a Lightning .ckpt), titok (a Hugging Face folder); each also takes a "
                        "safetensors file of its state dict")
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                        help=".pt/.ckpt/.bin file, .safetensors file, or a folder holding "
                        "model.safetensors (and config.json)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the tokenizer folder to write")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="take the configuration from this preset (e.g. llamagen-vq-16) and "
                        "check the checkpoint against it, instead of reading it off the tensors")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="set a config field (VALUE as JSON, else a "
                        "string), e.g. --set heads=2; repeatable")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            overrides[name] = json.loads(value)
        except ValueError:
            overrides[name] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    try:
        from vtok.models.convert import convert

        done = convert(args.source, args.checkpoint, args.out, preset=args.preset,
                       overrides=parse_overrides(args.overrides), force=args.force)
    except ValueError as err:
        print(f"vtok convert: {err}", file=sys.stderr)
        return 1
    tok = done.tokenizer
    print(f"{args.checkpoint}: {done.tensors} tensors -> {done.out} ({tok.architecture}, "
          f"tokenizer {tok.tokenizer_id}, {tok.codebook_size} codes, "
          f"{sum(p.numel() for p in tok.parameters()) / 1e6:.1f}M weights)")
    if done.dropped:
        more = len(done.dropped) - SHOWN
        names = ", ".join(done.dropped[:SHOWN]) + (f" and {more} more" if more > 0 else "")
        print(f"dropped {len(done.dropped)} tensor(s) that are not part of the tokenizer: "
              f"{names}")
    return 0
