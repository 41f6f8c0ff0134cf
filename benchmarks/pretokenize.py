"""`vtok tokenize` throughput and memory, side by side in one run.

- items/s with a tokenizer (default conv2d-f8) at SIZE x SIZE (default 256) on generated
  photos-like images: one worker with one thread, two workers with one thread each, and the
  Ray engine (two actors of one thread, on a local Ray), each a fresh `vtok tokenize` process;
- the same job done the way LlamaGen's `extract_codes_c2i.py` does it (a DataLoader of
  batch size 1, `torch.no_grad` encoding, one `.npy` file per image, a single process with
  torch's default threads; its DataLoader workers, 24 there by default, tried at 0 and 2
  here, the faster one counted) against vtok's default command and vtok's earlier default
  (one worker of all threads, batches of 32), each run `--repeats` times in turn (the best
  counts; other jobs share this machine), with the files each leaves. The loop runs in a
  fresh process too, its clock started, like vtok's, after the imports: loading the
  tokenizer counts for both. It codes the same views as vtok (vtok's resize and crop, so
  the tokens are the same) and, like vtok's runs here, no flipped copy (LlamaGen's script
  codes each image with its flip, a batch of 2);
- `tok.encode` on one thread at batch sizes 1, 2, 8 and 32 (the CPU default's choice);
- the parent process's peak memory (its own RSS, not its workers') with two workers on
  1,000 and 10,000 small generated images: it should not grow with the folder.

On a GPU (`--device cuda`) the CPU-scaling rows (one and two single-thread workers, Ray) are
left out: vtok's default (one worker per GPU, batches of 32) runs against the same loop on the
GPU, and the batch-size sweep runs on the GPU.

Usage: python benchmarks/pretokenize.py [--json PATH] [--images N] [--repeats N] [--tiny]
       [--device cuda]
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


def llamagen_loop(tokenizer: str, folder: Path, out: Path, size: int, loader_workers: int,
                  device: str = "cpu") -> None:
    """LlamaGen's way (`extract_codes_c2i.py`): a DataLoader of batch size 1, encode under
    `torch.no_grad`, one .npy per image; prints the seconds from before loading the
    tokenizer (run in a fresh process by `peer_loop`)."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from vtok.data.images import read_image
    from vtok.data.pretokenize import TokenizeOptions, make_views
    from vtok.models import load

    start = time.perf_counter()
    tok = load(tokenizer).to(device)
    options = TokenizeOptions(size=size)

    class Images(Dataset):
        def __init__(self) -> None:
            self.paths = sorted(folder.glob("*.jpg"))

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int):
            return make_views(read_image(self.paths[i])[None], options)[0][2][0]

    loader = DataLoader(Images(), batch_size=1, shuffle=False, num_workers=loader_workers,
                        drop_last=False)
    out.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(loader):
        with torch.no_grad():
            codes = tok.encode(x.to(device)).indices
        np.save(out / f"{i}.npy", codes.cpu().numpy())
    print("RESULT", time.perf_counter() - start)


def peer_loop(tokenizer: str, folder: Path, out: Path, size: int, loader_workers: int,
              device: str = "cpu") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--peer", tokenizer, str(folder), str(out),
                           str(size), str(loader_workers), device], env=env, capture_output=True,
                          text=True)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"the LlamaGen-style loop failed:\n{done.stderr[-2000:]}")
    return {"seconds": float(line[-1].split()[1]), "loader_workers": loader_workers}


def batch_sizes(tokenizer: str, folder: Path, size: int, views: int = 16,
                rounds: int = 2, device: str = "cpu") -> dict:
    """Images/s of `tok.encode` on one thread (or the GPU) at several batch sizes, on the same
    views in turn (best of `rounds`), and whether every batch size gives the same tokens."""
    import torch

    from vtok.data.images import read_image
    from vtok.data.pretokenize import TokenizeOptions, make_views
    from vtok.models import load

    torch.set_num_threads(1)
    tok = load(tokenizer).to(device)
    options = TokenizeOptions(size=size)
    x = torch.stack([make_views(read_image(p)[None], options)[0][2][0]
                     for p in sorted(folder.glob("*.jpg"))[:views]]).to(device)
    best: dict[str, float] = {}
    tokens = {}
    for _ in range(rounds):
        for batch in (1, 2, 8, 32):
            start = time.perf_counter()
            tokens[batch] = torch.cat([tok.encode(x[i : i + batch]).indices
                                       for i in range(0, len(x), batch)]).cpu()  # waits
            speed = len(x) / (time.perf_counter() - start)
            best[str(batch)] = max(best.get(str(batch), 0.0), speed)
    same = all(torch.equal(tokens[b], tokens[1]) for b in tokens)
    return {"images_per_s": best, "same_tokens_at_every_batch_size": same, "views": len(x)}


def folder_files(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def main() -> None:
    if sys.argv[1:2] == ["--peer"]:
        tokenizer, folder, out, size, workers, device = sys.argv[2:]
        return llamagen_loop(tokenizer, Path(folder), Path(out), int(size), int(workers),
                             device)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--tokenizer", default="conv2d-f8")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=256, help="images for the speed runs")
    parser.add_argument("--memory-images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of vtok's defaults and the loop, in turn (the best counts)")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray engine out")
    parser.add_argument("--tiny", action="store_true", help="a quick check that it runs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    args = parser.parse_args()
    if args.tiny:
        if args.json == OUT:
            parser.error("--tiny writes no results file; give --json PATH")
        args.size, args.images, args.memory_images, args.repeats = 32, 8, [20, 60], 1
    threads = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="vtok-bench-tokenize-"))
    load_before = os.getloadavg()
    try:
        results = run(args, work, threads)
        # other jobs on the machine slow every run, threaded ones most: say how busy it was
        results["machine"]["load_average_1_5_15_min"] = {"before": load_before,
                                                         "after": os.getloadavg()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["ratios"], indent=1))
    print(f"wrote {args.json}")


def run(args: argparse.Namespace, work: Path, threads: int) -> dict:
    side = round(args.size * 1.25)
    photos = make_images(work / "photos", args.images, (side, round(side * 4 / 3)))
    common = ["-t", args.tokenizer, "-i", str(photos), "--size", str(args.size),
              "--device", args.device]
    gpu = args.device != "cpu"
    runs = {}

    def timed(name: str, extra: list[str], env_threads: int | None = None) -> None:
        shutil.rmtree(work / name, ignore_errors=True)  # a fresh job, not a resumed one
        result = vtok_tokenize([*common, "-o", str(work / name), *extra], env_threads)
        result["items_per_s"] = args.images / result["seconds"]
        result["output"] = folder_files(work / name)
        runs[name] = result
        print(f"{name:24s} {result['items_per_s']:8.2f} items/s", flush=True)

    if not gpu:  # CPU scaling: one and two single-thread workers
        timed("one_worker_one_thread", ["--workers", "1", "--threads", "1"], 1)
        timed("two_workers_one_thread", ["--workers", "2", "--threads", "1"], 1)
    if not args.no_ray and not gpu:
        timed("ray_two_actors_one_thread",
              ["--engine", "ray", "--workers", "2", "--threads", "1"], 1)
    # vtok's defaults against the LlamaGen-style loop, in turn, `repeats` times each
    tries: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        # on a GPU the earlier CPU default (one worker, batches of 32) is the GPU default
        for name, extra in (("vtok_default", []),
                            *(() if gpu else (("vtok_earlier_default",
                                               ["--workers", "1", "--batch-size", "32"]),))):
            timed(name, extra)
            tries.setdefault(name, []).append(runs[name])
        for loader_workers in (0, 2):
            name = f"llamagen_style_loop_loader_workers_{loader_workers}"
            loop = peer_loop(args.tokenizer, photos, work / "npy", args.size, loader_workers,
                             args.device)
            loop["items_per_s"] = args.images / loop["seconds"]
            loop["output"] = folder_files(work / "npy")
            tries.setdefault(name, []).append(loop)
            print(f"{name:24s} {loop['items_per_s']:8.2f} items/s", flush=True)
    for name, results in tries.items():
        runs[name] = max(results, key=lambda r: r["items_per_s"])
        runs[name]["items_per_s_each_try"] = [round(r["items_per_s"], 2) for r in results]
    loop = max((runs[f"llamagen_style_loop_loader_workers_{n}"] for n in (0, 2)),
               key=lambda r: r["items_per_s"])
    runs["llamagen_style_loop"] = loop

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

    # last: a process keeps its peak memory across fork and exec, so the model coded here
    # would show in the peak memory of every `vtok tokenize` started after it
    sweep = batch_sizes(args.tokenizer, photos, args.size, device=args.device)
    print(f"{'the GPU' if gpu else 'one thread'}, images/s by batch size: "
          f"{sweep['images_per_s']}", flush=True)
    ratios = {"vtok_default_vs_llamagen_loop":
                  runs["vtok_default"]["items_per_s"] / loop["items_per_s"]}
    if not gpu:
        ratios["vtok_earlier_default_vs_llamagen_loop"] = (
            runs["vtok_earlier_default"]["items_per_s"] / loop["items_per_s"])
        one = runs["one_worker_one_thread"]["items_per_s"]
        ratios["two_workers_vs_one"] = runs["two_workers_one_thread"]["items_per_s"] / one
        if "ray_two_actors_one_thread" in runs:
            ratios["ray_vs_one_worker"] = runs["ray_two_actors_one_thread"]["items_per_s"] / one
    counts = sorted(memory, key=int)
    ratios["parent_peak_memory_largest_vs_smallest_folder"] = (
        memory[counts[-1]]["parent_peak_mb"] / memory[counts[0]]["parent_peak_mb"])
    return {"machine": {"cpus": threads, "platform": platform.platform(),
                        "python": platform.python_version(), "device": args.device},
            "tokenizer": args.tokenizer, "size": args.size, "images": args.images,
            "runs": runs,
            ("encode_gpu_by_batch_size" if gpu else "encode_one_thread_by_batch_size"): sweep,
            "memory_two_workers": memory, "ratios": ratios,
            "note": "every run is a fresh process whose seconds start after its imports and "
                    "include loading the tokenizer (vtok's also starting the workers, their "
                    "imports too, or Ray); the machine is shared with other jobs, so the "
                    "defaults and the loop are run in turn and the best try counts; "
                    "llamagen_style_loop is the faster of its two DataLoader settings"}


if __name__ == "__main__":
    main()
