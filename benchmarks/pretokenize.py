"""`vtok tokenize` throughput and memory, side by side in one run.

- items/s with a tokenizer (default conv2d-f8) at SIZE x SIZE (default 256) on generated
  photos-like images: one worker with one thread, two workers with one thread each, and the
  Ray engine (two actors of one thread, on a local Ray), each a fresh `vtok tokenize` process;
- the same job done the way LlamaGen's `extract_codes_c2i.py` does it (batch size 1, one
  `.npy` file per image, a single process) against vtok's default command (one worker, the
  default batch and threads, with the same threads as the loop), with the files each leaves;
- the parent process's peak memory (its own RSS, not its workers') with two workers on
  1,000 and 10,000 small generated images: it should not grow with the folder.

Usage: python benchmarks/pretokenize.py [--json PATH] [--images N] [--tiny]
(Not named tokenize.py: a script's folder comes first on sys.path, and that name would hide
the standard library's `tokenize` module, which `linecache` imports.)
(`--tiny` checks that the script runs, in a minute: a few small images; give --json then.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).parent / "results" / "tokenize.json"
SRC = Path(__file__).resolve().parents[1] / "src"
# runs one `vtok tokenize` in this process and prints its own peak RSS (kB on Linux); the
# clock starts after the imports (torch, pyarrow), which every Python job pays once
RUN = ("import resource, sys, time\n"
       "import pyarrow, torch, vtok.data.pretokenize\n"
       "from vtok.cli import main\n"
       "start = time.perf_counter()\n"
       "code = main(sys.argv[1:])\n"
       "print('RESULT', code, time.perf_counter() - start,\n"
       "      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def make_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """`count` smooth random JPEGs (a coarse random field upscaled, plus grain)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(count):
        field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        pixels = np.asarray(field.resize((w, h), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def vtok_tokenize(args: list[str], threads: int | None = None) -> dict:
    """One `vtok tokenize` in a fresh process: exit code, wall seconds of the job (start-up
    excluded), the parent's own peak RSS in MB."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", RUN, "tokenize", *args], env=env,
                          capture_output=True, text=True)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"vtok tokenize {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    _, code, seconds, rss_kb = line[-1].split()
    return {"exit": int(code), "seconds": float(seconds), "parent_peak_mb": int(rss_kb) / 1024}


def llamagen_loop(tokenizer: str, folder: Path, out: Path, size: int, threads: int) -> dict:
    """LlamaGen's way: one image at a time (batch size 1), centre crop, encode, one .npy."""
    import torch

    from vtok.data.images import read_image
    from vtok.data.pretokenize import TokenizeOptions, make_views
    from vtok.models import load

    torch.set_num_threads(threads)
    tok = load(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    options = TokenizeOptions(size=size)
    paths = sorted(folder.glob("*.jpg"))
    start = time.perf_counter()
    for i, path in enumerate(paths):
        view = make_views(read_image(path)[None], options)[0][2]
        codes = tok.encode(view).indices.numpy()
        np.save(out / f"{i}.npy", codes)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items_per_s": len(paths) / seconds}


def folder_files(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--tokenizer", default="conv2d-f8")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=256, help="images for the speed runs")
    parser.add_argument("--memory-images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray engine out")
    parser.add_argument("--tiny", action="store_true", help="a quick check that it runs")
    args = parser.parse_args()
    if args.tiny:
        if args.json == OUT:
            parser.error("--tiny writes no results file; give --json PATH")
        args.size, args.images, args.memory_images = 32, 8, [20, 60]
    threads = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="vtok-bench-tokenize-"))
    try:
        results = run(args, work, threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["ratios"], indent=1))
    print(f"wrote {args.json}")


def run(args: argparse.Namespace, work: Path, threads: int) -> dict:
    side = round(args.size * 1.25)
    photos = make_images(work / "photos", args.images, (side, round(side * 4 / 3)))
    common = ["-t", args.tokenizer, "-i", str(photos), "--size", str(args.size)]
    runs = {}

    def timed(name: str, extra: list[str], env_threads: int | None = None) -> None:
        result = vtok_tokenize([*common, "-o", str(work / name), *extra], env_threads)
        result["items_per_s"] = args.images / result["seconds"]
        result["output"] = folder_files(work / name)
        runs[name] = result
        print(f"{name:24s} {result['items_per_s']:8.2f} items/s", flush=True)

    timed("one_worker_one_thread", ["--workers", "1", "--threads", "1"], 1)
    timed("two_workers_one_thread", ["--workers", "2", "--threads", "1"], 1)
    if not args.no_ray:
        timed("ray_two_actors_one_thread",
              ["--engine", "ray", "--workers", "2", "--threads", "1"], 1)
    timed("vtok_default", [])
    loop = llamagen_loop(args.tokenizer, photos, work / "npy", args.size, threads)
    loop["output"] = folder_files(work / "npy")
    runs["llamagen_style_loop"] = loop
    print(f"{'llamagen_style_loop':24s} {loop['items_per_s']:8.2f} items/s", flush=True)

    memory = {}
    for count in args.memory_images:
        small = make_images(work / f"small{count}", count, (40, 48), seed=count)
        result = vtok_tokenize(["-t", args.tokenizer, "-i", str(small), "--size", "32",
                                "--workers", "2", "--threads", "1",
                                "-o", str(work / f"small{count}-out")], 1)
        memory[str(count)] = {"parent_peak_mb": round(result["parent_peak_mb"], 1),
                              "items_per_s": count / result["seconds"]}
        shutil.rmtree(small)
        print(f"{count:6d} small images: parent peak {result['parent_peak_mb']:.0f} MB",
              flush=True)

    one = runs["one_worker_one_thread"]["items_per_s"]
    ratios = {"two_workers_vs_one": runs["two_workers_one_thread"]["items_per_s"] / one,
              "vtok_default_vs_llamagen_loop":
                  runs["vtok_default"]["items_per_s"] / loop["items_per_s"]}
    if "ray_two_actors_one_thread" in runs:
        ratios["ray_vs_one_worker"] = runs["ray_two_actors_one_thread"]["items_per_s"] / one
    counts = sorted(memory, key=int)
    ratios["parent_peak_memory_largest_vs_smallest_folder"] = (
        memory[counts[-1]]["parent_peak_mb"] / memory[counts[0]]["parent_peak_mb"])
    return {"machine": {"cpus": threads, "platform": platform.platform(),
                        "python": platform.python_version()},
            "tokenizer": args.tokenizer, "size": args.size, "images": args.images,
            "runs": runs, "memory_two_workers": memory, "ratios": ratios,
            "note": "each vtok run's seconds start after the parent's imports and include "
                    "loading the tokenizer and starting the workers (their imports too) or "
                    "Ray; the LlamaGen-style loop's start after loading the tokenizer"}


if __name__ == "__main__":
    main()
