"""Reading image files into float RGB tensors: the one place where files become pixels.

Handles any size, EXIF orientation, grayscale, palette, alpha (composited on white), 16-bit and
CMYK inputs. Every failure raises `ImageReadError` naming the file and the problem.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_PIXELS = 1 << 28  # refuse absurd declared sizes (decompression bombs) with a clear error


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the problem."""


def read_image(path: str | Path) -> torch.Tensor:
    """Float `[3, H, W]` in [0, 1] from an image file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageReadError(f"{path}: {im.width}x{im.height} pixels is too large")
                im = ImageOps.exif_transpose(im)
                return pil_to_tensor(im)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err})") from None


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """Float `[3, H, W]` in [0, 1]; alpha is composited on white, grey is repeated."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG/TIFF
        grey = np.asarray(im, dtype=np.float32) / 65535.0
        return torch.from_numpy(np.clip(grey, 0, 1)).expand(3, -1, -1).contiguous()
    if im.mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        grey = grey / 255.0 if grey.max(initial=0) > 1 else grey
        return torch.from_numpy(np.clip(grey, 0, 1)).expand(3, -1, -1).contiguous()
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)


def has_alpha(path: str | Path) -> bool:
    """Whether the file carries transparency (reported by `vtok info`, composited on read)."""
    with Image.open(path) as im:
        return im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info


def find_images(root: str | Path) -> list[Path]:
    """All image files below `root` (recursive), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise ImageReadError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
