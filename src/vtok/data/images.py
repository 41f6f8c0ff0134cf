"""Reading images into float RGB tensors: the one place where files and bytes become pixels.

`load_image` reads a file or in-memory bytes (a tar shard's member) the same way:
- only the formats in `FORMATS` are opened (no plugin that runs external programs);
- the size declared in the header is checked against `MAX_PIXELS` before anything is decoded,
  so a small file that declares a huge canvas (a decompression bomb) costs no memory;
- EXIF orientation is applied;
- 16-bit grey keeps its range, grey and palette images become three equal/looked-up channels,
  1-bit images become black and white, CMYK is converted;
- transparency, as decided by `image_has_alpha`, is composited on white;
- an animated image (GIF, WebP, APNG) gives its first frame, flagged `animated`.
Every failure raises `ImageReadError` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Formats a reader opens, whatever the file's name says; others are "not a readable image".
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF")
# 2**26 = 67.1 megapixels: a 50 MP camera photo fits; a 10000x10000 canvas (100 MP, 1.2 GB as
# float RGB) is refused from its header. Also below PIL's own bomb limits, so ours speaks first.
MAX_PIXELS = 1 << 26

STRAIGHT_ALPHA_MODES = ("RGBA", "LA", "PA")
PREMULTIPLIED_MODES = ("RGBa", "La")  # colour already multiplied by alpha
GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(ValueError):
    """An image that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class DecodedImage:
    """pixels: float `[3, H, W]` in [0, 1]. alpha: the image had transparency (composited on
    white). animated: the image has several frames and only the first was read."""

    pixels: torch.Tensor
    alpha: bool
    animated: bool


def load_image(source: str | Path | bytes, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read an image file (a path) or its bytes; `name` names it in errors (default: the path)."""
    name = _name(source, name)
    try:
        with warnings.catch_warnings():
            # the MAX_PIXELS check decides; PIL's own bomb warning must not leak out
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open_checked(source, name, max_pixels) as im:
                animated = bool(getattr(im, "is_animated", False))
                if animated:
                    im.seek(0)
                im = ImageOps.exif_transpose(im)
                return DecodedImage(pil_to_tensor(im), image_has_alpha(im), animated)
    except ImageReadError:
        raise
    except Exception as err:  # a decoder may fail in many ways on a damaged file; name it
        raise ImageReadError(f"{name}: cannot decode image ({type(err).__name__}: {err})") from None


def read_image(source: str | Path | bytes, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Float `[3, H, W]` in [0, 1] from an image file or its bytes (see `load_image`).

    Warns, naming the file, when the image is animated: only its first frame is read.
    """
    image = load_image(source, name, max_pixels)
    if image.animated:
        warnings.warn(f"{_name(source, name)}: animated image; only its first frame is coded",
                      stacklevel=2)
    return image.pixels


def _name(source: str | Path | bytes, name: str | None) -> str:
    return name or ("<bytes>" if isinstance(source, bytes) else str(source))


def image_has_alpha(im: Image.Image) -> bool:
    """The one alpha rule: an alpha band (straight or premultiplied) or a transparent colour
    or palette entry (PNG tRNS, GIF transparency) makes an image transparent."""
    return im.mode in STRAIGHT_ALPHA_MODES + PREMULTIPLIED_MODES or (
        im.info.get("transparency") is not None)


def has_alpha(source: str | Path | bytes, name: str | None = None) -> bool:
    """Whether the image carries transparency (composited on white when read); it is decoded
    exactly as `load_image` does, so the two always agree."""
    return load_image(source, name).alpha


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """Float `[3, H, W]` in [0, 1]; transparency (`image_has_alpha`) is composited on white."""
    if im.mode in GREY16_MODES or im.mode == "F":
        return _grey_high_depth(im)
    if not image_has_alpha(im):
        return _to_float(np.asarray(im.convert("RGB"), dtype=np.uint8))
    if im.mode == "La":  # PIL converts La to nothing else: take its bands as they are
        rgba = np.asarray(im, dtype=np.uint8)[..., [0, 0, 0, 1]]
    elif im.mode == "RGBa":
        rgba = np.asarray(im, dtype=np.uint8)
    else:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    return _composite(_to_float(rgba[..., :3]), _to_float(rgba[..., 3:]),
                      premultiplied=im.mode in PREMULTIPLIED_MODES)


def _grey_high_depth(im: Image.Image) -> torch.Tensor:
    values = np.asarray(im).astype(np.float32)
    if im.mode == "F":
        grey = values / 255.0 if values.max(initial=0) > 1 else values
    else:
        grey = values / 65535.0
    grey = torch.from_numpy(np.clip(grey, 0, 1)).expand(3, -1, -1).contiguous()
    key = im.info.get("transparency")
    if isinstance(key, int) and im.mode != "F":  # one transparent grey value (PNG tRNS)
        alpha = torch.from_numpy(np.asarray(im) != key).float()[None]
        return _composite(grey, alpha, premultiplied=False)
    return grey


def _to_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 `[H, W, C]` -> float `[C, H, W]` in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def _composite(rgb: torch.Tensor, alpha: torch.Tensor, premultiplied: bool) -> torch.Tensor:
    """Over a white background; opaque pixels keep their colour exactly."""
    colour = rgb if premultiplied else rgb * alpha
    return (colour + (1 - alpha)).clamp_(0, 1)


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def _open_checked(source: str | Path | bytes, name: str, max_pixels: int) -> Image.Image:
    """`source` opened with only its header read, its declared size checked."""
    Image.init()
    formats = [f for f in FORMATS if f in Image.OPEN]
    try:
        im = Image.open(BytesIO(source) if isinstance(source, bytes) else source, formats=formats)
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not a readable image (unknown or corrupt format; "
                             f"read are {', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as err:  # over PIL's hard limit, so over ours too
        found = _BOMB_SIZE.search(str(err))
        size = f"{found.group(1)} pixels" if found else "a size"
        raise ImageReadError(f"{name}: declares {size}, over the limit of {max_pixels} pixels "
                             f"(MAX_PIXELS); not decoded") from None
    except OSError as err:
        raise ImageReadError(f"{name}: cannot open ({err})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageReadError(f"{name}: declares {w}x{h} = {w * h} pixels, over the limit of "
                             f"{max_pixels} pixels (MAX_PIXELS); not decoded")
    return im


def find_images(root: str | Path) -> list[Path]:
    """All image files below `root` (recursive), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise ImageReadError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
