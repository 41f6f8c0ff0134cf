import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vtok.cache import MissingAssetError
from vtok.cli import main
from vtok.data import photos, sources
from vtok.data.photo_manifest import dump, licence_of, licences, replace_entries, split_of
from vtok.data.photos import MANIFEST, SPLITS, load_manifest, photo_paths, prepare


def test_committed_manifest_is_well_formed():
    entries = load_manifest()
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)) >= 40
    assert {e["split"] for e in entries} == {"train", "val", "test"}
    assert sum(e["split"] == "val" for e in entries) >= 10
    assert sum(e["split"] == "test" for e in entries) >= 20
    assert len({e["sha256"] for e in entries}) == len(entries)  # no photo listed twice
    assert all(e["split"] in SPLITS for e in entries)
    by_split = [{e["sha256"] for e in entries if e["split"] == s} for s in SPLITS]
    assert sum(map(len, by_split)) == len(set().union(*by_split))  # no photo in two splits
    assert all(isinstance(e.get("licence"), str) and e["licence"].strip() for e in entries)
    assert all(e["name"] == Path(e["name"]).name and " " not in e["name"] for e in entries)
    bundled = [e for e in entries if "member" in e]
    assert len(bundled) >= 100 and all(e["licence"] and min(e["size"]) >= 512 for e in bundled)
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in entries)
    assert all(e["kind"] in ("pip", "deb") for e in entries)
    val = [e for e in entries if e["split"] == "val"]
    assert all(min(e["size"]) >= 256 for e in val)  # room for 256x256 centre crops


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fakephotos"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(pkg / "good.png")
    (pkg / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return pkg


def _entry(pkg, name, split="train", sha=None, module="fakephotos"):
    data = (pkg / name).read_bytes() if (pkg / name).exists() else b""
    return {"name": f"fake-{name}", "kind": "pip", "package": f"{module}-dist", "module": module,
            "path": name, "sha256": sha or hashlib.sha256(data).hexdigest(), "split": split}


def test_prepare_copies_good_files_and_reports_each_bad_one(tmp_path, fake_package):
    manifest = [
        _entry(fake_package, "good.png", "val"),
        _entry(fake_package, "corrupt.png"),
        {**_entry(fake_package, "good.png"), "name": "fake-wrong-sum.png", "sha256": "0" * 64},
        _entry(fake_package, "x.png", module="not_installed_pkg"),
    ]
    cache = tmp_path / "cache"
    report = prepare(cache, manifest)
    assert report.copied == ["fake-good.png"]
    assert (cache / "photos" / "val" / "fake-good.png").read_bytes() == (
        fake_package / "good.png").read_bytes()
    skipped = dict(report.skipped)
    assert "cannot decode image" in skipped["fake-corrupt.png"] or "not a readable" in skipped[
        "fake-corrupt.png"]
    assert "differs from the manifest" in skipped["fake-wrong-sum.png"]
    assert report.missing_sources == {
        "not_installed_pkg-dist": "install it with: pip install not_installed_pkg-dist"}
    assert not report.ok
    assert not list(cache.rglob("*.tmp*"))
    again = prepare(cache, manifest[:1])
    assert again.present == ["fake-good.png"] and again.ok


def test_missing_debian_tools_name_the_package_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    entry = {"name": "x.png", "kind": "deb", "package": "libjxl-testdata",
             "path": "usr/share/nowhere/x.png", "sha256": "0" * 64, "split": "train"}
    report = prepare(tmp_path, [entry])
    message = report.missing_sources["libjxl-testdata"]
    assert "apt-get download libjxl-testdata" in message and "dpkg -x" in message


def test_cli_prepare_exits_non_zero_when_something_is_missing(tmp_path, monkeypatch, capsys,
                                                              fake_package):
    manifest = [_entry(fake_package, "good.png"), _entry(fake_package, "x.png", module="nope_pkg")]
    monkeypatch.setattr(photos, "load_manifest", lambda path=None: manifest)
    assert main(["data", "prepare", "--photos", "--cache", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 copied" in out and "pip install nope_pkg-dist" in out


def test_photo_paths_never_fetch_and_name_the_command(tmp_path, no_fetching):
    with pytest.raises(MissingAssetError) as err:
        photo_paths("val", cache=tmp_path)
    message = str(err.value)
    assert f"default photos not found in {tmp_path / 'photos' / 'val'}" in message
    assert f"run `vtok data prepare --photos --cache {tmp_path}`" in message
    assert not list(tmp_path.iterdir())  # nothing fetched, nothing created


def test_photo_paths_reads_what_prepare_gathered(tmp_path, fake_package, monkeypatch,
                                                 no_fetching):
    manifest = [_entry(fake_package, "good.png", "val")]
    monkeypatch.setattr(photos, "load_manifest", lambda path=None: manifest)
    assert prepare(tmp_path, manifest).ok
    assert photo_paths("val", cache=tmp_path) == [tmp_path / "photos" / "val" / "fake-good.png"]
    assert photo_paths("train", cache=tmp_path) == []
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        photo_paths("holdout", cache=tmp_path)


@pytest.mark.slow
def test_prepare_the_real_default_set(tmp_path):
    report = prepare(tmp_path)
    assert report.ok, report.summary()
    assert len(list((tmp_path / "photos" / "val").iterdir())) >= 10


def test_photos_inside_a_resource_bundle_are_extracted_and_damage_is_reported(tmp_path):
    import io

    from tests.data.test_qrc import build

    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    photo = buf.getvalue()
    unpacked = tmp_path / "packages" / "fake-deb"  # as `prepare` leaves an unpacked package
    (unpacked / "rcc").mkdir(parents=True)
    (unpacked / ".complete").touch()
    (unpacked / "rcc" / "a.rcc").write_bytes(build({"img": {"p.png": photo}}, 2))
    (unpacked / "rcc" / "bad.rcc").write_bytes(b"qres" + bytes(40))
    entry = {"name": "bundled.png", "kind": "deb", "package": "fake-deb", "path": "rcc/a.rcc",
             "member": "img/p.png", "sha256": hashlib.sha256(photo).hexdigest(), "split": "test"}
    broken = {**entry, "name": "broken.png", "path": "rcc/bad.rcc"}
    report = prepare(tmp_path, [entry, broken])
    assert report.copied == ["bundled.png"]
    assert (tmp_path / "photos" / "test" / "bundled.png").read_bytes() == photo
    (name, why), = report.skipped
    assert name == "broken.png" and "bad.rcc: resource format version 0" in why


def test_the_committed_manifest_keeps_the_scripts_layout():
    text = MANIFEST.read_text()
    assert dump(json.loads(text)) == text  # one photo a line, as the add_*_photos scripts write


def test_licences_come_from_the_last_matching_copyright_stanza():
    stanzas = licences(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
        "Files: photos/*\n       extra/a.jpg\nCopyright: 2018 a photographer\n"
        "License: CC-BY-4.0\n\n"
        "Files: photos/b.png\nCopyright: another\nLicense: CC0-1.0\n\n"
        "License: GPL-2+\n text of the licence\n")
    assert stanzas == [(["*"], "GPL-2+"), (["photos/*", "extra/a.jpg"], "CC-BY-4.0"),
                       (["photos/b.png"], "CC0-1.0")]
    assert licence_of("photos/a.jpg", stanzas) == "CC-BY-4.0"
    assert licence_of("photos/b.webp", stanzas) == "CC0-1.0"  # listed under its old suffix
    assert licence_of("extra/a.jpg", stanzas) == "CC-BY-4.0"
    assert licence_of("other/c.jpg", stanzas) == "GPL-2+"
    assert licence_of("other/c.jpg", stanzas[1:]) == "unknown"


def test_splits_follow_the_sha256_seven_one_two():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    counts = {s: sum(split_of(h) == s for h in shas) for s in SPLITS}
    assert abs(counts["train"] / 2000 - 0.7) < 0.04 and abs(counts["val"] / 2000 - 0.1) < 0.03
    assert split_of("00000007" + "0" * 56) == "val" and split_of("0" * 64) == "train"


def test_replacing_one_sources_entries_keeps_the_others_and_each_photo_once():
    def entry(name, package, sha):
        return {"name": name, "package": package, "sha256": sha * 64, "split": "train"}

    manifest = {"description": "d", "photos": [entry("a", "p", "a"), entry("b", "q", "b"),
                                               entry("old", "q", "c"), entry("e", "r", "e")]}
    added = replace_entries(manifest, ["q"], [entry("b2", "q", "b"), entry("d", "q", "d"),
                                              entry("a2", "q", "a"), entry("d2", "q", "d")])
    assert [e["name"] for e in added] == ["b2", "d"]
    assert [e["name"] for e in manifest["photos"]] == ["a", "b2", "d", "e"]  # in their place
    replace_entries(manifest, ["s"], [entry("f", "s", "f")])
    assert [e["name"] for e in manifest["photos"]] == ["a", "b2", "d", "e", "f"]
    with pytest.raises(ValueError, match="two photos would share a name: e"):
        replace_entries(manifest, ["s"], [entry("e", "s", "g")])
    assert [e["name"] for e in manifest["photos"]] == ["a", "b2", "d", "e", "f"]  # unchanged
