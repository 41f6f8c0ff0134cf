"""The tokenizers shipped inside the package load, code and reconstruct a held-out photo."""

import pytest
import torch

import vtok
from vtok.data.datasets import center_crop
from vtok.data.images import read_image
from vtok.eval import psnr
from vtok.losses import LPIPS

SHIPPED = [p["name"] for p in vtok.list_pretrained()]


# floors well below what the benchmark measures on this photo, to catch broken weights
FLOORS = {"conv2d-f8": (17.0, 0.5), "titok-flex": (13.0, 0.8),  # PSNR above, LPIPS below
          "conv3d-f8t4": (17.0, 0.5)}


def test_the_shipped_tokenizers_are_listed():
    assert sorted(SHIPPED) == ["conv2d-f8", "conv3d-f8t4", "titok-flex"]
    entries = {p["name"]: p for p in vtok.list_pretrained()}
    assert entries["conv2d-f8"]["architecture"] == "conv2d"
    assert entries["conv2d-f8"]["max_tokens"] == 1024
    assert entries["conv2d-f8"]["tokens"] == "1024 per 256x256 image (x8 grid)"
    assert entries["titok-flex"]["architecture"] == "titok"
    assert entries["titok-flex"]["max_tokens"] == 128
    assert entries["titok-flex"]["tokens"] == "1..128 per image (variable length)"
    assert entries["conv3d-f8t4"]["architecture"] == "conv3d"
    assert entries["conv3d-f8t4"]["tokens"] == ("1024 per 256x256 image (x8 grid); clips: one "
                                                "grid for the first frame, then one per 4")


def test_shipped_weights_stay_small():
    from pathlib import Path

    total = sum(f.stat().st_size for e in vtok.list_pretrained()
                for f in Path(e["path"]).iterdir())
    assert total < 45e6  # the budget for every shipped tokenizer, video ones included


def test_the_variable_length_tokenizer_improves_with_every_token_count(val_photo):
    tok = vtok.load("titok-flex")
    scores = []
    for k in (1, 8, 32, 128):
        recon = tok.decode(tok.encode(val_photo, num_tokens=k))
        scores.append(psnr(val_photo, recon).item())
    assert scores == sorted(scores) and scores[-1] > scores[0] + 1.0, scores


@pytest.fixture(scope="module")
def val_photo():
    from skimage import data  # astronaut is in the val split of the default photos

    image = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float() / 255
    return center_crop(image, 256)[None]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tokenizer_reconstructs_a_held_out_photo(name, val_photo):
    tok = vtok.load(name)
    tokens = tok.encode(val_photo)
    recon = tok.decode(tokens)
    assert recon.shape == val_photo.shape
    assert psnr(val_photo, recon).item() > FLOORS[name][0]
    assert LPIPS("alex")(val_photo, recon).item() < FLOORS[name][1]
    assert tok.tokenizer_id == vtok.load(name).tokenizer_id  # stable across loads


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tokens_round_trip_through_a_vtok_file(name, val_photo, tmp_path):
    from vtok.codec import from_vtok, read_vtok, to_vtok, write_vtok
    from vtok.codec.tokens_file import has_prior, make_coder
    from vtok.models.presets import tokenizer_dir

    tok, directory = vtok.load(name), tokenizer_dir(name)
    assert has_prior(directory), f"{name} ships without its token prior"
    tokens = tok.encode(val_photo)
    sizes = {}
    for coding in ("raw", "entropy"):
        coder = make_coder(coding, tok, directory)
        path = tmp_path / f"{coding}.vtok"
        write_vtok(path, to_vtok([tokens], tok.codebook_size, coder))
        (back,) = from_vtok(read_vtok(path), coder, tok.tokenizer_id)
        assert torch.equal(back.indices, tokens.indices)
        sizes[coding] = path.stat().st_size
    bits = (tok.codebook_size - 1).bit_length()
    payload = -(-tokens.num_tokens * bits // 8)
    header = 37 + 19 + 4 * len(tokens.token_shape) + 4  # file header, unnamed still image, CRC
    assert sizes["raw"] == header + payload
    assert sizes["entropy"] < sizes["raw"]


def test_shipped_files_are_only_config_weights_and_notes():
    for entry in vtok.list_pretrained():
        from pathlib import Path

        names = sorted(p.name for p in Path(entry["path"]).iterdir())
        assert names == ["TRAINING.md", "config.json", "model.safetensors", "prior.json",
                         "prior.safetensors"]


def test_read_image_is_the_path_used_for_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 280), (10, 200, 30)).save(tmp_path / "g.png")
    tok = vtok.load(SHIPPED[0])
    x = read_image(tmp_path / "g.png")[None]
    assert tok.decode(tok.encode(x)).shape == (1, 3, 280, 300)


def test_a_bit_budget_picks_the_longest_prefix_that_fits(val_photo):
    from vtok.codec.select import file_bpp, prefix, tokens_for_bpp
    from vtok.codec.tokens_file import make_coder
    from vtok.models.presets import tokenizer_dir

    tok = vtok.load("titok-flex")
    coder = make_coder("entropy", tok, tokenizer_dir("titok-flex"))
    full = tok.encode(val_photo)
    for budget in (0.01, 0.015):
        chosen = tokens_for_bpp(tok, val_photo[0], budget, coder)
        k = chosen.num_tokens
        assert 1 < k < 128 and torch.equal(chosen.indices, full.indices[:, :k])
        assert file_bpp(chosen, tok.codebook_size, coder) <= budget
        assert file_bpp(prefix(full, k + 1), tok.codebook_size, coder) > budget


def test_encode_picks_the_smaller_coding_per_file_unless_told(val_photo, tmp_path):
    from PIL import Image

    from vtok.cli import main
    from vtok.codec import read_vtok

    src = tmp_path / "photo.png"
    Image.fromarray((val_photo[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(src)
    sizes, codings = {}, {}
    for k in (8, 128):
        for coding in ("raw", "entropy", None):
            out = tmp_path / f"{k}-{coding}.vtok"
            args = [str(src), "-t", "titok-flex", "-n", str(k), "-o", str(out)]
            assert main(["encode", *args, *(["--coding", coding] if coding else [])]) == 0
            sizes[k, coding] = out.stat().st_size
            codings[k, coding] = read_vtok(out).coding
        assert sizes[k, None] == min(sizes[k, "raw"], sizes[k, "entropy"])
    assert sizes[128, "entropy"] < sizes[128, "raw"]  # long sequences gain from the prior
    assert codings[128, None] == codings[128, "entropy"]


def test_load_or_build_takes_a_folder_a_shipped_name_or_a_preset():
    from vtok.models.presets import load_or_build, tokenizer_dir

    tok, directory = load_or_build("conv2d-f8")
    assert directory == tokenizer_dir("conv2d-f8") and tok.tokenizer_id == vtok.load(
        "conv2d-f8").tokenizer_id
    a, none = load_or_build("test-conv3d")
    b, _ = load_or_build("test-conv3d")
    assert none is None and a.tokenizer_id == b.tokenizer_id  # built with seed 0 each time
    with pytest.raises(ValueError, match="neither a tokenizer folder, a shipped tokenizer nor"):
        load_or_build("no-such-thing")
