"""Helpers for the scripts that build the photo and clip manifests (`photos.json`, `clips.json`):
licences from a Debian copyright file, the split of a photo, the committed layout, and replacing
one source's entries.

Used by scripts/add_gcompris_photos.py, scripts/add_deb_photos.py and scripts/add_clips.py;
`vtok data prepare` never needs them.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from pathlib import Path

from vtok.data.sources import SPLITS


def licences(copyright_text: str) -> list[tuple[list[str], str]]:
    """(file globs, licence) of every Files stanza of a machine-readable (DEP-5) copyright file,
    in order."""
    stanzas, globs, reading = [], [], False
    for line in copyright_text.splitlines():
        if line.startswith("Files:"):
            globs, reading = line[len("Files:"):].split(), True
        elif reading and line[:1] in (" ", "\t") and not line.strip().startswith(("Copyright",)):
            globs += line.split()
        elif line.startswith("License:") and globs:
            stanzas.append((globs, line[len("License:"):].strip()))
            globs, reading = [], False
        else:
            reading = False
    return stanzas


def licence_of(path: str, stanzas: list[tuple[list[str], str]]) -> str:
    """The licence of the last stanza naming `path` ("unknown" if none does). The file under
    other image suffixes counts too (gcompris converted many JPEGs to WebP after its copyright
    file was written)."""
    stem = str(Path(path).with_suffix(""))
    names = {path, *(stem + suffix for suffix in (".jpg", ".jpeg", ".png", ".JPG"))}
    found = "unknown"
    for globs, licence in stanzas:
        if any(fnmatch.fnmatchcase(name, g) for name in names for g in globs):
            found = licence
    return found


def split_of(sha256: str) -> str:
    """A photo's split from its sha256: 7 in 10 train, 1 val, 2 test."""
    bucket = int(sha256[:8], 16) % 10
    return "train" if bucket < 7 else "val" if bucket == 7 else "test"


def replace_entries(manifest: dict, packages: Iterable[str], added: list[dict]) -> list[dict]:
    """Put `added` in place of every entry from `packages` (where the first of them stood, else
    at the end), keeping all other entries as they are; an added photo whose sha256 another
    entry already has is left out (one photo, one entry). Returns the entries added;
    ValueError, changing nothing, when two entries would share a name."""
    packages = set(packages)
    photos = manifest["photos"]
    at = next((i for i, e in enumerate(photos) if e["package"] in packages), len(photos))
    before = [e for e in photos[:at] if e["package"] not in packages]
    after = [e for e in photos[at:] if e["package"] not in packages]
    seen = {e["sha256"] for e in before + after}
    new = []
    for entry in added:
        if entry["sha256"] not in seen:
            seen.add(entry["sha256"])
            new.append(entry)
    names = [e["name"] for e in before + new + after]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"two photos would share a name: {', '.join(clashes)}")
    manifest["photos"] = before + new + after
    return new


def split_counts(entries: Iterable[dict]) -> dict[str, int]:
    entries = list(entries)
    return {s: sum(e["split"] == s for e in entries) for s in SPLITS}


def dump(manifest: dict, key: str = "photos") -> str:
    """The manifest as committed: its description, then one entry a line under `key` ("photos"
    or "clips")."""
    lines = [json.dumps(e) for e in manifest[key]]
    return ("{\n" f' "description": {json.dumps(manifest["description"])},\n' f' "{key}": [\n  '
            + ",\n  ".join(lines) + "\n ]\n}\n")
