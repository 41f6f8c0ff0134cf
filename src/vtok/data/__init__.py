"""Data: reading images, the default photo set, datasets of random crops."""

from vtok.data.images import IMAGE_SUFFIXES, ImageReadError, find_images, read_image
from vtok.data.photos import photo_paths, prepare

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "find_images",
    "photo_paths",
    "prepare",
    "read_image",
]
