"""Add the real photographs kept as plain files in Debian packages (wallpapers, templates, puzzle
pictures, forensics samples) to the photo manifest (src/vtok/data/photos.json), with their
licences and splits.

    for p in tuxpaint-data lomiri-wallpapers-16.04 ...; do   # every package in SOURCES
        apt-get download $p && dpkg -x ${p}_*.deb ROOT/$p
    done
    python scripts/add_deb_photos.py ROOT

SOURCES lists every file kept, chosen by opening each candidate: real photographs only (no
drawings, renders, abstract art, logos or textures), short side at least 512 pixels, and of a
photo shipped at several sizes only the largest. The licence is the most specific statement the
package makes about the file: a per-file note the package ships (KDE wallpaper metadata, a
palapeli puzzle's .desktop file), else a DEP-5 stanza naming the file or its folder, else a
note for its whole folder (lxqt's wallpapers/License), else the copyright file's catch-all; for
the two packages whose copyright file is not machine-readable, the statement quoted in
PLAIN_COPYRIGHT (checked to be there). The split comes from the sha256 (7 in 10 train, 1 val,
2 test). Running it again replaces these packages' entries and keeps every other entry as it
is; a photo whose sha256 another entry already has is left out.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import re
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

MIN_SIDE = 512

# package: (name tag, folder in the package, the same folder as the copyright file names it in
# the source tree, the photos below the folder)
SOURCES: dict[str, tuple[str, str, str, list[str]]] = {
    "tuxpaint-data": ("tux", "usr/share/tuxpaint/templates", "templates", [
        "burnt_bark.jpg", "cliff.jpg", "corn_maze.jpg", "jellyfish.jpg", "lighthouse.jpg",
        "mossy_log.jpg", "mudstone.jpg", "ocean_splash.jpg", "ocean_waves.jpg",
        "redwoods_above.jpg", "rocks.jpg", "sheep.jpg", "spiders_web.jpg",
        "sun_behind_clouds.jpg", "sun_behind_leaves.jpg",
    ]),
    "lomiri-wallpapers-16.04": ("lomiri", "usr/share/backgrounds", "16.04", [
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg",
        "aitzgorri_by_Aitzol_Berasategi.jpg", "analogpattern_by_Peter_Nerlich.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg",
    ]),
    "lomiri-wallpapers-20.04": ("lomiri", "usr/share/backgrounds", "20.04", [
        "Kleiber_by_Lukas_Baubkus.jpg",
    ]),
    "plasma-workspace-wallpapers": ("plasma", "usr/share/wallpapers", "", [
        f"{name}/contents/images/2560x1600.jpg" for name in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
            "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
    ]),
    "lxqt-themes": ("lxqt", "usr/share/lxqt/wallpapers", "wallpapers", [
        "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png",
        "beam.png", "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg",
        "this-is-not-windows.jpg",
    ]),
    "scribus-template": ("scribus", "usr/share/scribus/templates", "", [
        "br2/brightness.jpg", "br2/halfmoon.jpg", "br2/moon.jpg", "br2/nature.jpg",
        "br2/sunset.jpg", "cal2/moon.jpg", "menu2/pizza.jpg",
    ]),
    "forensics-samples-files": (
        "forensics", "usr/share/forensics-samples/original-files", "original-files", [
            "pic1/IMG-20191006-WA0002.jpg", "pic1/IMG_1054.JPG", "pic1/IMG_20200827_231612.jpg",
            "pic2/IMG_20191224_234846.jpg", "pic2/IMG_20200124_231153.jpg",
            "pic2/IMG_20200608_111614.jpg",
        ]),
    "palapeli-data": ("palapeli", "usr/share/palapeli/collection", "", [
        "castle-maintenon.jpg", "cincinnati-bridge.jpg", "citrus-fruits.jpg",
        "european-honey-bee.jpg", "panther-chameleon-female.jpg",
    ]),
    "digikam-data": ("digikam", "usr/share/digikam/about/images", "", ["body-background.jpg"]),
}

# Copyright files that are not machine-readable: the licence and the words that state it.
PLAIN_COPYRIGHT = {
    # "Simple brochure with a nightly theme (br2)", "Simple A4 portrait calendar (cal2)" and
    # "Simple A4 flyer/menu for a pizza house (menu2)" are among Riku Leino's templates
    "scribus-template": ("public-domain", "have been placed into public domain by their author"),
    "digikam-data": ("GPL-2+", "either version 2 of the License, or\n    (at your option) any "
                               "later version"),
}

# licence names in the packages' own notes, as Debian copyright files write them
LICENCE_NAMES = {"LGPLv3": "LGPL-3", "FDL": "GFDL", "GNU-FDL": "GFDL",
                 "Public Domain": "public-domain"}


def photo_name(tag: str, relative: str) -> str:
    """`tag-` and the path below the folder joined by '-', without a KDE wallpaper's
    `contents/images/WxH` tail: a plain file name."""
    path = Path(relative)
    parts = [p for p in path.with_suffix("").parts if p not in ("contents", "images")]
    if re.fullmatch(r"\d+x\d+", parts[-1]) and len(parts) > 1:
        parts = parts[:-1]
    return f"{tag}-{'-'.join(parts)}{path.suffix.lower()}".replace(" ", "_")


def file_note(package: str, file: Path) -> str | None:
    """The licence a package's own per-file metadata gives, if it has any."""
    if package == "plasma-workspace-wallpapers":  # WALLPAPER/contents/images/WxH.jpg
        meta = file.parents[2] / "metadata.json"
        if meta.exists():
            return json.loads(meta.read_text())["KPlugin"].get("License")
    if package == "palapeli-data":  # a puzzle's picture and its .desktop file side by side
        desktop = file.with_suffix(".desktop")
        if desktop.exists():
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            parser.optionxform = str
            parser.read_string(desktop.read_text())
            return parser["Desktop Entry"].get("X-KDE-PluginInfo-License")
    return None


def folder_note(package: str, folder: Path) -> str | None:
    """The licence a note for a whole folder gives (a Creative Commons licence URL)."""
    note = folder / "License"
    if package == "lxqt-themes" and note.exists():
        found = re.search(r"creativecommons\.org/licenses/([a-z-]+)/([\d.]+)", note.read_text())
        if found:
            return f"CC-{found.group(1).upper()}-{found.group(2)}"
    return None


def licence(unpacked: Path, package: str, source_path: str, file: Path, folder: Path) -> str:
    copyright_text = (unpacked / "usr/share/doc" / package / "copyright").read_text()
    note = file_note(package, file)
    if note:
        return LICENCE_NAMES.get(note, note)
    if package in PLAIN_COPYRIGHT:
        name, words = PLAIN_COPYRIGHT[package]
        if words not in copyright_text:
            raise SystemExit(f"{package}'s copyright file no longer says: {words!r}")
        return name
    stanzas = licences(copyright_text)
    specific = licence_of(source_path, [s for s in stanzas if s[0] != ["*"]])
    if specific != "unknown":
        return specific
    return folder_note(package, folder) or licence_of(source_path, stanzas)


def entries(root: Path) -> list[dict]:
    """Manifest entries for every photo in SOURCES; `root/PACKAGE` is each unpacked package."""
    out = []
    for package, (tag, folder, source_folder, files) in SOURCES.items():
        unpacked = root / package
        for relative in files:
            path = f"{folder}/{relative}"
            file = unpacked / path
            data = file.read_bytes()
            with Image.open(file) as im:
                size = list(im.size)
            if min(size) < MIN_SIDE:
                raise SystemExit(f"{file}: {size[0]}x{size[1]}, short side under {MIN_SIDE}")
            source_path = f"{source_folder}/{relative}" if source_folder else relative
            sha = hashlib.sha256(data).hexdigest()
            out.append({
                "name": photo_name(tag, relative), "kind": "deb", "package": package,
                "path": path, "sha256": sha, "bytes": len(data), "size": size,
                "licence": licence(unpacked, package, source_path, file,
                                   unpacked / folder),
                "split": split_of(sha),
            })
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path,
                        help="folder holding each package of SOURCES unpacked in ROOT/PACKAGE")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text())
    added = replace_entries(manifest, SOURCES, entries(args.root))
    MANIFEST.write_text(dump(manifest))
    for package in SOURCES:
        mine = [e for e in added if e["package"] == package]
        print(f"{package}: {len(mine)} photos {split_counts(mine)}")
    print(f"{len(added)} photos added: {split_counts(added)}; "
          f"manifest: {len(manifest['photos'])} {split_counts(manifest['photos'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
