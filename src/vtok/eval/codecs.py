"""Classic image codecs through Pillow, measured on real bytes: JPEG, WebP and AVIF."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, features

from vtok.eval.metrics import to_uint8

# codec -> (Pillow format, Pillow feature, extra save options); quality is given per call
CODECS = {
    "jpeg": ("JPEG", "jpg", {"subsampling": "4:2:0", "optimize": True}),
    "webp": ("WEBP", "webp", {"method": 6}),
    "avif": ("AVIF", "avif", {"speed": 4}),
}


def available(codec: str) -> bool:
    return codec in CODECS and bool(features.check(CODECS[codec][1]))


def to_pil(image: torch.Tensor) -> Image.Image:
    """`[3, H, W]` float in [0, 1] -> 8-bit RGB."""
    return Image.fromarray(to_uint8(image).permute(1, 2, 0).contiguous().numpy())


def from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def encode(image: torch.Tensor, codec: str, quality: int) -> bytes:
    """The file bytes of `image` in `codec` at `quality` (0-100, the codec's own scale)."""
    if not available(codec):
        raise ValueError(f"codec {codec!r} is not available in this Pillow build "
                         f"(known: {', '.join(CODECS)})")
    fmt, _, options = CODECS[codec]
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format=fmt, quality=quality, **options)
    return buffer.getvalue()


def decode(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        return from_pil(im)
