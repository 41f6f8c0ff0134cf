"""The .vtok container: the tokens of one or more images, a header that says how to read them,
and a CRC32 over everything.

Layout (little-endian; version 1):

    magic            8 bytes   89 56 54 4F 4B 0D 0A 1A  ("\\x89VTOK\\r\\n\\x1a")
    version          u16       1
    coding           u8        0 = raw fixed-width bit packing, 1 = entropy coded with a prior
    flags            u8        0 (reserved)
    tokenizer id     8 bytes   the 16 hex digits of Tokenizer.tokenizer_id
    codebook size    u32       K; raw packing spends ceil(log2 K) bits per index
    indices/token    u8        1, or the depth of a multi-index (residual) quantizer
    image count      u32
    per image:
      height, width  u32, u32  the original image size (the tokenizer pads, decode crops back)
      flags          u8        bit 0: an alpha channel was composited on white
      rank           u8        1 (sequence) or 2 (grid)
      token shape    u32 x rank
      tokens kept    u32       = product of the token shape
      payload size   u32
      payload        bytes
    crc32            u32       over every byte before it

A reader checks the CRC first, then every field against what is left of the file, so a
truncated, flipped or hostile file raises `VtokFormatError` before anything large is allocated.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

MAGIC = b"\x89VTOK\r\n\x1a"
VERSION = 1
CODINGS = ("raw", "entropy")
MAX_SIDE = 1 << 16  # pixels per image side
MAX_TOKENS = 1 << 20  # tokens x indices per token, per image
MAX_DEPTH = 64  # indices per token
MAX_FILE_BYTES = 1 << 30
_HEAD = struct.Struct("<8sHBB8sIBI")
_IMAGE = struct.Struct("<IIBB")
_U32 = struct.Struct("<I")
FLAG_ALPHA = 1


class VtokFormatError(ValueError):
    """A .vtok file (or bytes) that cannot be read: says what is wrong and where."""


class Coder(Protocol):
    """Turns one image's indices (shaped like its tokens: `(k,)` or `(h, w)`, plus a trailing
    axis for multi-index quantizers) into a payload and back (raw packing or a learned prior).
    `decode` raises ValueError for a payload it cannot read."""

    name: str

    def encode(self, indices: np.ndarray) -> bytes: ...

    def decode(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray: ...


@dataclass
class ImageTokens:
    """One image's entry: its token payload (coded) and what is needed to decode it."""

    image_size: tuple[int, int]
    token_shape: tuple[int, ...]
    payload: bytes
    alpha: bool = False

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_shape)


@dataclass
class VtokFile:
    tokenizer_id: str
    codebook_size: int
    coding: str = "raw"
    depth: int = 1  # indices per token
    images: list[ImageTokens] = field(default_factory=list)

    def shape(self, image: ImageTokens) -> tuple[int, ...]:
        """Shape of one image's indices."""
        return image.token_shape + ((self.depth,) if self.depth > 1 else ())

    def to_bytes(self) -> bytes:
        _check_header(self.tokenizer_id, self.codebook_size, self.coding, self.depth,
                      len(self.images))
        parts = [_HEAD.pack(MAGIC, VERSION, CODINGS.index(self.coding), 0,
                            bytes.fromhex(self.tokenizer_id), self.codebook_size, self.depth,
                            len(self.images))]
        for image in self.images:
            h, w = image.image_size
            _check_image(h, w, image.token_shape, self.depth)
            parts.append(_IMAGE.pack(h, w, FLAG_ALPHA if image.alpha else 0,
                                     len(image.token_shape)))
            parts += [_U32.pack(d) for d in image.token_shape]
            parts += [_U32.pack(image.num_tokens), _U32.pack(len(image.payload)), image.payload]
        body = b"".join(parts)
        return body + _U32.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> VtokFile:
        return _parse(memoryview(data))


def _check_header(tokenizer_id: str, codebook_size: int, coding: str, depth: int,
                  count: int) -> None:
    try:
        ok = len(bytes.fromhex(tokenizer_id)) == 8
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"tokenizer id must be 16 hex digits, got {tokenizer_id!r}")
    if not 1 <= codebook_size < 1 << 32:
        raise ValueError(f"codebook size must be in [1, 2**32), got {codebook_size}")
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"indices per token must be in [1, {MAX_DEPTH}], got {depth}")
    if count < 1:
        raise ValueError("a .vtok file holds at least one image")


def _check_image(h: int, w: int, token_shape: tuple[int, ...], depth: int) -> None:
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"image size {w}x{h} is outside 1..{MAX_SIDE} pixels per side")
    if len(token_shape) not in (1, 2) or min(token_shape) < 1:
        raise ValueError(f"token shape must be (k,) or (h, w) of positive sizes, "
                         f"got {token_shape}")
    if math.prod(token_shape) * depth > MAX_TOKENS:
        raise ValueError(f"{math.prod(token_shape)} tokens x {depth} indices per image exceed "
                         f"{MAX_TOKENS}")


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int, what: str) -> memoryview:
        if size > len(self.data) - self.pos:
            raise VtokFormatError(f"truncated: {what} needs {size} bytes at offset {self.pos}, "
                                  f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))


def _parse(data: memoryview) -> VtokFile:
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise VtokFormatError("not a .vtok file (the magic bytes are missing)")
    if len(data) < _HEAD.size + _U32.size:
        raise VtokFormatError(f"truncated: {len(data)} bytes is shorter than the header")
    body, (stored,) = data[:-4], _U32.unpack(data[-4:])
    if zlib.crc32(body) != stored:
        raise VtokFormatError("CRC32 mismatch: the file is corrupt or truncated")
    r = _Reader(body)
    _, version, coding, flags, tid, codebook, depth, count = r.unpack(_HEAD, "header")
    if version != VERSION:
        raise VtokFormatError(f"format version {version} is not supported (this vtok reads "
                              f"version {VERSION})")
    if coding >= len(CODINGS):
        raise VtokFormatError(f"unknown coding method {coding}")
    if flags:
        raise VtokFormatError(f"reserved header flags are set ({flags:#04x})")
    min_image = _IMAGE.size + 3 * _U32.size
    if not 1 <= count <= (len(body) - r.pos) // min_image:
        raise VtokFormatError(f"image count {count} does not fit the {len(body)}-byte file")
    try:
        _check_header(bytes(tid).hex(), codebook, CODINGS[coding], depth, count)
    except ValueError as err:
        raise VtokFormatError(str(err)) from None
    out = VtokFile(bytes(tid).hex(), codebook, CODINGS[coding], depth)
    for i in range(count):
        h, w, image_flags, rank = r.unpack(_IMAGE, f"image {i} header")
        if image_flags & ~FLAG_ALPHA:
            raise VtokFormatError(f"image {i}: unknown flags {image_flags:#04x}")
        if rank not in (1, 2):
            raise VtokFormatError(f"image {i}: token rank {rank} (expected 1 or 2)")
        shape = tuple(r.unpack(_U32, f"image {i} token shape")[0] for _ in range(rank))
        try:
            _check_image(h, w, shape, depth)
        except ValueError as err:
            raise VtokFormatError(f"image {i}: {err}") from None
        (kept,) = r.unpack(_U32, f"image {i} token count")
        if kept != math.prod(shape):
            raise VtokFormatError(f"image {i}: {kept} tokens kept but the token shape "
                                  f"{shape} holds {math.prod(shape)}")
        (size,) = r.unpack(_U32, f"image {i} payload size")
        payload = bytes(r.take(size, f"image {i} payload"))
        out.images.append(ImageTokens((h, w), shape, payload, bool(image_flags & FLAG_ALPHA)))
    if r.pos != len(body):
        raise VtokFormatError(f"{len(body) - r.pos} unexpected bytes after the last image")
    return out


def read_vtok(path: str | Path) -> VtokFile:
    """Read and check a .vtok file; every problem is a VtokFormatError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise VtokFormatError(f"{size} bytes is larger than a .vtok file may be")
        if size == 0:
            raise VtokFormatError("the file is empty")
        return VtokFile.from_bytes(path.read_bytes())
    except VtokFormatError as err:
        raise VtokFormatError(f"{path}: {err}") from None
    except OSError as err:
        raise VtokFormatError(f"{path}: cannot read ({err.strerror or err})") from None
