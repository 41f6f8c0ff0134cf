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
import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image

from vtok.data.photo_manifest import (
    dump,
    licence_of,
    licences,
    replace_entries,
    split_counts,
    split_of,
)
from vtok.data.photos import MANIFEST
from vtok.data.qrc import ResourceBundle

PACKAGE = "gcompris-qt-data"
RCC = "usr/share/gcompris-qt/rcc"
BUNDLES = {"explore_monuments": "", "erase": "", "explore_world_animals": "",
           "explore_farm_animals": "", "explore_world_music": "", "clickgame": "/sea"}
MIN_SIDE = 512


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
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the unpacked gcompris-qt-data package")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text())
    added = replace_entries(manifest, [PACKAGE], entries(args.root))
    MANIFEST.write_text(dump(manifest))
    print(f"{len(added)} gcompris photos: {split_counts(added)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
