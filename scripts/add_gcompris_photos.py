"""Add the real photographs kept in gcompris-qt-data's Qt resource bundles to the photo
manifest (src/vtok/data/photos.json), with their licences and splits.

    apt-get download gcompris-qt-data && dpkg -x gcompris-qt-data_*.deb ROOT
    python scripts/add_gcompris_photos.py ROOT

Reads the bundles that hold photographs (monuments, erase, farm and world animals, world music,
the sea backgrounds of clickgame; not the cartoons, paintings or planet renders of other
bundles), keeps the JPEG/PNG/WebP files whose short side is at least 512 pixels, looks each one's
licence up in the package's DEP-5 copyright file (the last matching Files stanza wins) and
assigns a split from its sha256: 7 in 10 train, 1 val, 2 test. Running it again replaces the
gcompris entries and keeps every other entry as it is.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image

from vtok.data.photos import MANIFEST
from vtok.data.qrc import ResourceBundle

PACKAGE = "gcompris-qt-data"
RCC = "usr/share/gcompris-qt/rcc"
BUNDLES = {"explore_monuments": "", "erase": "", "explore_world_animals": "",
           "explore_farm_animals": "", "explore_world_music": "", "clickgame": "/sea"}
MIN_SIDE = 512


def licences(copyright_text: str) -> list[tuple[list[str], str]]:
    """(file globs, licence) of every Files stanza, in order."""
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
    """The licence of the last stanza naming `path`; the package converted many JPEGs to WebP
    after its copyright file was written, so the file under its old suffixes counts too."""
    stem = str(Path(path).with_suffix(""))
    names = {path, *(stem + suffix for suffix in (".jpg", ".jpeg", ".png", ".JPG"))}
    found = "unknown"
    for globs, licence in stanzas:
        if any(fnmatch.fnmatchcase(name, g) for name in names for g in globs):
            found = licence
    return found


def split_of(sha256: str) -> str:
    bucket = int(sha256[:8], 16) % 10
    return "train" if bucket < 7 else "val" if bucket == 7 else "test"


def entries(root: Path) -> list[dict]:
    copyright_file = root / "usr/share/doc" / PACKAGE / "copyright"
    stanzas = licences(copyright_file.read_text())
    out = []
    for bundle, must_contain in BUNDLES.items():
        path = f"{RCC}/{bundle}.rcc"
        rcc = ResourceBundle.open(root / path)
        for member in rcc.names():
            if not member.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                continue
            if must_contain and must_contain not in member:
                continue
            data = rcc.read(member)
            with Image.open(io.BytesIO(data)) as im:
                size = list(im.size)
                if im.mode not in ("RGB", "RGBA", "P", "L") or min(size) < MIN_SIDE:
                    continue
            sha = hashlib.sha256(data).hexdigest()
            stem = Path(member).stem.replace(" ", "_")
            out.append({
                "name": f"gcompris-{bundle}-{stem}{Path(member).suffix.lower()}",
                "kind": "deb", "package": PACKAGE, "path": path, "member": member,
                "sha256": sha, "bytes": len(data), "size": size,
                "licence": licence_of(member.removeprefix("gcompris/"), stanzas),
                "split": split_of(sha),
            })
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise SystemExit("two photos would share a name")
    return out


def dump(manifest: dict) -> str:
    """The manifest as committed: one photo a line."""
    lines = [json.dumps(e) for e in manifest["photos"]]
    return ("{\n" f' "description": {json.dumps(manifest["description"])},\n' ' "photos": [\n  '
            + ",\n  ".join(lines) + "\n ]\n}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the unpacked gcompris-qt-data package")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text())
    kept = [e for e in manifest["photos"] if e["package"] != PACKAGE]
    added = entries(args.root)
    seen = {e["sha256"] for e in kept}
    added = [e for e in added if e["sha256"] not in seen]  # one photo, one entry
    manifest["photos"] = kept + added
    MANIFEST.write_text(dump(manifest))
    counts = {s: sum(e["split"] == s for e in added) for s in ("train", "val", "test")}
    print(f"{len(added)} gcompris photos: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
