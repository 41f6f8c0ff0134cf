"""Make the token prior that entropy-codes a tokenizer's .vtok files, in its folder.

Tokenizes random crops of --data (default: the default photos' train split), fits the prior,
converts it to integer arithmetic (files then decode on any machine) and reports, on held-out
images, the real entropy-coded size against raw packing. Writes prior.json and
prior.safetensors beside the tokenizer's weights.

For a video tokenizer (conv3d) the prior models latent frames, each token conditioned on its
neighbours and on the previous latent frame: it trains on random clips of --frames frames of
--data's videos (default: the default clips' train split) and is measured, per clip, on the
first 33 frames of the videos of --held-out (default: the val clips).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_CROPS, VIDEO_CLIPS = 800, 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tokenizer", type=Path, metavar="TOKENIZER_DIR",
                        help="tokenizer folder (config.json + model.safetensors)")
    parser.add_argument("--data", type=Path, default=None, help="image folder or .tar shards, "
                        "a video folder for a video tokenizer (default: the default photos' "
                        "or clips' train split)")
    parser.add_argument("--held-out", type=Path, default=None,
                        help="image (video) folder to measure on (default: the default photos' "
                        "(clips') val split with the default data, else other crops of --data)")
    parser.add_argument("--crops", type=int, default=None, help="training crops, or clips for "
                        f"a video tokenizer (default {IMAGE_CROPS}, {VIDEO_CLIPS} clips)")
    parser.add_argument("--crop-size", type=int, default=256, help="crop side (default 256)")
    parser.add_argument("--frames", type=int, default=17,
                        help="frames per training clip, video tokenizers (default 17)")
    parser.add_argument("--stick", type=float, default=None, metavar="SLACK",
                        help="a VQ video tokenizer's stick while coding the clips (default: "
                        "its own, 0.5, as `vtok encode` codes them; 0: nearest codes)")
    parser.add_argument("--steps", type=int, default=2000, help="fitting steps (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing prior")


def _check(args: argparse.Namespace) -> None:
    for name, low, high in (("crops", 16, 100_000), ("crop_size", 16, 2048),
                            ("steps", 1, 1_000_000), ("frames", 1, 1024)):
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"--{name.replace('_', '-')} must be in [{low}, {high}], "
                             f"got {value}")


def run(args: argparse.Namespace) -> int:
    try:
        _check(args)
        from vtok.codec.fit import (
            check_codable,
            fit_prior,
            prior_clips,
            prior_images,
            summary,
            write_prior,
        )
        from vtok.codec.tokens_file import has_prior
        from vtok.models import Tokenizer
        from vtok.models.conv3d import set_stick
        from vtok.models.presets import PRETRAINED_DIR

        directory = args.tokenizer
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a tokenizer folder")
        if directory.resolve().is_relative_to(PRETRAINED_DIR):
            raise ValueError(f"{directory} is a shipped tokenizer, whose prior ships with it "
                             f"(scripts/train_prior.py remakes it); copy the folder to make "
                             f"your own")
        if has_prior(directory) and not args.force:
            raise FileExistsError(f"{directory} already has a token prior "
                                  f"(use --force to replace it)")
        tok = Tokenizer.from_pretrained(directory)
        check_codable(tok)
        set_stick(tok, args.stick)
        names = None
        if tok.codes_clips:
            frames = tok.coded_frames(args.frames)  # a length the tokenizer codes unpadded
            train, held, names = prior_clips(args.data, args.held_out,
                                             args.crops or VIDEO_CLIPS, args.crop_size,
                                             frames, args.seed)
        else:
            train, held = prior_images(args.data, args.held_out, args.crops or IMAGE_CROPS,
                                       args.crop_size, args.seed)
        prior, report = fit_prior(tok, train, held, steps=args.steps, seed=args.seed,
                                  progress=sys.stderr.isatty(), names=names)
        write_prior(prior, directory, report, force=args.force)
    except (ValueError, OSError) as err:
        print(f"vtok prior: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
    print(json.dumps({"prior_id": prior.prior_id, **report.to_dict()}, indent=2))
    print(f"wrote {directory / 'prior.json'} and prior.safetensors: {summary(report)}")
    return 0
