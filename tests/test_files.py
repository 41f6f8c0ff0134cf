import pytest

from vtok.files import atomic_write, atomic_write_text


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.png"
    path.write_text("old")

    def fail(tmp):
        assert tmp.suffix == ".png"  # writers that pick a format by suffix still work
        tmp.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_a_249_character_name_is_written_with_a_short_temp_name_in_the_same_folder(tmp_path):
    path = tmp_path / ("n" * 245 + ".png")
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"png bytes")

    atomic_write(path, write)
    assert path.read_bytes() == b"png bytes"
    assert seen[0].parent == tmp_path and seen[0].suffix == ".png"
    assert len(seen[0].name) < 40
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_suffix_too_long_for_any_temp_name_is_dropped_from_it(tmp_path):
    path = tmp_path / ("x." + "s" * 247)
    atomic_write_text(path, "text")
    assert path.read_text() == "text" and len(path.name) == 249


def test_encode_and_decode_with_249_character_file_names(tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image

    from vtok.cli import main
    from vtok.models import create_tokenizer

    torch.manual_seed(0)
    tok_dir = create_tokenizer("test-conv2d").save_pretrained(tmp_path / "tok")
    stem = "p" * 244
    image = tmp_path / f"{stem}.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 20, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["encode", str(image), "-t", str(tok_dir), "-o", str(out)]) == 0
    vtok_file = out / f"{stem}.vtok"
    assert len(vtok_file.name) == 249 and vtok_file.stat().st_size > 0
    shared = tmp_path / ("s" * 244 + ".vtok")
    assert main(["encode", str(image), "-t", str(tok_dir), "-o", str(shared)]) == 0
    decoded = tmp_path / ("d" * 245 + ".png")
    assert main(["decode", str(shared), "-t", str(tok_dir), "-o", str(decoded)]) == 0
    assert Image.open(decoded).size == (20, 24)
    assert main(["decode", str(vtok_file), "-t", str(tok_dir), "-o", str(tmp_path / "dec")]) == 0
    assert (tmp_path / "dec" / ("p" * 244 + ".png")).exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
