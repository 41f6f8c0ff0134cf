import io
import re
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vtok.data import ImageReadError, find_images, read_image
from vtok.data.images import MAX_PIXELS, has_alpha, image_has_alpha, load_image, pil_to_tensor


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


# -- one alpha rule, every mode -----------------------------------------------------------------
def _palette(mode):
    im = Image.new(mode, (2, 1))
    im.putpalette([0, 0, 255, 0, 0, 0] + [0] * 762)
    return im


def _mode_image(kind):
    """(image, expected has-alpha, expected [3, 1, 2] pixels) for one kind of input."""
    white, black = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    if kind == "RGBA":
        im = Image.fromarray(np.array([[[255, 0, 0, 255], [9, 9, 9, 0]]], np.uint8), "RGBA")
        return im, True, [[1.0, 0.0, 0.0], white]
    if kind == "LA":
        im = Image.fromarray(np.array([[[0, 255], [100, 0]]], np.uint8), "LA")
        return im, True, [black, white]
    if kind == "La":  # premultiplied: grey 50 at alpha 128 over white is 50 + 255 - 128
        im = Image.new("La", (2, 1))
        im.putpixel((0, 0), (0, 255))
        im.putpixel((1, 0), (50, 128))
        return im, True, [black, [177 / 255] * 3]
    if kind == "RGBa":
        im = Image.new("RGBa", (2, 1))
        im.putpixel((0, 0), (255, 0, 0, 255))
        im.putpixel((1, 0), (100, 0, 50, 128))
        return im, True, [[1.0, 0.0, 0.0], [227 / 255, 127 / 255, 177 / 255]]
    if kind == "P+tRNS":
        im = _palette("P")
        im.putpixel((1, 0), 1)
        im.info["transparency"] = 1
        return im, True, [[0.0, 0.0, 1.0], white]
    if kind == "PA":
        im = _palette("PA")
        im.putpixel((0, 0), (0, 255))
        im.putpixel((1, 0), (1, 0))
        return im, True, [[0.0, 0.0, 1.0], white]
    if kind == "RGB+tRNS":
        im = Image.fromarray(np.array([[[1, 2, 3], [255, 0, 255]]], np.uint8), "RGB")
        im.info["transparency"] = (1, 2, 3)
        return im, True, [white, [1.0, 0.0, 1.0]]
    if kind == "L+tRNS":
        im = Image.fromarray(np.array([[7, 0]], np.uint8), "L")
        im.info["transparency"] = 7
        return im, True, [white, black]
    if kind == "I;16":
        return Image.fromarray(np.array([[0, 65535]], np.uint16)), False, [black, white]
    if kind == "I;16+tRNS":
        im = Image.fromarray(np.array([[300, 0]], np.uint16))
        im.info["transparency"] = 300
        return im, True, [white, black]
    if kind == "1":
        return Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1"), False, [black, white]
    if kind == "RGB":
        im = Image.fromarray(np.array([[[1, 2, 3], [255, 0, 255]]], np.uint8), "RGB")
        return im, False, [[1 / 255, 2 / 255, 3 / 255], [1.0, 0.0, 1.0]]
    assert kind == "L"
    return Image.fromarray(np.array([[7, 0]], np.uint8), "L"), False, [[7 / 255] * 3, black]


KINDS = ["RGBA", "LA", "La", "RGBa", "P+tRNS", "PA", "RGB+tRNS", "L+tRNS", "I;16", "I;16+tRNS",
         "1", "RGB", "L"]
SAVABLE = {"RGBA", "LA", "P+tRNS", "RGB+tRNS", "L+tRNS", "I;16", "I;16+tRNS", "1", "RGB", "L"}


@pytest.mark.parametrize("kind", KINDS)
def test_one_alpha_rule_decides_compositing_and_has_alpha(kind, tmp_path):
    im, alpha, pixels = _mode_image(kind)
    expected = torch.tensor(pixels).T[:, None, :]  # [3, 1, 2]
    assert image_has_alpha(im) is alpha
    got = pil_to_tensor(im)
    assert got.shape == (3, 1, 2) and torch.allclose(got, expected, atol=1e-6, rtol=0), got
    if kind not in SAVABLE:
        return
    path = tmp_path / "m.png"
    im.save(path, **({"transparency": im.info["transparency"]} if "tRNS" in kind else {}))
    decoded = load_image(path)
    assert decoded.alpha is alpha and has_alpha(path) is alpha and not decoded.animated
    assert torch.allclose(decoded.pixels, expected, atol=1e-6, rtol=0), decoded.pixels
    assert torch.equal(load_image(path.read_bytes(), "m").pixels, decoded.pixels)


def test_opaque_pixels_of_transparent_images_keep_their_exact_colour():
    px = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    px[..., 3] = 255
    rgba = pil_to_tensor(Image.fromarray(px, "RGBA"))
    assert torch.equal(rgba, pil_to_tensor(Image.fromarray(px[..., :3], "RGB")))


# -- decompression bombs: refused from the header ----------------------------------------------
def _png_header(width, height):
    """A PNG that declares `width` x `height` 8-bit grey pixels and holds no pixel data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 10000])  # under and over PIL's own warning limit
def test_a_bomb_is_refused_from_its_header_with_size_and_limit(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    message = (f"{path}: declares {side}x{side} = {side * side} pixels, over the limit of "
               f"{MAX_PIXELS} pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        with pytest.raises(ImageReadError, match=re.escape(message)):
            read_image(path)
        with pytest.raises(ImageReadError, match=re.escape(message.replace(str(path), "m.tar:b"))):
            read_image(path.read_bytes(), "m.tar:b")
        with pytest.raises(ImageReadError, match="MAX_PIXELS"):
            has_alpha(path)


def test_a_bomb_over_pils_hard_limit_is_an_image_read_error(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(15000, 15000))  # PIL itself raises DecompressionBombError
    with pytest.raises(ImageReadError, match=re.escape(
            f"{path}: declares 225000000 pixels, over the limit of {MAX_PIXELS}")):
        load_image(path)


def test_the_pixel_limit_can_be_lowered_per_call(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "s.png")
    assert read_image(tmp_path / "s.png", max_pixels=200).shape == (3, 10, 20)
    with pytest.raises(ImageReadError, match="20x10 = 200 pixels, over the limit of 199"):
        read_image(tmp_path / "s.png", max_pixels=199)


def test_formats_that_run_programs_are_not_opened(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(path)


# -- animated images: the first frame, flagged --------------------------------------------------
@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_animated_images_give_their_first_frame_and_say_so(tmp_path, suffix):
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    decoded = load_image(path)
    assert decoded.animated and decoded.pixels.shape == (3, 4, 6)
    assert torch.equal(decoded.pixels, torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 4, 6))
    with pytest.warns(UserWarning, match=re.escape(f"{path}: animated image; only its first "
                                                   "frame is coded")):
        read_image(path)
    frames[0].save(tmp_path / f"still{suffix}", lossless=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not load_image(tmp_path / f"still{suffix}").animated
        read_image(tmp_path / f"still{suffix}")


def test_exif_orientation_applies_to_bytes_too(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    assert read_image(buf.getvalue(), "r.jpg").shape == (3, 40, 20)
