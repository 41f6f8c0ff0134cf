"""Data: reading images and video, the default photo set, datasets of random crops."""

from vtok.data.images import IMAGE_SUFFIXES, ImageReadError, find_images, read_image
from vtok.data.photos import photo_paths, prepare
from vtok.data.video import (
    Clip,
    VideoInfo,
    VideoReadError,
    VideoReadWarning,
    probe_video,
    read_clip,
    read_frames,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Clip",
    "ImageReadError",
    "VideoInfo",
    "VideoReadError",
    "VideoReadWarning",
    "find_images",
    "photo_paths",
    "prepare",
    "probe_video",
    "read_clip",
    "read_frames",
    "read_image",
]
