"""Pre-tokenizing a dataset: every image or video of the inputs becomes rows of token ids in
Parquet shards, each item exactly once, resumable after a crash (`vtok tokenize`).

The items (`vtok.data.token_items`) are cut, in their fixed order, into shards of
`shard_size` items; shard i always holds the same items, so its contents follow from the
inputs, the tokenizer and the options alone. A shard's items are tokenized by the workers
in parts of a few batches (`tokenize_shard` on each part, `split_task`), so that even a
single shard keeps every worker busy; the parent joins the parts in order (`merge_parts`: the
same rows as the shard tokenized whole) and writes it (`vtok.data.token_shards.ShardFolder`:
a temp file renamed into place, then its record). A rerun skips the shards already recorded, so a
job killed at any moment and run again ends with the same rows, none twice. Engines: worker
processes on one machine (here) or Ray Data (`vtok.data.pretokenize_ray`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtok.data.token_items import Inputs, Item, open_inputs
from vtok.data.token_shards import (
    FIXED_COLUMNS,
    OutputError,
    ShardFolder,
    ShardResult,
    ShardTask,
    TokenizeError,
    build_table,
    token_type,
)

VIEWS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")


@dataclass(frozen=True)
class TokenizeOptions:
    """What decides the rows (refused when changed in an existing output folder).

    size: resize the short side to `size` and cut the centre `size`x`size` square (None: each
    image as it is). hflip: each view also flipped left-right, as its own row. ten_crop: the
    four corners and the centre of the image resized to `size * crop_range`, each also
    flipped (LlamaGen's ten-crop; needs `size`). num_tokens: tokens per image for a
    variable-length tokenizer. max_frames / fps: the clip read from each video (a video
    tokenizer). stick: a VQ video tokenizer's `Conv3dTokenizer.stick` (None: its default,
    0.5; 0: nearest codes). shard_size: items per shard. labels / path_column: see
    `open_inputs`.
    """

    size: int | None = None
    hflip: bool = False
    ten_crop: bool = False
    crop_range: float = 1.1
    num_tokens: int | None = None
    max_frames: int = 17
    fps: float | None = None
    stick: float | None = None
    shard_size: int = 1000
    labels: str = "auto"
    path_column: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None and not 1 <= self.size <= 8192:
            raise TokenizeError(f"--size must be in [1, 8192], got {self.size}")
        if self.ten_crop and self.size is None:
            raise TokenizeError("--ten-crop needs --size (the side of each crop)")
        if not 1.0 <= self.crop_range <= 4.0:
            raise TokenizeError(f"--crop-range must be in [1, 4], got {self.crop_range}")
        if self.max_frames < 1 or self.shard_size < 1:
            raise TokenizeError("--max-frames and --shard-size must be >= 1")
        if self.fps is not None and not self.fps > 0:
            raise TokenizeError(f"--fps must be > 0, got {self.fps}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


GPU_BATCH = 32  # default views per forward pass on a GPU (see `RunOptions`)
CPU_BATCH_PIXELS = 2 * 256 * 256  # on a CPU, by default: views of at most this many pixels
PART_ITEMS = 16  # items per part of a shard handed to a worker, when the batch is smaller
SMALL_JOB = 32  # pending items below which the default runs in-process, starting no worker


@dataclass(frozen=True)
class RunOptions:
    """How the job runs (free to change between a run and its resume; the rows are the same):
    batch size, device ("cpu", "cuda", "cuda:1"), worker processes or Ray actors, torch
    threads per worker (None: the CPUs shared out among the workers), engine ("local" or
    "ray"), GPUs per Ray actor.

    Defaults (None) follow the device. On a CPU: one worker per CPU core, each with one torch
    thread, coding batches of at most `CPU_BATCH_PIXELS` pixels (two 256x256 views, 128
    of 32x32): on a conv tokenizer a single-thread process per core beats threads inside one
    process, and small batches beat large ones (the activations of a batch of 32 256x256
    images leave the cache), while tiny views want many per batch; a job of fewer than
    `SMALL_JOB` pending items runs in this process instead, since starting workers would
    cost more than they save. On a GPU: one worker per GPU ("cuda"; one with "cuda:N"),
    batches of `GPU_BATCH`. `benchmarks/pretokenize.py` measures these."""

    batch_size: int | None = None
    device: str = "cpu"
    workers: int | None = None
    threads: int | None = None
    engine: str = "local"
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or (
                self.workers is not None and self.workers < 1):
            raise TokenizeError("--batch-size and --workers must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise TokenizeError("--threads must be >= 1")
        if self.engine not in ("local", "ray"):
            raise TokenizeError(f"--engine must be local or ray, got {self.engine!r}")
        import torch

        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise TokenizeError(f"--device: unknown device {self.device!r} ({err})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TokenizeError(f"--device {self.device}: no CUDA GPU is available")

    def on_gpu(self) -> bool:
        return self.device.startswith("cuda") or self.gpus_per_worker > 0

    def resolved(self, pending_items: int | None = None) -> RunOptions:
        """These options with the defaults filled in; `pending_items`: the items left to
        do, when known to be fewer than `SMALL_JOB` (a small local job runs in-process)."""
        import torch

        workers = self.workers
        if workers is None:
            if self.engine == "local" and pending_items is not None and (
                    pending_items < SMALL_JOB):
                workers = 1
            elif self.device == "cuda" and torch.cuda.is_available():
                workers = torch.cuda.device_count()
            else:
                workers = 1 if self.on_gpu() else cpu_count()
        batch = self.batch_size or (GPU_BATCH if self.on_gpu() else None)  # None: by pixels
        return dataclasses.replace(self, workers=workers, batch_size=batch)

    def worker_threads(self) -> int:
        return self.threads or max(1, cpu_count() // (self.workers or 1))


def cpu_count() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class Summary:
    """What a job did: items and rows in the folder, shards written by this run, items
    skipped (in the whole folder), and the manifest's path."""

    items: int = 0
    rows: int = 0
    shards: int = 0
    written: int = 0
    skipped: int = 0
    manifest: Path | None = None
    reasons: list[str] = field(default_factory=list)


# -- pixels ------------------------------------------------------------------------------------
def load_item(item: Item, tok, options: TokenizeOptions):
    """(pixels `[T, 3, H, W]` in [0, 1], frame rate or 0.0) of an item; ValueError naming it."""
    import torch

    from vtok.data.images import load_image
    from vtok.data.token_items import read_bytes

    if item.problem is not None:
        raise ValueError(item.problem)
    if item.kind == "image":
        data = read_bytes(item) if item.offset >= 0 else item.path
        return load_image(data, item.source).pixels[None], 0.0
    if not tok.codes_clips:
        raise ValueError(f"{item.source}: a video; a {tok.architecture} tokenizer codes still "
                         f"images (use a video tokenizer such as conv3d)")
    if item.offset >= 0:
        raise ValueError(f"{item.source}: videos inside tar shards are not read")
    import warnings
    from fractions import Fraction

    from vtok.data.video import VideoReadWarning, read_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoReadWarning)  # clip.problem says it
        clip = read_clip(item.path, options.max_frames,
                         fps=None if options.fps is None else Fraction(options.fps))
    if clip.problem is not None:
        raise ValueError(f"{item.source}: not tokenized: {clip.problem}")
    fps = float(clip.fps) if clip.fps and clip.frames.shape[0] > 1 else 0.0
    return clip.frames.to(torch.float32), fps


def _resize_short(pixels, side: int):
    """`[T, 3, H, W]` with its short side resized to `side` (bicubic, antialiased)."""
    import torch.nn.functional as F

    h, w = pixels.shape[-2:]
    scale = side / min(h, w)
    shape = (max(side, round(h * scale)), max(side, round(w * scale)))
    if shape == (h, w):
        return pixels
    return F.interpolate(pixels, size=shape, mode="bicubic", antialias=True,
                         align_corners=False).clamp_(0, 1)


def _crop(pixels, where: str, side: int):
    h, w = pixels.shape[-2:]
    top = {"top": 0, "bottom": h - side}.get(where.split("_")[0], (h - side) // 2)
    left = {"left": 0, "right": w - side}.get(where.split("_")[-1], (w - side) // 2)
    return pixels[..., top : top + side, left : left + side]


def make_views(pixels, options: TokenizeOptions) -> list[tuple[str, bool, Any]]:
    """(view name, flipped, pixels) of each row an item gives: "full" (no --size), "center"
    (--size), or the ten-crop's five views; each also flipped with --hflip (always with
    --ten-crop)."""
    if options.size is None:
        views = [("full", pixels)]
    elif options.ten_crop:
        big = _resize_short(pixels, round(options.size * options.crop_range))
        views = [(name, _crop(big, name, options.size)) for name in VIEWS]
    else:
        views = [("center", _crop(_resize_short(pixels, options.size), "center", options.size))]
    flips = options.hflip or options.ten_crop
    out = []
    for name, view in views:
        out.append((name, False, view.contiguous()))
        if flips:
            out.append((name, True, view.flip(-1).contiguous()))
    return out


# -- one shard ---------------------------------------------------------------------------------
def tokenize_shard(task: ShardTask, tok, options: TokenizeOptions, batch_size: int | None,
                   device: str, columns: dict[str, Any]) -> ShardResult:
    """Read, cut and tokenize the items of one shard, in batches of at most `batch_size` views
    of the same shape (None: as many as hold `CPU_BATCH_PIXELS` pixels). An item that cannot
    be read or coded is skipped with the reason; nothing else is."""
    import torch

    from vtok.models.base import MAX_DECODE_PIXELS

    rows: list[dict[str, Any]] = []
    tokens: list[Any] = []
    skipped: list[dict[str, str]] = []
    failed: dict[str, dict[str, str]] = {}  # key -> skip entry, for rows failing to encode
    pending: list[tuple[int, Any]] = []  # (row number, pixels) waiting for a batch

    def encode(batch: list[tuple[int, Any]]) -> None:
        stacked = torch.stack([p for _, p in batch]).to(device)
        coded = tok.encode(stacked, num_tokens=options.num_tokens)
        indices = coded.indices.cpu().numpy()
        for (row, _), ids in zip(batch, indices):
            tokens[row] = ids
            rows[row]["token_shape"] = list(ids.shape)
            rows[row]["num_tokens"] = int(coded.num_tokens)

    def flush() -> None:
        if not pending:
            return
        try:
            encode(pending)
        except (ValueError, RuntimeError):  # find the view that fails: code them one by one
            for one in pending:
                try:
                    encode([one])
                except (ValueError, RuntimeError) as err:
                    row = rows[one[0]]
                    failed.setdefault(row["key"], {
                        "key": row["key"], "source": row["source"],
                        "reason": f"{row['source']}: cannot encode ({err})"})
        pending.clear()

    for item in task.items:
        try:
            pixels, fps = load_item(item, tok, options)
            frames = pixels.shape[0]
            views = make_views(pixels, options)
            for _, _, view in views:
                h, w = view.shape[-2:]
                if h * w > MAX_DECODE_PIXELS:
                    raise ValueError(f"{w}x{h} pixels exceed the {MAX_DECODE_PIXELS} a "
                                     f"tokenizer codes at once")
                tok.token_shape((h, w), options.num_tokens, frames=frames)
        except (ValueError, OSError, RuntimeError) as err:
            reason = str(err) if item.source in str(err) else f"{item.source}: {err}"
            skipped.append({"key": item.key, "source": item.source, "reason": reason})
            continue
        for name, flipped, view in views:
            view = view[0] if frames == 1 else view
            limit = batch_size or max(1, CPU_BATCH_PIXELS * 3 // view.numel())
            if pending and (len(pending) >= limit or pending[0][1].shape != view.shape):
                flush()
            rows.append({"key": item.key, "source": item.source, "view": name, "flip": flipped,
                         "height": view.shape[-2], "width": view.shape[-1],
                         "source_height": pixels.shape[-2], "source_width": pixels.shape[-1],
                         "frames": frames, "fps": fps, "tokenizer_id": tok.tokenizer_id,
                         **item.columns})
            tokens.append(None)
            pending.append((len(rows) - 1, view))
    flush()
    if failed:
        keep = [i for i, row in enumerate(rows) if row["key"] not in failed]
        rows, tokens = [rows[i] for i in keep], [tokens[i] for i in keep]
        skipped += failed.values()
    order = {item.key: i for i, item in enumerate(task.items)}
    skipped.sort(key=lambda s: order.get(s["key"], 0))
    table = build_table(rows, tokens, token_type(tok.codebook_size), columns)
    return ShardResult(task.index, table, skipped, len(task.items), task.first_key,
                       task.last_key)


# -- the job ---------------------------------------------------------------------------------
def shard_tasks(inputs: Inputs, shard_size: int) -> Iterator[ShardTask]:
    """The inputs' items cut into shards of `shard_size`, listed lazily."""
    batch: list[Item] = []
    index = 0
    for item in inputs.items():
        batch.append(item)
        if len(batch) == shard_size:
            yield ShardTask(index, batch)
            index, batch = index + 1, []
    if batch:
        yield ShardTask(index, batch)


def load_tokenizer(spec: str, options: TokenizeOptions | None = None):
    """A shipped tokenizer by name or a tokenizer folder, with `options.stick` applied to a
    video tokenizer; TokenizeError when it is neither."""
    from vtok.models import Tokenizer
    from vtok.models.conv3d import set_stick
    from vtok.models.shipped import tokenizer_dir

    try:
        tok = Tokenizer.from_pretrained(tokenizer_dir(spec))
        set_stick(tok, None if options is None else options.stick)
    except ValueError as err:
        raise TokenizeError(str(err)) from None
    return tok


def check_request(tok, options: TokenizeOptions, columns: dict[str, Any]) -> None:
    """Options this tokenizer cannot honour, and carried columns that clash with vtok's own,
    refused before any work."""
    if options.num_tokens is not None:
        if not tok.variable_length:
            raise TokenizeError(f"a {tok.architecture} tokenizer has a fixed token count; "
                                f"--num-tokens needs a variable-length one (titok)")
        if not 1 <= options.num_tokens <= tok.max_tokens:
            raise TokenizeError(f"--num-tokens must be in [1, {tok.max_tokens}], got "
                                f"{options.num_tokens}")
    clash = sorted(set(columns) & set(FIXED_COLUMNS))
    if clash:
        raise TokenizeError(f"the input's column(s) {', '.join(clash)} clash with the columns "
                            f"vtok writes ({', '.join(FIXED_COLUMNS)}); rename them")


def header(tok, spec: str, options: TokenizeOptions, inputs: Inputs) -> dict[str, Any]:
    """What the manifest says about the job before any shard: compared on a resume."""
    return {
        "tokenizer": {"id": tok.tokenizer_id, "name": spec, "architecture": tok.architecture,
                      "config": tok.config.to_dict(), "codebook_size": tok.codebook_size,
                      "token_type": str(token_type(tok.codebook_size)),
                      # a video tokenizer's encoding choice, outside its id: tokens depend on it
                      **({"stick": tok.stick} if hasattr(tok, "stick") else {})},
        "options": options.to_dict(),
        "inputs": [str(p.resolve()) for p in inputs.sources],
        "columns": {name: str(kind) for name, kind in inputs.columns.items()},
        "classes": inputs.classes,
    }


def tokenize_dataset(tokenizer: str, sources: list[str | Path], out: str | Path,
                     options: TokenizeOptions | None = None, run: RunOptions | None = None,
                     progress: Callable[[int], None] | None = None) -> Summary:
    """Tokenize every item of `sources` into Parquet shards in `out` (see the module doc).

    TokenizeError: a request refused before any work (bad input, option, tokenizer, or an
    output folder made with another tokenizer or other options). OutputError: the output
    folder cannot be written (the shards already written stay valid). `progress(n)` is
    called with each written shard's item count."""
    options = options or TokenizeOptions()
    run = run or RunOptions()
    tok = load_tokenizer(tokenizer, options)
    try:
        inputs = open_inputs(sources, options.labels, options.path_column)
    except ValueError as err:
        raise TokenizeError(str(err)) from None
    check_request(tok, options, inputs.columns)
    folder = ShardFolder(Path(out), header(tok, tokenizer, options, inputs), inputs.columns)
    folder.open()
    tasks = folder.pending(shard_tasks(inputs, options.shard_size))
    tasks, pending = _peek_items(tasks, SMALL_JOB if run.workers is None else 0)
    run = run.resolved(pending)
    if run.engine == "ray":
        from vtok.data.pretokenize_ray import run_ray

        written = run_ray(tasks, folder, tokenizer, options, run, progress)
    else:
        written = _run_local(tasks, folder, tokenizer, tok, options, run, progress)
    manifest = folder.finish()
    return Summary(manifest["items"], manifest["rows"], len(manifest["shards"]), written,
                   len(manifest["skipped"]), folder.manifest_path,
                   [s["reason"] for s in manifest["skipped"]])


def _peek_items(tasks: Iterator[ShardTask], limit: int) -> tuple[Iterator[ShardTask],
                                                                 int | None]:
    """(the same tasks, their item count when under `limit`, else None), reading ahead
    only the tasks needed to tell."""
    ahead: list[ShardTask] = []
    count = 0
    for task in tasks:
        ahead.append(task)
        count += len(task.items)
        if count >= limit:
            return itertools.chain(ahead, tasks), None
    return iter(ahead), (count if count < limit else None)


def _run_local(tasks: Iterator[ShardTask], folder: ShardFolder, spec: str, tok,
               options: TokenizeOptions, run: RunOptions,
               progress: Callable[[int], None] | None) -> int:
    """Shards tokenized here (one worker) or by `run.workers` spawned processes, at most two
    parts of shards per worker in flight, so the parent holds a few shards, never the
    dataset."""
    import torch

    def done(result: ShardResult) -> None:
        folder.write(result)
        if progress:
            progress(result.items)

    written = 0
    if run.workers == 1:
        if run.threads:
            torch.set_num_threads(run.threads)
        tok.to(run.device)
        for task in tasks:
            done(tokenize_shard(task, tok, options, run.batch_size, run.device,
                                folder.columns))
            written += 1
        return written
    first = next(tasks, None)
    if first is None:
        return 0  # nothing left: no worker to start
    tasks = itertools.chain([first], tasks)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    with ctx.Pool(run.workers, initializer=_init_worker,
                  initargs=(spec, options, run, folder.columns, counter, os.getpid())) as pool:
        # the workers get parts of shards (`split_task`), so that a shard's items are shared
        # out among them; the parent joins a shard's parts in order and writes it whole
        inflight: deque = deque()  # (part async result, parts in its shard)
        parts: list[ShardResult] = []

        def collect() -> None:
            nonlocal written
            result, count = inflight.popleft()
            parts.append(result.get())
            if len(parts) == count:
                done(merge_parts(parts))
                parts.clear()
                written += 1

        for task in tasks:
            pieces = split_task(task, part_size(len(task.items), run))
            for piece in pieces:
                inflight.append((pool.apply_async(_work, (piece,)), len(pieces)))
                if len(inflight) >= 2 * run.workers:
                    collect()
        while inflight:
            collect()
    return written


def part_size(items: int, run: RunOptions) -> int:
    """Items per part of a shard handed to one worker: a batch, or `PART_ITEMS` when the
    batch is smaller (fewer parts to send and join), and small enough that every worker gets
    a part of the shard."""
    return max(1, min(max(run.batch_size or 0, PART_ITEMS), -(-items // run.workers)))


def split_task(task: ShardTask, size: int) -> list[ShardTask]:
    """A shard's items cut into consecutive parts of at most `size` items (each a
    ShardTask with the shard's index), tokenized apart and joined by `merge_parts`."""
    return [ShardTask(task.index, task.items[i : i + size])
            for i in range(0, len(task.items), size)]


def merge_parts(parts: list[ShardResult]) -> ShardResult:
    """The shard made of its parts' results (in order): the same rows, skipped items and
    counts as tokenizing the shard whole."""
    import pyarrow as pa

    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables([p.table for p in parts]).combine_chunks()
    return ShardResult(parts[0].index, table, [s for p in parts for s in p.skipped],
                       sum(p.items for p in parts), parts[0].first_key, parts[-1].last_key)


_WORKER: dict[str, Any] = {}


def worker_device(run: RunOptions, number: int) -> str:
    """The device of worker `number`: with "cuda" and several GPUs, one GPU per worker in
    turn."""
    import torch

    if run.device == "cuda" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{number % torch.cuda.device_count()}"
    return run.device


def _init_worker(spec: str, options: TokenizeOptions, run: RunOptions,
                 columns: dict[str, Any], counter, parent: int) -> None:
    import torch

    torch.set_num_threads(run.worker_threads())
    with counter.get_lock():
        number = counter.value
        counter.value += 1
    device = worker_device(run, number)
    _WORKER.update(tok=load_tokenizer(spec, options).to(device), options=options, run=run,
                   device=device, columns=columns)

    def watch() -> None:  # a killed parent leaves no worker running on
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _work(task: ShardTask) -> ShardResult:
    w = _WORKER
    return tokenize_shard(task, w["tok"], w["options"], w["run"].batch_size, w["device"],
                          w["columns"])


__all__ = ["OutputError", "RunOptions", "Summary", "TokenizeError", "TokenizeOptions",
           "make_views", "merge_parts", "split_task", "tokenize_dataset", "tokenize_shard"]
