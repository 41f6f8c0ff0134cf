"""The default clip set: real camera clips shipped inside pip wheels and Debian packages.

`clips.json` (committed, written by scripts/add_clips.py) lists each clip's name, source package
(and, for a wheel, its pinned version and module), path inside it, sha256, bytes, display size
[w, h], decoded frame count, average frame rate [num, den], licence (the most specific statement
its package makes) and split. Splits are by clip, never by frame: `train`; `val`, never trained
on, for choosing checkpoints and settings; `test`, never used to choose anything, for the numbers
reported. With so few clips the split was chosen by hand (the manifest's description says how).
`prepare()` (`vtok data prepare`) gathers them into the cache folder (`vtok.cache`) under
`clips/<split>/<name>`, fetching what is not installed (`vtok.data.sources`: a wheel with
`pip download`, a Debian package with `apt-get download`). Only `prepare` fetches: `clip_paths`
reads what is there and names the command when something is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vtok.cache import resolve_cache
from vtok.data.sources import SPLITS, PrepareReport, gather, prepared_paths
from vtok.data.video import VideoReadError, probe_video

MANIFEST = Path(__file__).with_name("clips.json")
__all__ = ["MANIFEST", "SPLITS", "clip_paths", "load_manifest", "prepare"]


def load_manifest(path: Path = MANIFEST) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["clips"]


def clip_paths(split: str, cache: str | Path | None = None) -> list[Path]:
    """Paths of the prepared clips of one split in `cache` (default: `vtok.cache`'s folder).

    Never fetches: MissingAssetError naming `vtok data prepare --clips` if any clip is missing.
    """
    return prepared_paths(load_manifest(), split, cache, "clips")


def prepare(cache: str | Path | None = None, manifest: list[dict[str, Any]] | None = None,
            progress: bool = False) -> PrepareReport:
    """Copy every manifest clip into the cache, checking its sha256 and that PyAV opens it and
    decodes its first frame (the sha256 already pins every byte).

    Good files are always kept; a bad or missing one is reported and skipped.
    """
    manifest = load_manifest() if manifest is None else manifest
    return gather(manifest, resolve_cache(cache), "clips", _video_problem, progress)


def _video_problem(path: Path) -> str | None:
    try:
        probe_video(path)
    except (VideoReadError, ImportError) as err:  # ImportError: PyAV is not installed
        return str(err)
    return None
