"""`TokenShards`: the rows of a token folder (`vtok tokenize`) as a PyTorch iterable dataset,
for a generator's training loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vtok.data.token_shards import read_manifest


class TokenShards(IterableDataset):
    """Rows of the Parquet shards in `directory`, each a dict: `tokens` (a LongTensor in its
    token shape, e.g. `[32, 32]`, `[128]` or `[t, h, w]`) and the other columns (key, view,
    flip, label, caption, ...; `columns` picks which, tokens always included).

    Every epoch (`set_epoch`) visits the shards in a new order drawn from (seed, epoch), and
    with `shuffle_rows` each shard's rows in a new order too; every rank sees the same order.
    Under torchrun (`RANK`, `WORLD_SIZE`; or `rank=`, `world_size=`) every rank gets the same
    number of rows, as with DistributedSampler, so that no rank of a DDP loop waits at the end
    of an epoch for one that has a batch more: the epoch's rows, one shard after another, are
    cut into `world_size` consecutive runs (a rank reads only the shards its run touches) of
    ceil(rows / world_size) rows, the last padded with rows from the start of the epoch's
    order, or, with `drop_last`, floor(rows / world_size), the rest left out of this epoch.
    A rank's DataLoader workers share its run the same way, in consecutive parts of sizes
    that are the same on every rank. `len()` is the rows of this rank. Only a finished
    folder is read (its manifest says complete).
    """

    def __init__(self, directory: str | Path, columns: Sequence[str] | None = None,
                 shuffle: bool = True, shuffle_rows: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        shards = [s for s in self.manifest["shards"] if s["rows"]]
        self.files = [self.directory / s["file"] for s in shards]
        self.shard_rows = [s["rows"] for s in shards]
        self.num_rows = sum(self.shard_rows)
        self.columns = None if columns is None else list(dict.fromkeys(["tokens", *columns]))
        self.shuffle, self.shuffle_rows, self.seed = shuffle, shuffle_rows, seed
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = (int(os.environ.get("WORLD_SIZE", 1)) if world_size is None
                           else world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's orders (call it before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def shard_order(self) -> list[int]:
        """The shards in this epoch's order (the same on every rank)."""
        if not self.shuffle:
            return list(range(len(self.files)))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.files)).tolist()

    def __len__(self) -> int:
        """The rows each rank reads in an epoch."""
        whole, left = divmod(self.num_rows, self.world_size)
        return whole + (1 if left and not self.drop_last else 0)

    def _run(self) -> tuple[int, int]:
        """[start, stop) of this rank's and DataLoader worker's rows in the epoch's sequence
        (positions past the last row wrap around to the first)."""
        per_rank = len(self)
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        whole, left = divmod(per_rank, workers)
        start = self.rank * per_rank + worker * whole + min(worker, left)
        return start, start + whole + (worker < left)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, stop = self._run()
        if start == stop:
            return
        order = self.shard_order()
        ends = np.cumsum([self.shard_rows[i] for i in order]).tolist()
        position = start
        while position < stop:  # one stretch of consecutive rows of one shard at a time
            at = position % self.num_rows
            k = int(np.searchsorted(ends, at, side="right"))
            first = at - (ends[k] - self.shard_rows[order[k]])
            take = min(stop - position, ends[k] - at)
            yield from self._rows(order[k], first, first + take)
            position += take

    def _rows(self, shard: int, first: int, stop: int) -> Iterator[dict[str, Any]]:
        """Rows [first, stop) of the shard in this epoch's row order."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.files[shard], columns=self._read_columns())
        tokens = table.column("tokens").combine_chunks()
        offsets = tokens.offsets.to_numpy()
        values = tokens.values.to_numpy().astype(np.int64)
        shapes = table.column("token_shape").to_pylist()
        others = {name: table.column(name).to_pylist() for name in table.column_names
                  if name not in ("tokens", "token_shape") and (
                      self.columns is None or name in self.columns)}
        rows = np.arange(table.num_rows)
        if self.shuffle_rows:
            rows = np.random.default_rng([self.seed, self.epoch, shard]).permutation(rows)
        for i in rows[first:stop].tolist():
            ids = torch.from_numpy(values[offsets[i] : offsets[i + 1]]).reshape(shapes[i])
            yield {"tokens": ids, **{name: column[i] for name, column in others.items()}}

    def _read_columns(self) -> list[str] | None:
        if self.columns is None:
            return None
        return list(dict.fromkeys([*self.columns, "token_shape"]))
