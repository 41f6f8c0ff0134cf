"""Datasets of image crops from a folder, WebDataset-style tar shards, or the default photos.

Unreadable items are skipped with a warning naming the file, counted in `skipped`, and replaced
by the next readable item, so one bad file never stops a run.
"""

from __future__ import annotations

import tarfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vtok.data.images import IMAGE_SUFFIXES, ImageReadError, find_images, read_image

MAX_MEMBER_BYTES = 1 << 28  # a tar member is read into memory whole: 256 MiB at most


@dataclass(frozen=True)
class ImageItem:
    """One image: a display name and how to read it."""

    name: str
    read: Callable[[], torch.Tensor]


def tar_items(path: Path) -> list[ImageItem]:
    """The images inside one tar shard (WebDataset layout: `key.jpg`, `key.png`, ...)."""
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
    except (OSError, tarfile.TarError) as err:
        raise ImageReadError(f"{path}: not a readable tar shard ({err})") from None

    def reader(member: tarfile.TarInfo) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            name = f"{path}:{member.name}"
            if member.size > MAX_MEMBER_BYTES:
                raise ImageReadError(f"{name}: {member.size} bytes, over the limit of "
                                     f"{MAX_MEMBER_BYTES} for one tar member; not read")
            try:
                with open(path, "rb") as f:
                    f.seek(member.offset_data)
                    data = f.read(member.size)
            except OSError as err:
                raise ImageReadError(f"{name}: cannot read the shard ({err})") from None
            if len(data) != member.size:
                raise ImageReadError(f"{name}: the shard ends inside this member "
                                     f"({len(data)} of {member.size} bytes)")
            return read_image(data, name)  # the same reader as files: pixel limit, EXIF, alpha

        return read

    return [ImageItem(f"{path}:{m.name}", reader(m)) for m in members]


def image_items(source: str | Path | Sequence[str | Path]) -> list[ImageItem]:
    """Images from a folder (recursive), tar shards, image files, or a list of those."""
    if isinstance(source, (str, Path)):
        source = [source]
    items: list[ImageItem] = []
    for entry in source:
        path = Path(entry)
        if path.is_dir():
            items += [_file_item(p) for p in find_images(path)]
        elif path.suffix == ".tar":
            items += tar_items(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            items.append(_file_item(path))
        else:
            raise ImageReadError(f"{path}: not a folder, a .tar shard or an image file")
    if not items:
        raise ImageReadError(f"no images found in {', '.join(map(str, source))}")
    return items


def _file_item(path: Path) -> ImageItem:
    return ImageItem(str(path), lambda: read_image(path))


def fit_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale `[3, H, W]` so its short side is at least `size` (bicubic, clamped)."""
    h, w = image.shape[-2:]
    if min(h, w) >= size:
        return image
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    resized = F.interpolate(image[None], size=shape, mode="bicubic", align_corners=False)
    return resized[0].clamp(0, 1)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    image = fit_short_side(image, size)
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top : top + size, left : left + size]


@dataclass(frozen=True)
class CropBox:
    """A square crop of one image: top-left corner, side in pixels, and a horizontal flip."""

    index: int
    top: int
    left: int
    side: int
    flip: bool


class RandomCrops(Dataset):
    """Random `size`x`size` crops with random horizontal flips, indexed by any integer i >= 0.

    Item i is always the same crop of image i mod N for a given seed, so a training run that
    asks for items by global sample number sees exactly the same data after a resume. Decoded
    images are kept in memory as uint8 when `cache` is set (the default up to 2,000 images).
    `len()` is the number of images (one pass).
    """

    def __init__(self, items: Sequence[ImageItem], size: int, seed: int = 0, flip: bool = True,
                 cache: bool | None = None, min_scale: float = 1.0) -> None:
        if not items:
            raise ValueError("RandomCrops needs at least one image")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale!r}")
        self.items, self.size, self.seed, self.flip = list(items), size, seed, flip
        self.min_scale = min_scale  # crops may cover up to size/min_scale pixels, downscaled
        self.cache = len(self.items) <= 2000 if cache is None else cache
        self._decoded: dict[int, torch.Tensor] = {}
        self._on_device: dict[torch.device, dict[int, torch.Tensor]] = {}
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, index: int) -> torch.Tensor | None:
        """The image as float in [0, 1], or as uint8 when cached (converted after cropping)."""
        if index in self._decoded:
            return self._decoded[index]
        item = self.items[index]
        if item.name in self.skipped:
            return None
        try:
            image = fit_short_side(item.read(), self.size)
        except ImageReadError as err:
            self.skipped[item.name] = str(err)
            warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
            return None
        if self.cache:
            self._decoded[index] = (image * 255).round().to(torch.uint8)
            return self._decoded[index]
        return image

    def readable(self, i: int) -> tuple[int, torch.Tensor]:
        """Index and pixels of image i mod N, or of the next readable one."""
        n = len(self.items)
        for step in range(n):
            image = self._image((i + step) % n)
            if image is not None:
                return (i + step) % n, image
        raise ImageReadError(f"none of the {n} images could be read")

    def box(self, i: int, index: int, image: torch.Tensor) -> CropBox:
        """Where item i comes from, given the readable image (`index`, pixels) it falls on."""
        gen = torch.Generator().manual_seed(hash((self.seed, i)) & ((1 << 62) - 1))
        h, w = image.shape[-2:]
        scale = 1.0 - float(torch.rand((), generator=gen)) * (1.0 - self.min_scale)
        side = min(h, w, round(self.size / scale))
        top = int(torch.randint(h - side + 1, (1,), generator=gen))
        left = int(torch.randint(w - side + 1, (1,), generator=gen))
        flip = self.flip and bool(torch.rand((), generator=gen) < 0.5)
        return CropBox(index, top, left, side, flip)

    def cut(self, image: torch.Tensor, box: CropBox) -> torch.Tensor:
        """The crop `box` of `image` (uint8 or float, on any device) as float in [0, 1]."""
        crop = image[:, box.top : box.top + box.side, box.left : box.left + box.side]
        if crop.dtype == torch.uint8:
            crop = crop.float() / 255
        if box.side != self.size:
            crop = F.interpolate(crop[None], size=(self.size, self.size), mode="bilinear",
                                 antialias=True, align_corners=False)[0].clamp(0, 1)
        if box.flip:
            crop = crop.flip(-1)
        return crop.contiguous()

    def __getitem__(self, i: int) -> torch.Tensor:
        index, image = self.readable(i)
        return self.cut(image, self.box(i, index, image))

    def batch(self, first: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Items first .. first+count-1 stacked, cut on `device`.

        Equal to stacking the items one by one on the CPU. With the image cache on, each image
        is copied to `device` once and every later crop is cut and resized there.
        """
        device = torch.device(device)
        kept = self._on_device.setdefault(device, {})
        crops = []
        for i in range(first, first + count):
            index, image = self.readable(i)
            box = self.box(i, index, image)
            if not self.cache:
                crops.append(self.cut(image.to(device), box))
                continue
            if index not in kept:
                kept[index] = image.to(device)
            crops.append(self.cut(kept[index], box))
        return torch.stack(crops)
