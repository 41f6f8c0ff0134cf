"""The Ray Data engine of `vtok tokenize` (`--engine ray`): the same shards, manifest and
exactly-once guarantee as the local engine, with the tokenizing spread over a Ray cluster.

Pipeline, per window of pending shards: `ray.data.from_items` (one row per part of a shard:
its items, which are paths and carried values, not pixels) -> `map_batches` with
`ShardTokenizer`, a tokenizer actor per worker (`--workers` actors, each with `--threads` CPUs
and `--gpus-per-worker` GPUs), which reads, cuts and tokenizes its part exactly as a local
worker does (`tokenize_shard`) -> the driver streams the results back, joins each shard's parts
and writes the shard and its record (`ShardFolder.write`), so a shard is whole or absent
whatever is killed, and a rerun redoes only the unrecorded shards. The workers read the inputs
by path: on a cluster the inputs must be at the same paths on every node (a shared file
system); only the driver writes the output folder.

`ray.init()` connects to the cluster named by `RAY_ADDRESS` (as under `ray job submit`), or
starts a local Ray when none is named; a Ray already initialised by the caller is used as is.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from vtok.data.pretokenize import (
    RunOptions,
    TokenizeOptions,
    load_tokenizer,
    merge_parts,
    part_size,
    split_task,
    tokenize_shard,
)
from vtok.data.token_shards import ShardFolder, ShardResult, ShardTask


class ShardTokenizer:
    """A Ray actor: loads the tokenizer once, then tokenizes parts of shards (one per row)."""

    def __init__(self, spec: str, options: TokenizeOptions, run: RunOptions,
                 columns: dict[str, Any]) -> None:
        import torch

        torch.set_num_threads(run.threads or 1)
        self.device = "cuda" if run.gpus_per_worker > 0 else run.device
        self.tok = load_tokenizer(spec, options).to(self.device)
        self.options, self.run, self.columns = options, run, columns

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = []
        for blob in batch["task"]:
            # bytes this job's driver pickled moments ago (Ray pickles every row anyway);
            # never data from a file
            task: ShardTask = pickle.loads(blob)
            result = tokenize_shard(task, self.tok, self.options, self.run.batch_size,
                                    self.device, self.columns)
            results.append(pickle.dumps(result))
        return {"index": np.asarray(batch["index"]), "part": np.asarray(batch["part"]),
                "result": np.array(results, dtype=object)}


def run_ray(tasks: Iterator[ShardTask], folder: ShardFolder, spec: str,
            options: TokenizeOptions, run: RunOptions,
            progress: Callable[[int], None] | None) -> int:
    """Tokenize the pending shards on Ray; returns how many were written. At most `window`
    shards' item lists are in the driver at once."""
    import ray

    if not ray.is_initialized():
        ray.init()
    ray.data.DataContext.get_current().enable_progress_bars = False
    window = max(16, 4 * run.workers)
    written = 0
    while True:
        chunk = list(islice(tasks, window))
        if not chunk:
            return written
        # one row per part of a shard (`split_task`), so that a shard's items are shared out
        # among the actors; the driver joins a shard's parts in order and writes it whole
        rows, counts = [], {}
        for task in chunk:
            pieces = split_task(task, part_size(len(task.items), run))
            counts[task.index] = len(pieces)
            rows += [{"index": task.index, "part": n, "task": pickle.dumps(piece)}
                     for n, piece in enumerate(pieces)]
        dataset = ray.data.from_items(rows).map_batches(
            ShardTokenizer, fn_constructor_args=(spec, options, run, folder.columns),
            batch_size=1, concurrency=min(run.workers, len(rows)),
            num_cpus=run.threads or 1, batch_format="numpy",
            **({"num_gpus": run.gpus_per_worker} if run.gpus_per_worker else {}))
        parts: dict[int, dict[int, ShardResult]] = {}
        for row in dataset.iter_rows():
            index = int(row["index"])
            # an actor's result for this job's own task (see ShardTokenizer), not file data
            parts.setdefault(index, {})[int(row["part"])] = pickle.loads(row["result"])
            if len(parts[index]) < counts[index]:
                continue
            got = parts.pop(index)
            result = merge_parts([got[n] for n in range(counts[index])])
            folder.write(result)
            written += 1
            if progress:
                progress(result.items)
