"""Train the token prior that entropy-codes a shipped tokenizer's .vtok files.

    python scripts/train_prior.py conv2d-f8 [--crops 800] [--steps 2000] [--size 256] [--hidden N]

Tokenizes random --size crops (with zoom-out) of the default photos' train split, fits the
prior (a grid prior for grid tokens, a sequence prior for 1D tokens), converts it to integer
arithmetic and measures on the val photos' centre crops of the same size the real
entropy-coded payloads against raw bit packing. A video tokenizer's prior (grid3d: latent
frames) fits on random 17-frame clips of the default clips' train split (--crops of them) and
is measured on the val clips' first 33 frames (centre crops). Writes prior.json +
prior.safetensors beside the tokenizer's weights and records the command, wall time and
results in its TRAINING.md.
(`vtok prior DIR` does the same for any tokenizer folder.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import vtok
from vtok.codec.fit import (
    HELD_OUT_FRAMES,
    check_codable,
    fit_prior,
    prior_clips,
    prior_images,
    summary,
    write_prior,
)
from vtok.models.conv3d import set_stick
from vtok.models.presets import tokenizer_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="shipped tokenizer")
    parser.add_argument("--crops", type=int, default=800)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256, help="side of the training crops")
    parser.add_argument("--hidden", type=int, help="hidden units (default 256; the file's "
                        "embedding tables grow with it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stick", type=float, default=0.0,
                        help="a VQ video tokenizer's stick while coding the prior's clips "
                        "(default 0: nearest codes, as the shipped conv3d-f8t4 prior was fitted, "
                        "though its files default to 0.5)")
    args = parser.parse_args()
    directory = tokenizer_dir(args.name)
    tok = vtok.load(args.name)
    check_codable(tok)
    set_stick(tok, args.stick)
    crops = f"{args.size}x{args.size} centre crops"
    names, held_out = None, f"val photos ({crops})"
    if tok.codes_clips:
        train, held, names = prior_clips(None, None, args.crops, args.size,
                                         tok.coded_frames(17), args.seed)
        held_out = f"val clips (first {HELD_OUT_FRAMES} frames, {crops})"
    else:
        train, held = prior_images(None, None, args.crops, args.size, args.seed)
    prior, report = fit_prior(tok, train, held, steps=args.steps, seed=args.seed,
                              progress=True, names=names, hidden=args.hidden)
    print(json.dumps({"prior_id": prior.prior_id, **report.to_dict()}, indent=2))
    write_prior(prior, directory, report, force=True)
    notes = directory / "TRAINING.md"
    text = notes.read_text() if notes.exists() else f"# {args.name}\n"
    text = re.sub(r"\n## Token prior\n.*", "", text, flags=re.S).rstrip() + "\n"
    text += (f"\n## Token prior\n\nMade by `python scripts/train_prior.py {args.name} "
             f"--crops {args.crops} --steps {args.steps} --size {args.size}"
             f"{'' if args.hidden is None else f' --hidden {args.hidden}'}"
             f"{f' --stick {args.stick:g}' if args.stick else ''}` in "
             f"{report.minutes:.1f} min "
             f"(tokenizing included), prior id {prior.prior_id}. Integer arithmetic "
             f"(`vtok.codec.intprior`): files decode bit-exactly on any machine. On the "
             f"{report.held_out_images} {held_out}: {summary(report)}.\n")
    notes.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
