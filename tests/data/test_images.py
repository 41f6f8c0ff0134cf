import numpy as np
import pytest
import torch
from PIL import Image

from vtok.data import ImageReadError, find_images, read_image


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.array([[0, 255], [51, 102]], dtype=np.uint8), "L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (3, 2, 2) and img.dtype == torch.float32
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert torch.equal(img[0], torch.tensor([[0, 255], [51, 102]]) / 255)


def test_alpha_is_composited_on_white(tmp_path):
    px = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(px, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # opaque red stays red
    assert img[:, 0, 1].tolist() == [1.0, 1.0, 1.0]  # transparent shows the white background
    assert img[:, 0, 2].sub(127 / 255).abs().max() < 0.01  # half black over white is mid grey


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 255, 0, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png", transparency=1)
    img = read_image(tmp_path / "p.png")
    assert img[:, 0, 0].tolist() == [0.0, 0.0, 1.0] and img[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_sixteen_bit_grey_keeps_its_range(tmp_path):
    px = np.array([[0, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(px).save(tmp_path / "d.png")
    img = read_image(tmp_path / "d.png")
    assert img[0, 0, 0] == 0 and img[0, 0, 1] == 1.0
    assert abs(img[0, 0, 2].item() - 0.5) < 1e-4


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = im.getexif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees
    im.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (3, 40, 20)


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable image"),
    (b"hello, I am text", "not a readable image"),
])
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"{path}: {message}"):
        read_image(path)


def test_truncated_png_names_the_file(tmp_path):
    Image.fromarray(np.random.randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=str(tmp_path / "t.png")):
        read_image(tmp_path / "t.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_find_images_recurses_and_filters(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["x.png", "a/y.JPG", "a/b/z.webp", "a/notes.txt", "a/b/w.jpeg"]:
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/b/w.jpeg", "a/b/z.webp", "a/y.JPG", "x.png"]
    with pytest.raises(ImageReadError, match="not a directory"):
        find_images(tmp_path / "x.png")
