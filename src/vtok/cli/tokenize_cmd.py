"""Tokenize an image or video dataset into Parquet token shards, exactly once.

SRC: folders of images and videos (recursive; class folders give a label column; .tar files
in them are WebDataset shards), WebDataset .tar shards, manifests (.jsonl, .csv, .parquet
with a path column; their other columns are carried into the rows) or image/video files.
OUT receives shard-NNNNN.parquet files and manifest.json. Run the same command again after a
crash or a kill to finish the job: finished shards are kept, the rest is redone, nothing is
written twice. Another tokenizer or other options in an existing OUT are refused.
Unreadable items are skipped and listed in the manifest; the exit code is 0 when anything
was tokenized (1 when nothing was, or the output cannot be written; 2 for a refused request).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--tokenizer", required=True, metavar="NAME_OR_DIR",
                        help="shipped tokenizer name or tokenizer folder")
    parser.add_argument("-i", "--input", required=True, nargs="+", metavar="SRC",
                        help="folders, .tar shards, manifests (.jsonl/.csv/.parquet) or files")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="DIR",
                        help="output folder (created; an existing one is resumed)")
    rows = parser.add_argument_group("what each item gives (fixed for an output folder)")
    rows.add_argument("--size", type=int, help="resize the short side to SIZE and cut the "
                      "centre SIZExSIZE square (default: each image at its own size)")
    rows.add_argument("--hflip", action="store_true",
                      help="also each view flipped left-right, as its own row")
    rows.add_argument("--ten-crop", action="store_true",
                      help="four corners and centre of the image resized to SIZE x "
                      "--crop-range, each also flipped: 10 rows per item (needs --size)")
    rows.add_argument("--crop-range", type=float, default=1.1,
                      help="short side before --ten-crop, as a multiple of SIZE (default 1.1)")
    rows.add_argument("-n", "--num-tokens", type=int,
                      help="tokens per image for a variable-length tokenizer (titok)")
    rows.add_argument("--max-frames", type=int, default=17,
                      help="frames read from each video (a video tokenizer; default 17)")
    rows.add_argument("--fps", type=float, help="resample each video to this frame rate")
    rows.add_argument("--stick", type=float, metavar="SLACK",
                      help="a VQ video tokenizer keeps a token's code from the previous latent "
                      "frame within (1 + SLACK) of the nearest (default 0.5; 0: nearest codes)")
    rows.add_argument("--shard-size", type=int, default=1000,
                      help="items per shard (default 1000)")
    rows.add_argument("--labels", choices=["auto", "folders", "none"], default="auto",
                      help="class folders as a label column: when found (auto), required "
                      "(folders), or never (none)")
    rows.add_argument("--path-column", help="the path column of a manifest (default: path, "
                      "image, file, filename or video)")
    how = parser.add_argument_group("how it runs (free to change on a resume)")
    how.add_argument("--batch-size", type=int,
                     help="views per forward pass (default: 32 on a GPU; on a CPU as many as "
                     "hold 131,072 pixels, two 256x256 views)")
    how.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    how.add_argument("--workers", type=int,
                     help="worker processes (local) or tokenizer actors (ray); default: one "
                     "per CPU core on a CPU, one per GPU with --device cuda; a job of fewer "
                     "than 32 items runs in this process")
    how.add_argument("--threads", type=int,
                     help="torch threads per worker (default: the CPUs shared out, so one "
                     "each with the default workers)")
    how.add_argument("--engine", choices=["local", "ray"], default="local",
                     help="local worker processes, or Ray Data on the cluster at RAY_ADDRESS "
                     "(else a local Ray)")
    how.add_argument("--gpus-per-worker", type=float, default=0.0,
                     help="GPUs per Ray actor (--engine ray; e.g. 1 or 0.5)")


def run(args: argparse.Namespace) -> int:
    from vtok.data.pretokenize import (
        OutputError,
        RunOptions,
        TokenizeError,
        TokenizeOptions,
        tokenize_dataset,
    )

    try:
        options = TokenizeOptions(
            size=args.size, hflip=args.hflip, ten_crop=args.ten_crop,
            crop_range=args.crop_range, num_tokens=args.num_tokens, max_frames=args.max_frames,
            fps=args.fps, stick=args.stick, shard_size=args.shard_size, labels=args.labels,
            path_column=args.path_column)
        how = RunOptions(batch_size=args.batch_size, device=args.device, workers=args.workers,
                         threads=args.threads, engine=args.engine,
                         gpus_per_worker=args.gpus_per_worker)
    except TokenizeError as err:
        print(f"vtok tokenize: {err}", file=sys.stderr)
        return 2
    bar = _progress_bar()
    try:
        summary = tokenize_dataset(args.tokenizer, args.input, args.out, options, how,
                                   progress=bar.update)
    except (TokenizeError, ValueError) as err:  # ValueError: an unreadable manifest
        print(f"vtok tokenize: {err}", file=sys.stderr)
        return 2
    except OutputError as err:
        print(f"vtok tokenize: {err}", file=sys.stderr)
        return 1
    except ImportError as err:  # pyarrow or ray missing
        print(f"vtok tokenize: {err}; install them with: pip install 'vtok[tokenize]'",
              file=sys.stderr)
        return 1
    finally:
        bar.close()
    done = summary.items - summary.skipped
    print(f"tokenized {done} of {summary.items} items into {summary.rows} rows in "
          f"{summary.shards} shards ({summary.written} written now) in {args.out}")
    for reason in summary.reasons[:20]:
        print(f"skipped {reason}", file=sys.stderr)
    if summary.skipped > 20:
        print(f"... {summary.skipped - 20} more skipped, listed in {summary.manifest}",
              file=sys.stderr)
    if done == 0:
        print("vtok tokenize: nothing could be tokenized", file=sys.stderr)
        return 1
    return 0


def _progress_bar():
    from tqdm import tqdm

    return tqdm(desc="tokenize", unit="item", disable=not sys.stderr.isatty())
