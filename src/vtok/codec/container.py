"""The .vtok container: the tokens of one or more images (or clips), a header that says how
to read them, and a CRC32 over everything.

Layout (little-endian; version 2):

    magic            8 bytes   89 56 54 4F 4B 0D 0A 1A  ("\\x89VTOK\\r\\n\\x1a")
    version          u16       2
    coding           u8        0 = raw fixed-width bit packing, 1 = entropy coded with a prior
    flags            u8        0 (reserved)
    tokenizer id     8 bytes   the 16 hex digits of Tokenizer.tokenizer_id
    prior id         8 bytes   the 16 hex digits of IntegerPrior.prior_id; zeros when raw
    codebook size    u32       K; raw packing spends ceil(log2 K) bits per index
    indices/token    u8        1, or the depth of a multi-index (residual) quantizer
    image count      u32       1 .. MAX_IMAGES
    per image:
      height, width  u32, u32  the original size (the tokenizer pads, decode crops back)
      flags          u8        bit 0: an alpha channel was composited on white;
                               bit 1: frames and frame rate follow the name (a clip)
      name           u8 + bytes  UTF-8 name of the source (its file stem), at most 255 bytes,
                               no path separators or control characters; may be empty
      frames         u32       only with flag bit 1 (else 1: a still image)
      frame rate     u32, u32  only with flag bit 1: numerator, denominator (else 0/1)
      rank           u8        1 (sequence), 2 (grid) or 3 (frames x grid)
      token shape    u32 x rank
      tokens kept    u32       = product of the token shape
      payload size   u32
      payload        bytes
    crc32            u32       over every byte before it

Version 1 (read, never written) has no prior id, frames, frame rate or name, and ranks 1-2.
A reader checks the CRC first, then every field against what is left of the file, so a
truncated, flipped or hostile file raises `VtokFormatError` before anything large is allocated.
"""

from __future__ import annotations

import math
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

MAGIC = b"\x89VTOK\r\n\x1a"
VERSION = 2
READS = (1, 2)  # format versions this vtok reads
CODINGS = ("raw", "entropy")
MAX_SIDE = 1 << 16  # pixels per image side
MAX_TOKENS = 1 << 20  # tokens x indices per token, per image
MAX_DEPTH = 64  # indices per token
MAX_IMAGES = 1024  # images per file
MAX_FRAMES = 1 << 16  # frames per clip
MAX_NAME = 255  # bytes of an image's name
NO_PRIOR = "0" * 16
_HEAD_V1 = struct.Struct("<8sHBB8sIBI")
_HEAD = struct.Struct("<8sHBB8s8sIBI")
_IMAGE = struct.Struct("<IIBB")  # height, width, flags, then the rank (v1) or name length (v2)
_TIME = struct.Struct("<III")
_U8 = struct.Struct("<B")
MAX_FILE_BYTES = 1 << 30
_U32 = struct.Struct("<I")
FLAG_ALPHA = 1
FLAG_TIME = 2


class VtokFormatError(ValueError):
    """A .vtok file (or bytes) that cannot be read: says what is wrong and where."""


class Coder(Protocol):
    """Turns one image's indices (shaped like its tokens: `(k,)` or `(h, w)`, plus a trailing
    axis for multi-index quantizers) into a payload and back (raw packing or a learned prior).
    `decode` raises ValueError for a payload it cannot read. An entropy coder also has
    `prior_id`, which the file records."""

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
    name: str = ""
    frames: int = 1
    fps: tuple[int, int] = (0, 1)

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
    prior_id: str | None = None  # the entropy coder's prior; None when raw (or version 1)
    version: int = VERSION  # the format version it was read from

    def shape(self, image: ImageTokens) -> tuple[int, ...]:
        """Shape of one image's indices."""
        return image.token_shape + ((self.depth,) if self.depth > 1 else ())

    def to_bytes(self) -> bytes:
        """Version 2 bytes (whatever version the file was read from)."""
        _check_header(self.tokenizer_id, self.codebook_size, self.coding, self.depth,
                      len(self.images))
        prior = _prior_bytes(self.coding, self.prior_id)
        parts = [_HEAD.pack(MAGIC, VERSION, CODINGS.index(self.coding), 0,
                            bytes.fromhex(self.tokenizer_id), prior, self.codebook_size,
                            self.depth, len(self.images))]
        for image in self.images:
            h, w = image.image_size
            _check_image(h, w, image.token_shape, self.depth)
            name = _check_name(image.name)
            _check_time(image.frames, image.fps)
            timed = (image.frames, tuple(image.fps)) != (1, (0, 1))
            flags = (FLAG_ALPHA if image.alpha else 0) | (FLAG_TIME if timed else 0)
            parts += [_IMAGE.pack(h, w, flags, len(name)), name]
            if timed:
                parts.append(_TIME.pack(image.frames, *image.fps))
            parts.append(_U8.pack(len(image.token_shape)))
            parts += [_U32.pack(d) for d in image.token_shape]
            parts += [_U32.pack(image.num_tokens), _U32.pack(len(image.payload)), image.payload]
        body = b"".join(parts)
        return body + _U32.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> VtokFile:
        return _parse(memoryview(data))


def _prior_bytes(coding: str, prior_id: str | None) -> bytes:
    if coding == "raw":
        if prior_id not in (None, NO_PRIOR):
            raise ValueError("a raw-coded file has no prior id")
        return bytes(8)
    try:
        raw = bytes.fromhex(prior_id or "")
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 8 or raw == bytes(8):
        raise ValueError(f"an entropy-coded file needs its prior's id (16 hex digits, not all "
                         f"zero), got {prior_id!r}")
    return raw


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
    if not 1 <= count <= MAX_IMAGES:
        raise ValueError(f"a .vtok file holds 1 to {MAX_IMAGES} images, got {count}")


def _check_image(h: int, w: int, token_shape: tuple[int, ...], depth: int) -> None:
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"image size {w}x{h} is outside 1..{MAX_SIDE} pixels per side")
    if len(token_shape) not in (1, 2, 3) or min(token_shape) < 1:
        raise ValueError(f"token shape must be (k,), (h, w) or (t, h, w) of positive sizes, "
                         f"got {token_shape}")
    if math.prod(token_shape) * depth > MAX_TOKENS:
        raise ValueError(f"{math.prod(token_shape)} tokens x {depth} indices per image exceed "
                         f"{MAX_TOKENS}")


def _check_time(frames: int, fps: tuple[int, int]) -> None:
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frame count must be in [1, {MAX_FRAMES}], got {frames}")
    if len(fps) != 2 or not (0 <= fps[0] < 1 << 32 and 1 <= fps[1] < 1 << 32):
        raise ValueError(f"frame rate must be a fraction n/d with d >= 1, got {fps}")
    if frames > 1 and fps[0] == 0:
        raise ValueError(f"a clip of {frames} frames needs a frame rate above 0")


def _bad_char(ch: str) -> bool:
    """Path separators, characters Windows refuses in names, control and format characters
    (bidi overrides among them)."""
    return ch in '/\\:<>"|?*' or unicodedata.category(ch) in ("Cc", "Cf", "Cs")


def _reserved(name: str) -> bool:
    """'.', '..' and the device names Windows reserves (CON, NUL, COM1, ...)."""
    stem = name.split(".")[0].upper()
    return name in (".", "..") or stem in _WINDOWS_DEVICES


_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                    *(f"LPT{i}" for i in range(10))}


def image_name(text: str) -> str:
    """`text` (a file stem, say) made a valid image name: separators, characters Windows
    refuses and control characters become '_', reserved names get a '_' prefix, and it is cut
    to at most MAX_NAME bytes of UTF-8."""
    name = "".join("_" if _bad_char(ch) else ch for ch in text)
    if _reserved(name):
        name = "_" + name
    while len(name.encode("utf-8")) > MAX_NAME:
        name = name[:-1]
    return name


def _check_name(name: str) -> bytes:
    """The UTF-8 bytes of a valid image name (ValueError otherwise): a bare file stem."""
    if not isinstance(name, str):
        raise ValueError(f"image name must be a string, got {type(name).__name__}")
    data = name.encode("utf-8")
    if len(data) > MAX_NAME:
        raise ValueError(f"image name is {len(data)} bytes, more than {MAX_NAME}")
    if _reserved(name) or any(_bad_char(ch) for ch in name):
        raise ValueError(f"image name {name!r} is reserved or holds a path separator, a "
                         f"character Windows refuses or a control character")
    return data


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
    if len(data) < _HEAD_V1.size + _U32.size:
        raise VtokFormatError(f"truncated: {len(data)} bytes is shorter than the header")
    body, (stored,) = data[:-4], _U32.unpack(data[-4:])
    if zlib.crc32(body) != stored:
        raise VtokFormatError("CRC32 mismatch: the file is corrupt or truncated")
    r = _Reader(body)
    (version,) = struct.unpack("<H", body[8:10])
    if version not in READS:
        raise VtokFormatError(f"format version {version} is not supported (this vtok reads "
                              f"versions {', '.join(map(str, READS))})")
    if version == 1:
        _, _, coding, flags, tid, codebook, depth, count = r.unpack(_HEAD_V1, "header")
        prior = bytes(8)
    else:
        _, _, coding, flags, tid, prior, codebook, depth, count = r.unpack(_HEAD, "header")
        prior = bytes(prior)
    if coding >= len(CODINGS):
        raise VtokFormatError(f"unknown coding method {coding}")
    if flags:
        raise VtokFormatError(f"reserved header flags are set ({flags:#04x})")
    # the smallest entry: one token dimension, no name, an empty payload
    min_image = _IMAGE.size + (0 if version == 1 else _U8.size) + 3 * _U32.size
    if not 1 <= count <= min(MAX_IMAGES, (len(body) - r.pos) // min_image):
        raise VtokFormatError(f"image count {count} does not fit the {len(body)}-byte file "
                              f"(at most {MAX_IMAGES} images)")
    try:
        _check_header(bytes(tid).hex(), codebook, CODINGS[coding], depth, count)
        if version == 2:
            _prior_bytes(CODINGS[coding], prior.hex())
    except ValueError as err:
        raise VtokFormatError(str(err)) from None
    out = VtokFile(bytes(tid).hex(), codebook, CODINGS[coding], depth,
                   prior_id=None if prior == bytes(8) else prior.hex(), version=version)
    for i in range(count):
        out.images.append(_parse_image(r, i, version, depth))
    if r.pos != len(body):
        raise VtokFormatError(f"{len(body) - r.pos} unexpected bytes after the last image")
    return out


def _parse_image(r: _Reader, i: int, version: int, depth: int) -> ImageTokens:
    name, frames, fps = "", 1, (0, 1)
    if version == 1:
        h, w, image_flags, rank = r.unpack(_IMAGE, f"image {i} header")
        ranks = (1, 2)
    else:
        h, w, image_flags, size = r.unpack(_IMAGE, f"image {i} header")
        raw = bytes(r.take(size, f"image {i} name"))
        if image_flags & FLAG_TIME:
            frames, num, den = r.unpack(_TIME, f"image {i} frames")
            fps = (num, den)
        try:
            name = raw.decode("utf-8")
            _check_name(name)
            _check_time(frames, fps)
        except (UnicodeDecodeError, ValueError) as err:
            raise VtokFormatError(f"image {i}: {err}") from None
        (rank,) = r.unpack(_U8, f"image {i} token rank")
        ranks = (1, 2, 3)
    if image_flags & ~(FLAG_ALPHA | (FLAG_TIME if version == 2 else 0)):
        raise VtokFormatError(f"image {i}: unknown flags {image_flags:#04x}")
    if rank not in ranks:
        raise VtokFormatError(f"image {i}: token rank {rank} (expected "
                              f"{' or '.join(map(str, ranks))})")
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
    return ImageTokens((h, w), shape, payload, bool(image_flags & FLAG_ALPHA), name, frames, fps)


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
