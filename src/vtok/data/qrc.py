"""A reader for Qt resource bundles (`.rcc` files, as `rcc --binary` writes them), so that the
photos some packages keep inside them can be used without Qt.

Layout (big-endian):

    magic            4 bytes   "qres"
    version          u32       1, 2 or 3
    tree offset      u32       the node table
    data offset      u32       file payloads
    names offset     u32       node names
    flags            u32       version 3 only
    node (14 bytes; 22 from version 2, which adds a u64 modification time at the end)
      name offset    u32       into the names: u16 length, u32 hash, UTF-16BE characters
      flags          u16       1 = zlib-compressed, 2 = directory, 4 = zstd-compressed
      directory:     u32 child count, u32 index of the first child node
      file:          u16 country, u16 language, u32 offset into the data
    file data        u32 size, then the bytes; zlib data starts with its own u32 length

Every offset and size is checked against the bundle before it is used; a bad bundle raises
`ResourceError` naming the file and what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

COMPRESSED, DIRECTORY, ZSTD = 1, 2, 4
MAX_ENTRY = 1 << 28  # bytes of one decompressed file
MAX_NODES = 1 << 20


class ResourceError(ValueError):
    """A resource bundle that cannot be read; says which file and what is wrong."""


class ResourceBundle:
    """The files of one `.rcc` bundle: `names()` lists their paths, `read(path)` their bytes."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data, self.source = data, source
        if len(data) < 20 or data[:4] != b"qres":
            self._fail("not a Qt resource bundle (no 'qres' magic)")
        self.version, self.tree, self.payloads, self.labels = struct.unpack(">IIII", data[4:20])
        if self.version not in (1, 2, 3):
            self._fail(f"resource format version {self.version} is not supported")
        self.node_size = 14 if self.version == 1 else 22
        for name, offset in (("tree", self.tree), ("data", self.payloads),
                             ("names", self.labels)):
            if not 0 < offset < len(data):
                self._fail(f"{name} offset {offset} lies outside the {len(data)}-byte file")
        self._files: dict[str, tuple[int, int]] = {}  # path -> (flags, data offset)
        self._walk(0, "", 0)

    @classmethod
    def open(cls, path: str | Path) -> ResourceBundle:
        path = Path(path)
        try:
            return cls(path.read_bytes(), str(path))
        except OSError as err:
            raise ResourceError(f"{path}: cannot read ({err.strerror or err})") from None

    def names(self) -> list[str]:
        """Paths of every file in the bundle ("images/cat.jpg"), sorted."""
        return sorted(self._files)

    def read(self, name: str) -> bytes:
        """The bytes of one file, decompressed."""
        if name not in self._files:
            self._fail(f"no file {name!r} in the bundle")
        flags, offset = self._files[name]
        (size,) = self._unpack(">I", self.payloads + offset, f"{name}: data size")
        start = self.payloads + offset + 4
        if size > len(self.data) - start:
            self._fail(f"{name}: {size} bytes of data run past the end of the file")
        raw = self.data[start : start + size]
        if flags & ZSTD:
            self._fail(f"{name}: zstd-compressed entries are not supported")
        if not flags & COMPRESSED:
            return raw
        if len(raw) < 4:
            self._fail(f"{name}: compressed data shorter than its length field")
        (length,) = struct.unpack(">I", raw[:4])
        if length > MAX_ENTRY:
            self._fail(f"{name}: declares {length} bytes, more than {MAX_ENTRY}")
        try:
            out = zlib.decompressobj().decompress(raw[4:], length + 1)
        except zlib.error as err:
            self._fail(f"{name}: corrupt compressed data ({err})")
        if len(out) != length:
            self._fail(f"{name}: decompressed to {len(out)} bytes, its header says {length}")
        return out

    def items(self) -> Iterator[tuple[str, bytes]]:
        for name in self.names():
            yield name, self.read(name)

    # -- the node tree -----------------------------------------------------------------------
    def _walk(self, index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            self._fail("directories nest more than 64 deep (a loop?)")
        name_offset, flags = self._unpack(">IH", self._node(index), f"node {index}")
        name = "" if index == 0 else self._name(name_offset)
        path = f"{prefix}/{name}" if prefix else name
        if flags & DIRECTORY:
            count, first = self._unpack(">II", self._node(index) + 6, f"node {index}")
            if count > MAX_NODES or first + count > MAX_NODES:
                self._fail(f"node {index}: {count} children from node {first} is too many")
            for child in range(first, first + count):
                if child <= index:
                    self._fail(f"node {index}: child {child} comes before it (a loop?)")
                self._walk(child, path, depth + 1)
        else:
            (offset,) = self._unpack(">I", self._node(index) + 10, f"node {index}")
            if len(self._files) >= MAX_NODES:
                self._fail(f"more than {MAX_NODES} files")
            self._files[path] = (flags, offset)

    def _node(self, index: int) -> int:
        start = self.tree + index * self.node_size
        if start + self.node_size > len(self.data):
            self._fail(f"node {index} lies outside the file")
        return start

    def _name(self, offset: int) -> str:
        (length,) = self._unpack(">H", self.labels + offset, "a name's length")
        start = self.labels + offset + 6  # the u16 length, then a u32 hash
        if start + 2 * length > len(self.data):
            self._fail(f"a name at offset {offset} runs past the end of the file")
        name = self.data[start : start + 2 * length].decode("utf-16-be", "replace")
        if not name or "/" in name or name in (".", ".."):
            self._fail(f"bad file name {name!r}")
        return name

    def _unpack(self, fmt: str, at: int, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.data):
            self._fail(f"{what} at offset {at} lies outside the {len(self.data)}-byte file")
        return struct.unpack(fmt, self.data[at : at + size])

    def _fail(self, problem: str):
        raise ResourceError(f"{self.source}: {problem}")
