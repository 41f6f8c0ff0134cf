"""Bench token reduction: speed-up, GFLOPs and fidelity of each method against the unreduced model.

Every method is attached (`vtok.reduce.attach`, keep ratio applied once, at the input of block
--layer) to one model and timed side by side with the unreduced model in the same run. The
model is a timm ViT (--model: a timm name, built with random weights), a trained timm
classifier (--classifier DIR, or --model DIR: a config.json + model.safetensors folder; also
scores top-1 agreement with its unreduced self on the photos' centre views and random crops)
or a trained vtok TiTok tokenizer (--titok: also scores reconstruction PSNR and LPIPS-Alex).
Random-weight models give speed only. Writes OUT/results.json and OUT/speedup.png.
--config FILE reads any option from YAML or JSON (keyed by field name: batch_sizes: [1, 32]);
options after it override it. --print_config prints the whole resolved configuration.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_KEEPS = (0.5, 0.25, 0.1)
NO_FIDELITY = ("fidelity needs a trained model (--titok or --classifier); random-weight models "
               "give speed only")


def _option(default: Any, help: str = "", metavar: str | None = None) -> Any:
    """A field with the help (and metavar) of its option."""
    meta = {**({"help": help} if help else {}), **({"metavar": metavar} if metavar else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ReduceBenchOptions:
    """`vtok reduce-bench`'s options. The model is one of --model, --classifier, --titok."""

    model: str = _option("vit_tiny_patch16_224", "timm model name (random weights) or a "
                         "folder with config.json + model.safetensors")
    model_kwargs: dict[str, Any] = _option({}, "timm.create_model options, e.g. "
                                           '\'{"img_size": 32}\'', "JSON")
    classifier: Path | None = _option(None, "trained timm classifier folder: adds top-1 "
                                      "agreement", "DIR")
    titok: str | None = _option(None, "trained vtok TiTok tokenizer: adds reconstruction "
                                "PSNR / LPIPS", "NAME_OR_DIR")
    vlm: Path | None = _option(None, "trained LLaVA folder (benchmarks/vlm): visual-token "
                               "reduction at the vision tower, projector and LLM, scored by "
                               "answer agreement and first-token KL", "DIR")
    where: list[str] | None = _option(None, "with --vlm: places to reduce at (default vision "
                                      "projector llm)", "PLACE")
    methods: list[str] | None = _option(None, "reducers to bench (default: every registered "
                                        "one); options as NAME:option=value,..., e.g. "
                                        "tome:round_share=0.5", "NAME")
    keeps: list[float] = _option(list(DEFAULT_KEEPS), "keep ratios", "RATIO")
    layer: int | None = _option(None, "block at whose input tokens are reduced (default 1: "
                                "after the first block)")
    batch_sizes: list[int] = _option([1, 32], "batch sizes timed", "B")
    warmup: int = _option(2, "untimed calls per variant")
    repeats: int = _option(5, "timed rounds (median taken)")
    min_time: float = _option(0.2, "seconds one timed repeat lasts at least")
    threads: int = _option(0, "torch threads (0: all cores)")
    image_size: int | None = _option(None, "input size for --titok (default: its native size)")
    images: Path | None = _option(None, "photos for fidelity (default: the default photos' val "
                                  "split)", "DIR")
    limit: int | None = _option(None, "use at most this many photos")
    cache: Path | None = _option(None, "", "DIR")  # its help is cache_help()
    random_crops: int = _option(4, "random crops per photo for classifier agreement", "N")
    out: Path = _option(Path("reduce-bench"), "folder of results.json and speedup.png", "DIR")
    json: Path | None = _option(None, "results file (default: OUT/results.json)", "PATH")


def main(argv: Sequence[str]) -> int:
    from vtok.cli.typed import OptionError

    try:
        options = read_options(argv)
    except OptionError as err:
        print(f"vtok reduce-bench: {err}", file=sys.stderr)
        return 2
    return run(options)


def read_options(argv: Sequence[str]) -> ReduceBenchOptions:
    """The options of the command line (OptionError naming a refused one)."""
    from vtok.cli.options import cache_help
    from vtok.cli.typed import add_fields, new_parser, parse

    parser = new_parser("reduce-bench", __doc__, "reduce")
    add_fields(parser, ReduceBenchOptions, extra={"cache": {"help": cache_help()}})
    return ReduceBenchOptions(**parse(parser, argv))


def _check(args: ReduceBenchOptions) -> tuple[list[str], list[float]]:
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
    if sum(bool(v) for v in (args.titok, args.classifier, args.vlm)) > 1:
        raise ValueError("give one of --titok, --classifier and --vlm")
    return methods, keeps


def _subject(args: ReduceBenchOptions):
    from vtok.eval.reduce_bench import timm_subject, titok_subject

    if args.titok:
        return titok_subject(args.titok, args.image_size)
    if args.classifier:
        if not args.classifier.is_dir():
            raise ValueError(f"--classifier {args.classifier}: not a folder")
        return timm_subject(str(args.classifier), trained=True)
    return timm_subject(args.model, args.model_kwargs)


def _images(args: ReduceBenchOptions, subject) -> tuple[Any, Any]:
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


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch uses `threads` threads (0: every core this process may run on) inside the block."""
    import torch

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads or cores or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(args: ReduceBenchOptions) -> int:
    import torch
    from tqdm import tqdm

    from vtok.eval import reduce_bench as bench
    from vtok.eval import reduce_fidelity as fidelity
    from vtok.eval import reduce_report as bench_report
    from vtok.files import atomic_write_text
    from vtok.reduce.adapter import check_layers
    from vtok.reduce.model_parts import find_parts

    try:
        methods, keeps = _check(args)
        if args.vlm:
            from vtok.cli.reduce_bench_vlm import run_vlm

            return run_vlm(args, methods, keeps)
        subject = _subject(args)
        check_layers(args.layer, True, find_parts(subject.model).depth)
        inputs = _images(args, subject) if subject.trained else None
    except (ValueError, RuntimeError, OSError) as err:
        print(f"vtok reduce-bench: {err}", file=sys.stderr)
        return 2
    rows = bench.variants(methods, keeps)
    with torch_threads(args.threads):
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
    columns = fidelity.FIDELITY_COLUMNS[subject.kind]
    summary = {
        "subject": {"name": subject.name, "kind": subject.kind, "image_size": subject.image_size,
                    "weights": "trained" if subject.trained else "random",
                    "model_kwargs": None if subject.trained else args.model_kwargs},
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
