import json

import numpy as np
import pytest
import torch
from PIL import Image

from vtok.cli import main
from vtok.codec import RawCoder, from_vtok, read_vtok
from vtok.codec.select import file_bpp, prefix
from vtok.data.images import read_image
from vtok.losses import LPIPS
from vtok.models import create_tokenizer, load


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    for name in ("test-conv2d", "test-titok"):
        torch.manual_seed(0)
        create_tokenizer(name).save_pretrained(root / name)
    return root


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 45, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 16, 4), dtype=np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    return tmp_path


def test_encode_decode_info_round_trip_with_a_bad_input(tokenizers, images, capsys):
    tok_dir = tokenizers / "test-conv2d"
    out = images / "out"
    paths = [str(images / n) for n in ("a.png", "bad.jpg", "b.png")]
    assert main(["encode", *paths, "-t", str(tok_dir), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg: not a readable image" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.vtok", "b.vtok"]
    tok = load(tok_dir)
    for name, size in (("a", (37, 45)), ("b", (20, 16))):
        (tokens,) = from_vtok(read_vtok(out / f"{name}.vtok"), RawCoder(16), tok.tokenizer_id)
        expected = tok.encode(read_image(images / f"{name}.png")[None])
        assert torch.equal(tokens.indices, expected.indices) and tokens.image_size == size
        assert main(["decode", str(out / f"{name}.vtok"), "-o", str(images / f"{name}-dec.png"),
                     "-t", str(tok_dir)]) == 0
        assert Image.open(images / f"{name}-dec.png").size == size[::-1]
    capsys.readouterr()
    assert main(["info", str(out / "b.vtok"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"][0]["alpha_composited_on_white"] is True
    assert info["tokenizer_id"] == tok.tokenizer_id and info["tokenizer"] is None
    assert info["bytes"] == (out / "b.vtok").stat().st_size


def test_one_file_for_several_images_and_no_overwrite_without_force(tokenizers, images, capsys):
    tok_dir = str(tokenizers / "test-conv2d")
    both = [str(images / "a.png"), str(images / "b.png")]
    target = images / "both.vtok"
    assert main(["encode", *both, "-t", tok_dir, "-o", str(target)]) == 0
    assert len(read_vtok(target).images) == 2
    before = target.read_bytes()
    assert main(["encode", both[0], "-t", tok_dir, "-o", str(target)]) == 1
    assert "exists (use --force" in capsys.readouterr().err
    assert target.read_bytes() == before
    assert main(["encode", both[0], "-t", tok_dir, "-o", str(target), "--force"]) == 0
    assert len(read_vtok(target).images) == 1
    assert main(["decode", str(target), "-o", str(images / "d"), "-t", tok_dir]) == 0
    assert main(["encode", *both, "-t", tok_dir, "-o", str(target), "--force"]) == 0
    assert main(["decode", str(target), "-o", str(images / "d"), "-t", tok_dir]) == 0
    assert [im.name for im in read_vtok(target).images] == ["a", "b"]
    assert sorted(p.name for p in (images / "d").iterdir()) == ["a.png", "b.png", "both.png"]
    assert main(["decode", str(target), "-o", str(images / "two.png"), "-t", tok_dir]) == 1
    assert "holds 2 images; give a folder" in capsys.readouterr().err


def test_encode_takes_folders_recursively_and_mirrors_them(tokenizers, images, capsys):
    import shutil

    tok_dir = str(tokenizers / "test-conv2d")
    tree = images / "tree"
    (tree / "x" / "y").mkdir(parents=True)
    shutil.copy(images / "a.png", tree / "a.png")
    shutil.copy(images / "b.png", tree / "x" / "y" / "a.png")  # same stem, another folder
    (tree / "notes.txt").write_text("not an image")
    assert main(["encode", str(tree), "-t", tok_dir, "-o", str(images / "out")]) == 0
    assert sorted(str(p.relative_to(images / "out")) for p in (images / "out").rglob("*.vtok")
                  ) == ["a.vtok", "x/y/a.vtok"]
    (images / "empty").mkdir()
    assert main(["encode", str(images / "empty"), "-t", tok_dir, "-o", str(images / "o2")]) == 2
    assert "empty: no images in this folder" in capsys.readouterr().err


def test_decoded_names_never_collide(tmp_path):
    import argparse

    from vtok.cli.decode_cmd import _outputs

    args = argparse.Namespace(out=tmp_path / "o", input=tmp_path / "in.vtok")
    outputs = _outputs(args, ["in-1", "", "A", "a", "b"])
    assert len({p.name.casefold() for p in outputs}) == 5
    assert [p.name for p in outputs[:3]] == ["in-1.png", "in-6.png", "A.png"]
    assert all(p.parent == tmp_path / "o" for p in outputs)


def test_image_names_are_made_valid():
    from vtok.codec.container import MAX_NAME, image_name

    assert image_name("holiday photo") == "holiday photo"
    assert image_name("a\\b\tc") == "a_b_c"
    assert image_name("..") == "_.."
    assert len(image_name("ü" * 300).encode()) <= MAX_NAME
    assert image_name("bad\udcff") == "bad_"
    assert image_name("C:evil") == "C_evil" and image_name("con") == "_con"
    assert image_name("a\u202eb\x85") == "a_b_"


def test_decode_refuses_another_tokenizer_and_corrupt_files(tokenizers, images, capsys):
    conv, titok = str(tokenizers / "test-conv2d"), str(tokenizers / "test-titok")
    assert main(["encode", str(images / "a.png"), "-t", conv, "-o", str(images / "a.vtok")]) == 0
    assert main(["decode", str(images / "a.vtok"), "-o", str(images / "x.png"), "-t", titok]) == 1
    err = capsys.readouterr().err
    assert load(conv).tokenizer_id in err and load(titok).tokenizer_id in err
    data = bytearray((images / "a.vtok").read_bytes())
    data[40] ^= 0x10
    (images / "c.vtok").write_bytes(bytes(data))
    assert main(["decode", str(images / "c.vtok"), "-o", str(images / "x.png")]) == 1
    assert "c.vtok: CRC32 mismatch" in capsys.readouterr().err
    assert main(["info", str(images / "c.vtok")]) == 1
    assert main(["decode", str(images / "a.vtok"), "-o", str(images / "x.png")]) == 1
    assert "no shipped tokenizer has id" in capsys.readouterr().err
    assert not (images / "x.png").exists()
    assert sorted(p.name for p in images.iterdir() if p.name.startswith(".")) == []


def test_token_counts_for_variable_length_tokenizers(tokenizers, images, capsys):
    titok, conv = tokenizers / "test-titok", str(tokenizers / "test-conv2d")
    tok = load(titok)
    image = str(images / "a.png")
    assert main(["encode", image, "-t", str(titok), "-o", str(images / "n.vtok"), "-n", "3"]) == 0
    assert read_vtok(images / "n.vtok").images[0].token_shape == (3,)
    assert main(["encode", image, "-t", conv, "-o", str(images / "m.vtok"), "-n", "3"]) == 2
    assert "fixed token count" in capsys.readouterr().err
    full = tok.encode(read_image(image)[None])
    coder = RawCoder(tok.codebook_size)
    target = file_bpp(prefix(full, 5), tok.codebook_size, coder) + 1e-9
    assert main(["encode", image, "-t", str(titok), "-o", str(images / "b.vtok"),
                 "--target-bpp", str(target)]) == 0
    kept = read_vtok(images / "b.vtok").images[0].num_tokens
    assert kept >= 5 and file_bpp(prefix(full, kept), tok.codebook_size, coder) <= target
    if kept < tok.max_tokens:
        assert file_bpp(prefix(full, kept + 1), tok.codebook_size, coder) > target
    x = read_image(image)[None]
    lpips = LPIPS("alex")
    one = lpips(tok.decode(prefix(full, 1)), x).item()
    target = one - 1e-4  # one token misses it: the search has to look further
    assert main(["encode", image, "-t", str(titok), "-o", str(images / "l.vtok"),
                 "--target-lpips", str(target)]) == 0
    kept = read_vtok(images / "l.vtok").images[0].num_tokens
    assert kept > 1
    reached = lpips(tok.decode(prefix(full, kept)), x).item()
    assert reached <= target or kept == tok.max_tokens
    assert main(["encode", image, "-t", str(titok), "-o", str(images / "z.vtok"),
                 "--target-bpp", "0"]) == 2
    capsys.readouterr()
    assert main(["encode", image, "-t", str(titok), "-o", str(images / "y.vtok"),
                 "--target-bpp", "0.00001"]) == 1
    assert "cannot meet --target-bpp 1e-05: the smallest file" in capsys.readouterr().err
    assert main(["encode", image, "-t", str(titok), "-o", str(images / "y.vtok"),
                 "--target-lpips", "0.0001"]) == 1
    assert "cannot meet --target-lpips 0.0001: all" in capsys.readouterr().err
    assert not (images / "y.vtok").exists()


def _rewrite(path, change):
    """Re-save a .vtok file after `change(vfile)` (a valid CRC, hostile content)."""
    vfile = read_vtok(path)
    change(vfile)
    path.write_bytes(vfile.to_bytes())


@pytest.mark.parametrize("change,message", [
    (lambda f: setattr(f.images[0], "token_shape", (4,)), "gives tokens of shape"),
    (lambda f: setattr(f.images[0], "image_size", (4000, 4000)), "gives tokens of shape"),
    (lambda f: setattr(f.images[0], "image_size", (5000, 5000)), "exceed the 16777216"),
    (lambda f: setattr(f, "codebook_size", 1 << 31), "codebook of 2147483648 codes"),
    (lambda f: setattr(f, "depth", 2), "2 indices per token"),
])
def test_decode_refuses_tokens_the_tokenizer_cannot_have_made(tokenizers, images, capsys,
                                                              change, message):
    conv = str(tokenizers / "test-conv2d")
    target = images / "a.vtok"
    assert main(["encode", str(images / "a.png"), "-t", conv, "-o", str(target)]) == 0
    _rewrite(target, change)
    capsys.readouterr()
    assert main(["decode", str(target), "-o", str(images / "x.png"), "-t", conv]) == 1
    assert message in capsys.readouterr().err
    assert not (images / "x.png").exists()


def test_decode_refuses_a_sequence_longer_than_the_tokenizer(tokenizers, images, capsys):
    titok = str(tokenizers / "test-titok")
    target = images / "t.vtok"
    assert main(["encode", str(images / "a.png"), "-t", titok, "-o", str(target)]) == 0
    _rewrite(target, lambda f: setattr(f.images[0], "token_shape", (9,)))
    capsys.readouterr()
    assert main(["decode", str(target), "-o", str(images / "x.png"), "-t", titok]) == 1
    assert "gives 1 to 8 tokens in a sequence, not (9,)" in capsys.readouterr().err


def test_encode_refuses_clashing_outputs_and_bad_requests(tokenizers, images, capsys):
    conv, titok = str(tokenizers / "test-conv2d"), str(tokenizers / "test-titok")
    (images / "sub").mkdir()
    (images / "sub" / "a.png").write_bytes((images / "a.png").read_bytes())
    clash = [str(images / "a.png"), str(images / "sub" / "a.png")]
    assert main(["encode", *clash, "-t", conv, "-o", str(images / "out")]) == 2
    assert "several inputs would write" in capsys.readouterr().err
    assert not (images / "out").exists()
    assert main(["encode", clash[0], "-t", titok, "-o", str(images / "n.vtok"), "-n", "9"]) == 2
    assert "--num-tokens must be in [1, 8], got 9" in capsys.readouterr().err
    assert main(["encode", clash[0], "-t", conv, "-o", str(images / "n.vtok"),
                 "--target-lpips", "0.2"]) == 2
    assert "--target-lpips needs a variable-length one" in capsys.readouterr().err


def _three_images(tokenizers, images):
    conv = str(tokenizers / "test-conv2d")
    target = images / "three.vtok"
    paths = [str(images / n) for n in ("a.png", "b.png", "a.png")]
    assert main(["encode", *paths, "-t", conv, "-o", str(target)]) == 0
    return conv, target


def test_decode_writes_the_images_before_a_bad_one_and_names_it(tokenizers, images, capsys):
    conv, target = _three_images(tokenizers, images)
    _rewrite(target, lambda f: setattr(f.images[1], "payload", b""))
    capsys.readouterr()
    assert main(["decode", str(target), "-o", str(images / "d"), "-t", conv]) == 1
    assert "three.vtok: image 1: " in capsys.readouterr().err
    assert sorted(p.name for p in (images / "d").iterdir()) == ["a.png"]


def test_decode_checks_every_output_and_the_limits_before_decoding(tokenizers, images, capsys,
                                                                    monkeypatch):
    from vtok.cli import decode_cmd

    conv, target = _three_images(tokenizers, images)
    (images / "d").mkdir()
    (images / "d" / "three-2.png").write_bytes(b"keep")
    assert main(["decode", str(target), "-o", str(images / "d"), "-t", conv]) == 1
    assert "three-2.png exists (use --force" in capsys.readouterr().err
    assert sorted(p.name for p in (images / "d").iterdir()) == ["three-2.png"]
    from vtok.codec import container

    monkeypatch.setattr(container, "MAX_IMAGES", 2)
    assert main(["decode", str(target), "-o", str(images / "e"), "-t", conv]) == 1
    assert "image count 3 does not fit" in capsys.readouterr().err
    monkeypatch.setattr(container, "MAX_IMAGES", 1024)
    monkeypatch.setattr(decode_cmd, "MAX_TOTAL_PIXELS", 37 * 45 * 2)
    assert main(["decode", str(target), "-o", str(images / "e"), "-t", conv]) == 1
    assert "pixels in all" in capsys.readouterr().err
    assert not (images / "e").exists()
    monkeypatch.setattr(decode_cmd, "MAX_TOTAL_PIXELS", 1 << 28)
    assert main(["decode", str(target), "-o", str(images / "d"), "-t", conv, "--force"]) == 0
    # stored names: a, b, then a again, which falls back to the file's stem and index
    assert sorted(p.name for p in (images / "d").iterdir()) == [
        "a.png", "b.png", "three-2.png"]
