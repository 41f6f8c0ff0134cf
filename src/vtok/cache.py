"""The cache folder: where `vtok data prepare` puts the default photos and the LPIPS weights.

Nothing in the library fetches anything: every function that reads the cache takes a `cache=`
folder (the command line: `--cache DIR`) and, when a file is missing, raises
`MissingAssetError` naming the folder and the command that fills it. The default folder is
the platform's user cache: `$XDG_CACHE_HOME/vtok` (else `~/.cache/vtok`) on Linux,
`~/Library/Caches/vtok` on macOS, `%LOCALAPPDATA%\\vtok` on Windows.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

APP = "vtok"


def default_cache_dir() -> Path:
    """The platform's user cache folder for vtok (standard library only)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP
    xdg = os.environ.get("XDG_CACHE_HOME")  # the XDG spec ignores a relative path
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / APP


def resolve_cache(cache: str | Path | None = None) -> Path:
    """`cache` as a Path, or the default folder when it is None."""
    return default_cache_dir() if cache is None else Path(cache).expanduser()


def prepare_command(cache: str | Path | None = None, only: str | None = None) -> str:
    """The command line that fills `cache` (`--cache` only when it is not the default)."""
    words = ["vtok", "data", "prepare"] + ([f"--{only}"] if only else [])
    folder = resolve_cache(cache)
    if folder != default_cache_dir():
        words += ["--cache", str(folder)]
    return shlex.join(words)


class MissingAssetError(FileNotFoundError):
    """A file that `vtok data prepare` fetches is not in the cache folder."""
