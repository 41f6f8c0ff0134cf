"""The tokenizers shipped inside the package load, code and reconstruct a held-out photo."""

import pytest
import torch

import vtok
from vtok.data.datasets import center_crop
from vtok.data.images import read_image
from vtok.eval import psnr
from vtok.losses import LPIPS

SHIPPED = [p["name"] for p in vtok.list_pretrained()]


def test_the_shipped_tokenizers_are_listed():
    assert "conv2d-f8" in SHIPPED
    entry = next(p for p in vtok.list_pretrained() if p["name"] == "conv2d-f8")
    assert entry["architecture"] == "conv2d"
    assert entry["max_tokens"] == 1024 and entry["tokens"] == "1024 per 256x256 image (x8 grid)"


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
    assert psnr(val_photo, recon).item() > 17
    assert LPIPS("alex")(val_photo, recon).item() < 0.5
    assert tok.tokenizer_id == vtok.load(name).tokenizer_id  # stable across loads


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tokens_round_trip_through_a_vtok_file(name, val_photo, tmp_path):
    from vtok.codec import RawCoder, from_vtok, read_vtok, to_vtok, write_vtok

    tok = vtok.load(name)
    tokens = tok.encode(val_photo)
    coder = RawCoder(tok.codebook_size)
    write_vtok(tmp_path / "x.vtok", to_vtok([tokens], tok.codebook_size, coder))
    (back,) = from_vtok(read_vtok(tmp_path / "x.vtok"), coder, tok.tokenizer_id)
    assert torch.equal(back.indices, tokens.indices)
    bits = (tok.codebook_size - 1).bit_length()
    payload = -(-tokens.num_tokens * bits // 8)
    header = 29 + 18 + 4 * len(tokens.token_shape) + 4  # file header, image entry, CRC
    assert (tmp_path / "x.vtok").stat().st_size == header + payload


def test_shipped_files_are_only_config_weights_and_notes():
    for entry in vtok.list_pretrained():
        from pathlib import Path

        names = sorted(p.name for p in Path(entry["path"]).iterdir())
        assert names == ["TRAINING.md", "config.json", "model.safetensors"]


def test_read_image_is_the_path_used_for_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 280), (10, 200, 30)).save(tmp_path / "g.png")
    tok = vtok.load(SHIPPED[0])
    x = read_image(tmp_path / "g.png")[None]
    assert tok.decode(tok.encode(x)).shape == (1, 3, 280, 300)
