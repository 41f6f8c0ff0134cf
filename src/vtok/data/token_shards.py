"""Token shards: the folder `vtok tokenize` writes, and `TokenShards`, which reads it for
training.

A folder holds `shard-00000.parquet`, `shard-00001.parquet`, ... (one row per view of an
item: `FIXED_COLUMNS`, then the columns carried from the input), `manifest.json` (the
tokenizer's id and config, the options, the inputs, every shard with its row and item counts
and sha256, every skipped item with the reason, and `complete`), and `_progress/`, one record
per finished shard. A shard is written to a temp name and renamed, then its record is
written the same way: a shard counts as done only once its record exists, so a job killed
at any moment leaves whole shards, and its rerun redoes exactly the shards without a record.
Files starting with `.` or `_` are ignored by Parquet readers (pyarrow, Hugging Face
`datasets`, Spark, DuckDB globs), so `shard-*.parquet` is the dataset.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtok.files import atomic_write_text, file_sha256, temp_name

MANIFEST = "manifest.json"
PROGRESS = "_progress"
FORMAT, VERSION = "vtok-token-shards", 1
# the columns every row has, in this order; carried columns follow
FIXED_COLUMNS = ("key", "source", "view", "flip", "tokens", "token_shape", "num_tokens",
                 "height", "width", "source_height", "source_width", "frames", "fps",
                 "tokenizer_id")
MANIFEST_EVERY = 10.0  # seconds between manifest updates while a job runs
_TEMP = re.compile(r"^\.\d+-[0-9a-f]{8}\.tmp")  # vtok.files.temp_name's names


class TokenizeError(ValueError):
    """A request refused before any work: what is wrong and what to do."""


class OutputError(OSError):
    """The output folder cannot be written; the shards written before stay valid."""


@dataclass
class ShardTask:
    """The items of shard `index` (consecutive in the inputs' order)."""

    index: int
    items: list

    @property
    def first_key(self) -> str:
        return self.items[0].key

    @property
    def last_key(self) -> str:
        return self.items[-1].key


@dataclass
class ShardResult:
    """A tokenized shard: its rows (a pyarrow Table), the items skipped with their reasons,
    and the items it covers (counted, and the first and last key, to check a resume)."""

    index: int
    table: Any
    skipped: list[dict[str, str]]
    items: int
    first_key: str
    last_key: str


def token_type(codebook_size: int):
    """The smallest unsigned integer pyarrow type that holds every index of the codebook."""
    import pyarrow as pa

    for bits, kind in ((8, pa.uint8()), (16, pa.uint16()), (32, pa.uint32())):
        if codebook_size <= 1 << bits:
            return kind
    return pa.uint64()


def shard_schema(tokens_type, columns: dict[str, Any]):
    import pyarrow as pa

    i32 = pa.int32()
    fixed = [("key", pa.string()), ("source", pa.string()), ("view", pa.string()),
             ("flip", pa.bool_()), ("tokens", pa.list_(tokens_type)),
             ("token_shape", pa.list_(i32)), ("num_tokens", i32), ("height", i32),
             ("width", i32), ("source_height", i32), ("source_width", i32), ("frames", i32),
             ("fps", pa.float64()), ("tokenizer_id", pa.string())]
    return pa.schema(fixed + list(columns.items()))


def build_table(rows: list[dict[str, Any]], tokens: list[Any], tokens_type,
                columns: dict[str, Any]):
    """The shard's pyarrow Table: `rows` (dicts of column values) with `tokens` (an index
    array per row, flattened into the list column)."""
    import numpy as np
    import pyarrow as pa

    schema = shard_schema(tokens_type, columns)
    lengths = np.array([t.size for t in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = (np.concatenate([t.reshape(-1) for t in tokens]) if tokens
            else np.zeros(0, np.int64)).astype(tokens_type.to_pandas_dtype())
    arrays = []
    for f in schema:
        if f.name == "tokens":
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)))
            continue
        values = [row.get(f.name) for row in rows]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
            raise TokenizeError(f"column {f.name!r}: a value does not fit its type {f.type} "
                                f"(taken from the first rows of the input): {err}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


class ShardFolder:
    """The output folder of one job: checks a resume, writes shards and records, and the
    manifest. `header`: what the manifest says before any shard (tokenizer, options,
    inputs, columns); a folder made with another tokenizer, options or inputs is refused."""

    def __init__(self, out: Path, header: dict[str, Any], columns: dict[str, Any]) -> None:
        self.out, self.header, self.columns = out, header, columns
        self.progress = out / PROGRESS
        self.manifest_path = out / MANIFEST
        self.records: dict[int, dict[str, Any]] = {}
        self.count: int | None = None  # shards in the inputs, once all were listed
        self._saved = 0.0

    # -- starting or resuming --------------------------------------------------------------
    def open(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise TokenizeError(f"{self.out}: exists and is not a folder")
        if self.manifest_path.is_file():
            self._check_resume()
        elif self.out.is_dir() and any(not p.name.startswith(".") and p != self.progress
                                       for p in self.out.iterdir()):
            raise TokenizeError(f"{self.out}: not empty and holds no {MANIFEST} (not a token "
                                f"folder of vtok tokenize); give an empty or new folder")
        try:
            self.progress.mkdir(parents=True, exist_ok=True)
            for folder in (self.out, self.progress):
                for path in folder.iterdir():
                    if _TEMP.match(path.name):
                        path.unlink()  # a temp file of a killed run
            self._load_records()
            self.save()
        except OSError as err:
            raise OutputError(f"cannot write to {self.out} ({err.strerror or err}); pick a "
                              f"folder you can write to") from None

    def _check_resume(self) -> None:
        try:
            old = json.loads(self.manifest_path.read_text())
            if old.get("format") != FORMAT:
                raise ValueError(f"format {old.get('format')!r}")
        except (ValueError, OSError) as err:
            raise TokenizeError(f"{self.manifest_path}: not a manifest of vtok tokenize "
                                f"({err})") from None
        was, now = old.get("tokenizer", {}), self.header["tokenizer"]
        if was.get("id") != now["id"]:
            raise TokenizeError(
                f"{self.out} holds tokens of tokenizer {was.get('id')} ({was.get('name')}), "
                f"not of {now['id']} ({now['name']}); use another --out, or delete it to "
                f"start again")
        # --stick is compared by its effect, the stick the tokenizer codes at (below)
        changed = [f"--{k.replace('_', '-')} {old.get('options', {}).get(k)!r} -> {v!r}"
                   for k, v in self.header["options"].items()
                   if k != "stick" and old.get("options", {}).get(k) != v]
        # a folder from before the stick was recorded was coded with nearest codes
        was_stick = was.get("stick", 0.0 if "stick" in now else None)
        if was_stick != now.get("stick"):
            changed.append(f"the tokenizer's stick {was_stick!r} -> {now.get('stick')!r}; "
                           f"give --stick {was_stick!r} to resume it")
        if old.get("inputs") != self.header["inputs"]:
            changed.append(f"inputs {old.get('inputs')} -> {self.header['inputs']}")
        if changed:
            raise TokenizeError(f"{self.out} was made with other options ({'; '.join(changed)});"
                                f" run the same command to resume, or use another --out")

    def _load_records(self) -> None:
        for path in sorted(self.progress.glob("shard-*.json")):
            try:
                record = json.loads(path.read_text())
                shard = record["file"] and self.out / record["file"]
                if shard and shard.stat().st_size != record["bytes"]:
                    continue  # the shard was replaced since: redo it
            except (ValueError, KeyError, OSError):
                continue  # a record whose shard is gone: redo it
            self.records[record["index"]] = record

    def pending(self, tasks: Iterator[ShardTask]) -> Iterator[ShardTask]:
        """The shards of `tasks` without a record; a record that no longer matches the
        inputs (other items at its place) is refused."""
        count = 0
        for task in tasks:
            count += 1
            record = self.records.get(task.index)
            if record is None:
                yield task
                continue
            seen = (task.first_key, task.last_key, len(task.items))
            if seen != (record["first_key"], record["last_key"], record["items"]):
                raise TokenizeError(_changed(self.out, task.index, record, seen))
        extra = sorted(i for i in self.records if i >= count)
        if extra:
            raise TokenizeError(f"{self.out} holds shard {extra[0]}, past the {count} shards "
                                f"the inputs give now: the inputs changed; use another --out")
        self.count = count

    # -- writing ---------------------------------------------------------------------------
    def write(self, result: ShardResult) -> dict[str, Any]:
        """Write one shard (temp file, rename), then its record (the same way)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = shard_name(result.index) if result.table.num_rows else None
        record = {"index": result.index, "file": name, "rows": result.table.num_rows,
                  "items": result.items, "first_key": result.first_key,
                  "last_key": result.last_key, "bytes": 0, "sha256": None,
                  "skipped": result.skipped}
        try:
            if name:
                path = self.out / name
                tmp = temp_name(path)
                try:
                    pq.write_table(result.table, tmp, compression="zstd")
                    record["sha256"], record["bytes"] = file_sha256(tmp), tmp.stat().st_size
                    tmp.replace(path)
                finally:
                    tmp.unlink(missing_ok=True)
            atomic_write_text(self.progress / f"shard-{result.index:05d}.json",
                              json.dumps(record) + "\n")
        except (OSError, pa.ArrowException) as err:
            why = getattr(err, "strerror", None) or str(err)
            raise OutputError(
                f"cannot write shard {result.index} to {self.out} ({why}); the "
                f"{len(self.records)} shards written before are whole and stay valid: free "
                f"space or fix the permissions, then run the same command to continue") from None
        self.records[result.index] = record
        if time.monotonic() - self._saved > MANIFEST_EVERY:
            self.save()
        return record

    def manifest(self) -> dict[str, Any]:
        shards = [self.records[i] for i in sorted(self.records)]
        complete = self.count is not None and len(shards) == self.count
        return {"format": FORMAT, "version": VERSION, **self.header, "complete": complete,
                "items": sum(s["items"] for s in shards), "rows": sum(s["rows"] for s in shards),
                "shards": [{k: s[k] for k in ("file", "rows", "items", "sha256", "bytes",
                                               "first_key", "last_key")} for s in shards],
                "skipped": [entry for s in shards for entry in s["skipped"]]}

    def save(self) -> dict[str, Any]:
        manifest = self.manifest()
        try:
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1) + "\n")
        except OSError as err:
            raise OutputError(f"cannot write {self.manifest_path} ({err.strerror or err}); "
                              f"the shards written stay valid; run the same command again "
                              f"to finish") from None
        self._saved = time.monotonic()
        return manifest

    def finish(self) -> dict[str, Any]:
        """The final manifest (complete when every shard of the inputs is recorded)."""
        return self.save()


def _changed(out: Path, index: int, record: dict[str, Any], seen: tuple) -> str:
    return (f"the inputs changed since {out} was written: shard {index} held "
            f"{record['items']} items from {record['first_key']!r} to {record['last_key']!r}, "
            f"now {seen[2]} from {seen[0]!r} to {seen[1]!r}; use another --out")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a token folder; ValueError when it is missing, malformed, or the job
    has not finished."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{directory}: not a token folder of vtok tokenize ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a manifest of vtok tokenize")
    if not manifest.get("complete"):
        raise ValueError(f"{directory}: tokenization has not finished; run the same vtok "
                         f"tokenize command again to complete it")
    return manifest
