"""Writing files so that readers never see half of one (write a temp file, then rename), and
checksumming them."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def temp_name(path: Path) -> Path:
    """A short, unique temporary name in `path`'s folder, keeping its suffix.

    The name does not grow with `path`'s name (a 249-character file name must still leave room
    for it); the suffix is dropped only if even the short name with it would not fit.
    """
    stem = f".{os.getpid()}-{secrets.token_hex(4)}.tmp"
    suffix = path.suffix if len((stem + path.suffix).encode()) <= NAME_MAX else ""
    return path.with_name(stem + suffix)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary path next to `path`, then rename it into place.

    The temp name keeps the suffix (image writers pick the format from it); on any error the
    temp file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
