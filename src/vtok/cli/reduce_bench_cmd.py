"""Bench token reduction: speed-up, GFLOPs and fidelity of each method against the unreduced model.

Every method is attached (`vtok.reduce.attach`, keep ratio applied once, at the input of block
--layer) to one model and timed side by side with the unreduced model in the same run. The
model is a timm ViT (--model: a timm name, built with random weights), a trained timm
classifier (--classifier DIR, or --model DIR: a config.json + model.safetensors folder; also
scores top-1 agreement with its unreduced self on the photos' centre views and random crops)
or a trained vtok TiTok tokenizer (--titok: also scores reconstruction PSNR and LPIPS-Alex).
Random-weight models give speed only. Writes OUT/results.json and OUT/speedup.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vtok.cli.options import add_cache_option

DEFAULT_KEEPS = (0.5, 0.25, 0.1)
NO_FIDELITY = ("fidelity needs a trained model (--titok or --classifier); random-weight models "
               "give speed only")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subject = parser.add_argument_group("model (one of)")
    subject.add_argument("--model", default="vit_tiny_patch16_224",
                         help="timm model name (random weights) or a folder with config.json "
                              "+ model.safetensors (default: %(default)s)")
    subject.add_argument("--model-kwargs", default="{}", metavar="JSON",
                         help='timm.create_model options, e.g. \'{"img_size": 32}\'')
    subject.add_argument("--classifier", type=Path, metavar="DIR",
                         help="trained timm classifier folder: adds top-1 agreement")
    subject.add_argument("--titok", metavar="NAME_OR_DIR",
                         help="trained vtok TiTok tokenizer: adds reconstruction PSNR / LPIPS")
    parser.add_argument("--methods", nargs="+", metavar="NAME",
                        help="reducers to bench (default: every registered one); options "
                        "as NAME:option=value,..., e.g. tome:round_share=0.5")
    parser.add_argument("--keeps", nargs="+", type=float, default=list(DEFAULT_KEEPS),
                        metavar="RATIO", help="keep ratios (default: 0.5 0.25 0.1)")
    parser.add_argument("--layer", type=int, help="block at whose input tokens are reduced "
                        "(default 1: after the first block)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32], metavar="B")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median taken)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds one timed repeat lasts at least (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--image-size", type=int,
                        help="input size for --titok (default: its native size)")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="photos for fidelity (default: the default photos' val split)")
    parser.add_argument("--limit", type=int, help="use at most this many photos")
    add_cache_option(parser)
    parser.add_argument("--random-crops", type=int, default=4, metavar="N",
                        help="random crops per photo for classifier agreement")
    parser.add_argument("--out", type=Path, default=Path("reduce-bench"), metavar="DIR")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="results file (default: OUT/results.json)")


def _check(args: argparse.Namespace) -> tuple[list[str], list[float], dict[str, Any]]:
    from vtok.eval.reduce_bench import parse_method
    from vtok.reduce import REDUCERS
    from vtok.reduce.adapter import check_options
    from vtok.reduce.base import check_keep

    methods = list(dict.fromkeys(args.methods or REDUCERS.names()))
    for spec in methods:
        name, options = parse_method(spec)
        REDUCERS.get(name)  # names an unknown one and lists the registered
        if options:  # a bad option or value fails here, naming it, not mid-bench
            check_options(name, dict(options))
    keeps = list(dict.fromkeys(check_keep(k) for k in args.keeps))
    for name, value, low in (("--batch-sizes", min(args.batch_sizes), 1),
                             ("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0),
                             ("--threads", args.threads, 0),
                             ("--random-crops", args.random_crops, 1)):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if args.titok and args.classifier:
        raise ValueError("give --titok or --classifier, not both")
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-kwargs is not JSON ({err})") from None
    if not isinstance(model_kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    return methods, keeps, model_kwargs


def _subject(args: argparse.Namespace, model_kwargs: dict[str, Any]):
    from vtok.eval.reduce_bench import timm_subject, titok_subject

    if args.titok:
        return titok_subject(args.titok, args.image_size)
    if args.classifier:
        if not args.classifier.is_dir():
            raise ValueError(f"--classifier {args.classifier}: not a folder")
        return timm_subject(str(args.classifier), trained=True)
    return timm_subject(args.model, model_kwargs)


def _images(args: argparse.Namespace, subject) -> tuple[Any, Any]:
    """Fidelity inputs: (images, random crops or None)."""
    import torch

    from vtok.data.datasets import center_crop
    from vtok.eval.reduce_fidelity import random_crops, read_photos

    photos = read_photos(args.images, args.limit, args.cache)
    size = subject.image_size
    if subject.kind == "titok":
        from vtok.losses.lpips_weights import find_weights

        find_weights("alex", args.cache)  # missing: fail now, not after the timing
        return torch.stack([center_crop(p, size) for p in photos]), None
    from vtok.eval.classifier import classifier_view

    center = torch.stack([classifier_view(p, size=size) for p in photos])
    return center, random_crops(photos, size, args.random_crops)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from vtok.eval import reduce_bench as bench
    from vtok.eval import reduce_fidelity as fidelity
    from vtok.eval import reduce_report as bench_report
    from vtok.files import atomic_write_text
    from vtok.reduce.adapter import check_layers
    from vtok.reduce.model_parts import find_parts

    try:
        methods, keeps, model_kwargs = _check(args)
        subject = _subject(args, model_kwargs)
        check_layers(args.layer, True, find_parts(subject.model).depth)
        inputs = _images(args, subject) if subject.trained else None
    except (ValueError, RuntimeError, OSError) as err:
        print(f"vtok reduce-bench: {err}", file=sys.stderr)
        return 2
    rows = bench.variants(methods, keeps)
    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores or 1)
    try:
        measured = bench.count_variants(subject, rows, args.layer)
        live = sum(m.error is None for m in measured.values())
        steps = live * len(args.batch_sizes) * args.repeats + (len(rows) if inputs else 0)
        with tqdm(total=steps, desc="reduce-bench", unit="step", disable=None) as bar:
            bench.time_variants(subject, measured, args.batch_sizes, args.layer, args.warmup,
                                args.repeats, args.min_time, bar.update)
            scores: dict = {}
            if inputs is not None and subject.kind == "titok":
                scores = fidelity.titok_fidelity(subject, rows, inputs[0], args.layer,
                                                 progress=bar.update, cache=args.cache)
            elif inputs is not None:
                scores = fidelity.classifier_agreement(subject, rows, *inputs, args.layer,
                                                       progress=bar.update)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    columns = fidelity.FIDELITY_COLUMNS[subject.kind]
    summary = {
        "subject": {"name": subject.name, "kind": subject.kind, "image_size": subject.image_size,
                    "weights": "trained" if subject.trained else "random",
                    "model_kwargs": None if subject.trained else model_kwargs},
        "threads": used_threads, "batch_sizes": args.batch_sizes, "warmup": args.warmup,
        "repeats": args.repeats, "min_time": args.min_time, "layer": args.layer,
        "methods": methods, "keeps": keeps,
        "timing": "images/s: median over round-robin repeats, unreduced model in the same run",
        "tokens": "tokens entering the last block, protected ones (CLS, latents) included",
        "gflops": "torch FlopCounterMode, one batch-1 call, 2 FLOPs per multiply-add",
        "fidelity_columns": list(columns),
        "fidelity_note": None if scores else NO_FIDELITY,
        "images": None if inputs is None else {
            "count": len(inputs[0]), "size": subject.image_size,
            "source": str(args.images) if args.images else "default photos, val split",
            "random_crops": None if inputs[1] is None else len(inputs[1])},
        "rows": bench.result_rows(rows, measured, scores, columns, args.batch_sizes),
    }
    print(bench_report.table(summary))
    out_json = args.json or args.out / "results.json"
    try:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_json, json.dumps(summary, indent=2) + "\n")
        args.out.mkdir(parents=True, exist_ok=True)
        bench_report.plot(summary, args.out / "speedup.png")
    except OSError as err:
        print(f"vtok reduce-bench: cannot write results ({err})", file=sys.stderr)
        return 1
    print(f"wrote {out_json} and {args.out / 'speedup.png'}")
    return 0
