"""The items a pre-tokenization job reads: every image or video of its inputs, in a fixed
order, as small picklable records (`Item`), found lazily so that a huge dataset is never
listed in memory at once.

Inputs:
- a folder: its images and videos (recursive, by suffix; `.tar` files in it are read as
  WebDataset shards), in a sorted walk: a folder's own files, then each subfolder in name
  order. Class folders (`root/CLASS/...` with no image or video directly in `root`) give a
  `label` (the class's index among the sorted class names) and a `class_name` column.
- a WebDataset `.tar` shard: each sample (members sharing a key, e.g. `0001.jpg`,
  `0001.cls`, `0001.txt`) is one item; `cls` becomes an integer `label`, every other member
  that is not the image a text column named by its extension (`txt`, `json`, ...). The
  columns are those of the first sample of the first shard. A damaged shard does not stop
  the job: the samples before the damage are items as usual; a sample without an image or
  video member, or with a member cut off by the end of the file, is an item that is skipped
  with the reason; and damage that ends the listing (a garbage or cut header, a file that is
  no uncompressed tar) is one more skipped item, `SHARD@BYTE`, standing for the rest of the
  shard, which cannot be found again reliably past a bad header. The same bytes give the
  same items, so a resumed job sees the same shards.
- a manifest (`.jsonl`, `.csv` or `.parquet`): one item per row, the file in its path column
  (`path`, `image`, `file`, `filename`, `video` or the one named; relative paths are taken
  from the manifest's folder); every other column is carried through with its type.
- an image or video file.

`vtok.data.pretokenize.load_item` turns an item into pixels; every failure is a
`ValueError` naming the item.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtok.data.images import IMAGE_SUFFIXES
from vtok.data.video_datasets import VIDEO_SUFFIXES

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
PATH_COLUMNS = ("path", "image", "file", "filename", "video")
MAX_MEMBER_BYTES = 1 << 28  # a tar member is read into memory whole: 256 MiB at most
MAX_TEXT_BYTES = 1 << 20  # a carried tar member (caption, json) of at most 1 MiB


@dataclass
class Item:
    """One image or video. key: its name in the dataset (relative path, tar key or manifest
    path); source: where it is read from (a path, or `shard.tar:member`); kind: "image" or
    "video"; offset/size: the member's bytes inside a tar shard (-1: a whole file);
    columns: the values carried into its rows."""

    key: str
    source: str
    kind: str
    path: str
    offset: int = -1
    size: int = -1
    columns: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why it cannot be read, known when it was listed


@dataclass
class Inputs:
    """What `open_inputs` found before any item is listed: the carried columns (name ->
    pyarrow type) and the class names of class folders."""

    sources: list[Path]
    columns: dict[str, Any]
    classes: list[str] | None
    labels: str
    path_column: str | None

    def items(self) -> Iterator[Item]:
        """Every item, in the same order on every call."""
        for source in self.sources:
            yield from _source_items(source, self)


def media_kind(path: str | Path) -> str | None:
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def open_inputs(sources: Sequence[str | Path], labels: str = "auto",
                path_column: str | None = None) -> Inputs:
    """Check the inputs and find their carried columns; ValueError naming a bad input.

    labels: "auto" (class folders give labels when found), "folders" (the folder must have
    class folders) or "none"."""
    import pyarrow as pa

    if labels not in ("auto", "folders", "none"):
        raise ValueError(f"labels must be auto, folders or none, got {labels!r}")
    paths = [Path(s) for s in sources]
    if not paths:
        raise ValueError("no input given")
    columns: dict[str, Any] = {}
    classes = None
    for path in paths:
        found: dict[str, Any] = {}
        if path.is_dir():
            names = _class_names(path) if labels != "none" else None
            if labels == "folders" and not names:
                raise ValueError(f"{path}: no class folders (images directly in the folder, "
                                 f"or no subfolders)")
            if names:
                if classes is not None and classes != names:
                    raise ValueError(f"{path}: its class folders differ from the first input's")
                classes = names
                found = {"label": pa.int64(), "class_name": pa.string()}
            else:  # the first tar shard with a readable sample (a damaged one may have none)
                tars = (_tar_columns(p) for p in _walk(path) if p.suffix == ".tar")
                found = next((c for c in tars if c is not None), {})
        elif not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        elif path.suffix == ".tar":
            found = _tar_columns(path) or {}
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            schema = _manifest_schema(path)
            column = _path_column(path, schema.names, path_column)
            found = {n: schema.field(n).type for n in schema.names if n != column}
        elif media_kind(path) is None:
            raise ValueError(f"{path}: not a folder, a .tar shard, a manifest "
                             f"({', '.join(MANIFEST_SUFFIXES)}), an image or a video")
        for name, kind in found.items():
            if name in columns and columns[name] != kind:
                raise ValueError(f"{path}: column {name!r} is {kind} here and "
                                 f"{columns[name]} in an earlier input")
            columns.setdefault(name, kind)
    return Inputs(paths, columns, classes, labels, path_column)


def _walk(root: Path) -> Iterator[Path]:
    """Files below `root` in a fixed order: a folder's files by name, then its subfolders by
    name; hidden files and folders (a leading dot) are left out."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _class_names(root: Path) -> list[str] | None:
    """The sorted class folder names when `root` holds no media itself and has subfolders
    with media, else None."""
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    if any(e.is_file() and (media_kind(e.name) or e.name.endswith(".tar")) for e in entries):
        return None
    names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    return names or None


def _source_items(source: Path, inputs: Inputs) -> Iterator[Item]:
    if source.is_dir():
        classes = {name: i for i, name in enumerate(inputs.classes or [])}
        for path in _walk(source):
            rel = path.relative_to(source).as_posix()
            carried = {}
            if inputs.classes is not None and (source / rel.split("/")[0]).is_dir():
                name = rel.split("/")[0]
                carried = {"label": classes[name], "class_name": name}
            if path.suffix == ".tar" and inputs.classes is None:
                yield from _tar_items(path, prefix=path.relative_to(source).with_suffix(""))
            elif media_kind(path):
                yield Item(rel, str(path), media_kind(path), str(path), columns=carried)
    elif source.suffix == ".tar":
        yield from _tar_items(source, prefix=Path(source.stem))
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest_items(source, inputs.path_column)
    else:
        yield Item(source.name, str(source), media_kind(source) or "image", str(source))


# -- WebDataset tar shards -------------------------------------------------------------------
@dataclass
class _Damage:
    """Where and why the listing of a tar shard stopped before its end."""

    offset: int
    reason: str


def _samples(path: Path) -> Iterator[tuple[str, list[tarfile.TarInfo]] | _Damage]:
    """(key, members) of each sample: consecutive members sharing the name before the first
    dot of their file name (WebDataset's rule); then a `_Damage` when the listing stopped at
    damage rather than at the end of the archive."""
    try:
        # uncompressed only: members are read at their offset; closed by the `with` below
        tar = tarfile.open(path, "r:")  # noqa: SIM115
    except (OSError, tarfile.TarError) as err:
        yield _Damage(0, f"{path}: not a readable tar shard ({err}; a compressed one is not "
                         f"read); skipped whole")
        return
    with tar:
        key, group, problem = None, [], None
        try:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                this = (folder + "/" if folder else "") + name.split(".", 1)[0]
                if group and this != key:
                    yield key, group
                    group = []
                key = this
                group.append(member)
        except (OSError, tarfile.TarError) as err:  # e.g. a bad pax header
            problem = f"{err}"
        if group:
            yield key, group
        offset = tar.offset
        if offset >= path.stat().st_size:
            problem = None  # the end of the file; a member it cuts is named by `_tar_items`
        else:
            problem = problem or _end_problem(path, offset)
    if problem is not None:
        yield _Damage(offset, f"{path}: unreadable from byte {offset} on ({problem}); the "
                              f"samples before it were read, the rest of the shard is skipped")


def _end_problem(path: Path, offset: int) -> str | None:
    """Why tarfile's listing stopped at `offset`, unless it is the end of the archive (zero
    blocks, or the end of the file): tarfile stops quietly at a bad header past the first."""
    with open(path, "rb") as f:
        f.seek(offset)
        block = f.read(tarfile.BLOCKSIZE)
    if block.count(0) == len(block):
        return None
    if len(block) < tarfile.BLOCKSIZE:
        return "the file ends inside a member header"
    return "a member header that is not a tar header"


def _extension(member: tarfile.TarInfo) -> str:
    """What follows the first dot of the member's file name (`jpg`, `cls`, `seg.png`)."""
    name = member.name.rpartition("/")[2]
    return name.split(".", 1)[1].lower() if "." in name else ""


def _tar_columns(path: Path) -> dict[str, Any] | None:
    """The columns of the shard's first sample; None when no sample can be read."""
    import pyarrow as pa

    for sample in _samples(path):
        if isinstance(sample, _Damage):
            continue
        extensions = [_extension(m) for m in sample[1]
                      if media_kind("x." + _extension(m)) is None]
        return {("label" if e == "cls" else e): (pa.int64() if e == "cls" else pa.string())
                for e in extensions if e}
    return None


def _tar_items(path: Path, prefix: Path) -> Iterator[Item]:
    """One item per sample, read from its first image or video member, the sample's other
    members as carried columns; a sample that cannot be read (no media member, a member cut
    off by the end of the file) or the damage that stopped the listing is an item with its
    `problem`, skipped when tokenized."""
    size = path.stat().st_size
    for sample in _samples(path):
        if isinstance(sample, _Damage):
            yield Item(f"{prefix.as_posix()}@{sample.offset}", str(path), "image", str(path),
                       problem=sample.reason)
            continue
        key, members = sample
        name = (prefix / key).as_posix()
        media = [m for m in members if media_kind("x." + _extension(m))]
        cut = [m for m in members if m.offset_data + m.size > size]
        if not media or cut:
            why = (f"{cut[0].name}: the shard ends inside this member" if cut else
                   f"{key}: no image or video member (members: "
                   f"{', '.join(m.name.rpartition('/')[2] for m in members)})")
            yield Item(name, f"{path}:{key}", "image", str(path), problem=f"{path}:{why}")
            continue
        carried: dict[str, Any] = {}
        for member in members:
            ext = _extension(member)
            if member in media or not ext or member.size > MAX_TEXT_BYTES:
                continue
            with open(path, "rb") as f:
                f.seek(member.offset_data)
                text = f.read(member.size).decode("utf-8", errors="replace").strip()
            if ext == "cls":
                try:
                    carried["label"] = int(text)
                except ValueError:
                    carried["label"] = None
            else:
                carried[ext] = text
        first = media[0]
        yield Item(name, f"{path}:{first.name}", media_kind("x." + _extension(first)),
                   str(path), first.offset_data, first.size, carried)


# -- manifests ---------------------------------------------------------------------------------
def _manifest_schema(path: Path):
    reader = _manifest_batches(path)
    try:
        first = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: an empty manifest") from None
    return first.schema


def _manifest_batches(path: Path):
    """The manifest's rows as pyarrow record batches, read a block at a time."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    try:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=4096)
        elif suffix == ".csv":
            yield from pcsv.open_csv(path)
        else:
            yield from pjson.open_json(path)
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: not a readable manifest ({err})") from None


def _path_column(path: Path, names: Sequence[str], asked: str | None) -> str:
    if asked is not None:
        if asked not in names:
            raise ValueError(f"{path}: no column {asked!r} (columns: {', '.join(names)})")
        return asked
    for name in PATH_COLUMNS:
        if name in names:
            return name
    raise ValueError(f"{path}: no path column ({' or '.join(PATH_COLUMNS)}); name it with "
                     f"--path-column (columns: {', '.join(names)})")


def _manifest_items(path: Path, path_column: str | None) -> Iterator[Item]:
    column = None
    for batch in _manifest_batches(path):
        column = column or _path_column(path, batch.schema.names, path_column)
        for row in batch.to_pylist():
            name = row.pop(column)
            if not isinstance(name, str) or not name:
                continue
            file = Path(name) if Path(name).is_absolute() else path.parent / name
            yield Item(name, str(file), media_kind(file) or "image", str(file),
                       columns=_plain(row))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Values that pickle and compare simply (pyarrow gives datetimes, Decimals and such for
    some types; those stay as they are, pyarrow converts them back)."""
    return {k: (json.loads(json.dumps(v)) if isinstance(v, (list, dict)) else v)
            for k, v in row.items()}


# -- reading ---------------------------------------------------------------------------------
def read_bytes(item: Item) -> bytes:
    """The bytes of a tar member."""
    if item.size > MAX_MEMBER_BYTES:
        raise ValueError(f"{item.source}: {item.size} bytes, over the limit of "
                         f"{MAX_MEMBER_BYTES} for one tar member; not read")
    try:
        with open(item.path, "rb") as f:
            f.seek(item.offset)
            data = f.read(item.size)
    except OSError as err:
        raise ValueError(f"{item.source}: cannot read the shard ({err})") from None
    if len(data) != item.size:
        raise ValueError(f"{item.source}: the shard ends inside this member")
    return data
