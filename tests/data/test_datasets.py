import re
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from vtok.data import ImageReadError
from vtok.data.datasets import RandomCrops, center_crop, image_items


def _photo(path, w=50, h=40, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_crops_are_deterministic_per_seed_and_index(tmp_path):
    items = image_items([_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", seed=1)])
    data = RandomCrops(items, size=16, seed=3)
    again = RandomCrops(items, size=16, seed=3)
    assert len(data) == 2
    assert all(torch.equal(data[i], again[i]) for i in range(10))
    assert data[0].shape == (3, 16, 16)
    assert not torch.equal(data[0], data[2])  # same image, another crop
    other = RandomCrops(items, size=16, seed=4)
    assert not all(torch.equal(data[i], other[i]) for i in range(10))


def test_scale_augmentation_zooms_out_and_keeps_the_crop_size(tmp_path):
    items = image_items(_photo(tmp_path / "a.png", w=80, h=60))
    plain = RandomCrops(items, size=16, seed=1)
    zoomed = RandomCrops(items, size=16, seed=1, min_scale=0.25)
    crops = [zoomed[i] for i in range(6)]
    assert all(c.shape == (3, 16, 16) for c in crops)
    # a downscaled crop of noise is smoother than a plain crop of it
    rough = lambda c: (c[:, :, 1:] - c[:, :, :-1]).abs().mean()
    assert sum(map(rough, crops)) < sum(rough(plain[i]) for i in range(6))
    with pytest.raises(ValueError, match=r"min_scale must be in \(0, 1\], got 0"):
        RandomCrops(items, size=16, min_scale=0)


@pytest.mark.parametrize("cache", [True, False])
def test_a_batch_equals_its_items_stacked(tmp_path, cache):
    good = _photo(tmp_path / "a.png", w=70, h=50)
    _photo(tmp_path / "b.png", w=40, h=90, seed=1)
    (tmp_path / "c.png").write_bytes(b"broken")
    data = RandomCrops(image_items(tmp_path), size=16, seed=5, cache=cache, min_scale=0.4)
    with pytest.warns(UserWarning, match="c.png"):
        batch = data.batch(3, 7)
    assert batch.shape == (7, 3, 16, 16)
    assert torch.equal(batch, torch.stack([data[i] for i in range(3, 10)]))
    box = data.box(0, 0, data.readable(0)[1])
    assert box.index == 0 and 16 <= box.side <= 40 and str(good) not in data.skipped


def test_small_images_are_upscaled_to_the_crop_size(tmp_path):
    data = RandomCrops(image_items(_photo(tmp_path / "s.png", w=12, h=8)), size=32)
    assert data[0].shape == (3, 32, 32)
    assert data[0].min() >= 0 and data[0].max() <= 1


def test_unreadable_images_are_skipped_with_a_warning_and_counted(tmp_path):
    good = _photo(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    data = RandomCrops(image_items(tmp_path), size=8)
    with pytest.warns(UserWarning, match="bad.png"):
        crops = [data[i] for i in range(4)]
    assert all(c.shape == (3, 8, 8) for c in crops)
    assert list(data.skipped) == [str(tmp_path / "bad.png")]
    assert str(good) not in data.skipped


def test_all_images_unreadable_is_an_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"x")
    data = RandomCrops(image_items(tmp_path), size=8)
    with pytest.warns(UserWarning), pytest.raises(ImageReadError, match="none of the 1 images"):
        data[0]


def test_tar_shards_are_read_member_by_member(tmp_path):
    _photo(tmp_path / "000.png")
    _photo(tmp_path / "001.jpg", seed=2)
    (tmp_path / "000.txt").write_text("a caption")
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for name in ["000.png", "000.txt", "001.jpg"]:
            tar.add(tmp_path / name, arcname=name)
    items = image_items(tmp_path / "shard.tar")
    assert [i.name.split(":")[-1] for i in items] == ["000.png", "001.jpg"]
    assert items[0].read().shape == (3, 40, 50)


def test_unknown_sources_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageReadError, match="not a folder, a .tar shard or an image file"):
        image_items(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no images found"):
        image_items(tmp_path / "empty")


def test_center_crop():
    img = torch.arange(3 * 6 * 8, dtype=torch.float32).reshape(3, 6, 8) / 200
    crop = center_crop(img, 4)
    assert torch.equal(crop, img[:, 1:5, 2:6])


def test_tar_members_use_the_file_reader_and_its_pixel_limit(tmp_path):
    from tests.data.test_images import _png_header

    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :3, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "000.png")
    (tmp_path / "001.png").write_bytes(_png_header(10000, 10000))  # 100 MP declared, no pixels
    rotated = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "002.jpg", exif=exif)
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for name in ["000.png", "001.png", "002.jpg"]:
            tar.add(tmp_path / name, arcname=name)
    items = image_items(tmp_path / "shard.tar")
    white_right = torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 4, 6).clone()
    white_right[:, :, 3:] = 1.0
    assert torch.equal(items[0].read(), white_right)  # alpha composited on white, as for files
    assert items[2].read().shape == (3, 40, 20)  # EXIF orientation, as for files
    bomb = f"{tmp_path / 'shard.tar'}:001.png"
    with pytest.raises(ImageReadError, match=re.escape(
            f"{bomb}: declares 10000x10000 = 100000000 pixels, over the limit")):
        items[1].read()
    data = RandomCrops(items, size=4, cache=False)
    with pytest.warns(UserWarning, match=re.escape(bomb)):
        crop = data[1]  # the bomb is skipped; the next readable image stands in
    assert crop.shape == (3, 4, 4) and list(data.skipped) == [bomb]
