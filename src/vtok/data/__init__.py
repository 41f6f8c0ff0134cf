"""Data: reading images and video, the default photo and clip sets, datasets of random crops
and clips, and token shards (`vtok tokenize`'s output, read by `TokenShards`)."""

from vtok.data.clips import clip_paths
from vtok.data.images import IMAGE_SUFFIXES, ImageReadError, find_images, read_image
from vtok.data.photos import photo_paths, prepare
from vtok.data.token_dataset import TokenShards
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
    "TokenShards",
    "VideoReadWarning",
    "clip_paths",
    "find_images",
    "photo_paths",
    "prepare",
    "probe_video",
    "read_clip",
    "read_frames",
    "read_image",
]
