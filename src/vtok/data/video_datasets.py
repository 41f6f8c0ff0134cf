"""Datasets of random clips from a folder of videos, with images mixed in.

A clip is `frames` frames of one video, every `stride`-th from a random start, cut with one
random square crop box (the same for every frame) and flipped left-right as a whole or not.
Only the frames a clip needs are decoded (from the keyframe before its start), and each is
cropped as it arrives, so a long or large video never sits whole in memory.
An image is a 1-frame clip: images are used when `frames == 1` (joint image and video training
feeds them as their own batches) and left out, with a warning, when a clip has more frames; a
still repeated T times would teach a video model that nothing moves.
Unreadable videos (and images) are skipped with a warning naming the file, counted in
`skipped`, and replaced by the next readable source, as `RandomCrops` does. A video is checked
once, when first used: its header, first frame, and its last second, so a truncated file is
skipped whichever item meets it first and item i stays the same clip after a resume.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vtok.data.datasets import ImageItem, image_items, tar_items
from vtok.data.images import IMAGE_SUFFIXES, ImageReadError, find_images
from vtok.data.video import VideoReadError, VideoReadWarning, probe_video, read_frames

# file suffixes taken as videos in a folder (all read by `vtok.data.video`'s demuxers)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".3gp", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                  ".ts", ".m2ts", ".flv", ".ogv", ".wmv", ".asf", ".y4m", ".ivf", ".mxf", ".nut")
TAIL_SECONDS = 1.0  # how much of a video's end is decoded when it is first used


@dataclass(frozen=True)
class VideoItem:
    """One video file: a display name and its path."""

    name: str
    path: Path


def find_videos(root: str | Path) -> list[Path]:
    """All video files below `root` (recursive, by suffix), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise VideoReadError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def video_items(source: str | Path | Sequence[str | Path]) -> list[VideoItem]:
    """Videos from a folder (recursive), video files, or a list of those."""
    return clip_items(source, images=False)  # type: ignore[return-value]


def clip_items(source: str | Path | Sequence[str | Path],
               images: bool = True) -> list[VideoItem | ImageItem]:
    """Videos and images from folders (recursive), files, and .tar shards of images: what
    `RandomClips` reads. Each folder gives its videos, then its images."""
    if isinstance(source, (str, Path)):
        source = [source]
    items: list[VideoItem | ImageItem] = []
    for entry in source:
        path = Path(entry)
        if path.is_dir():
            items += [VideoItem(str(p), p) for p in find_videos(path)]
            found = find_images(path) if images else []
            items += image_items(found) if found else []
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            items.append(VideoItem(str(path), path))
        elif images and path.suffix == ".tar":
            items += tar_items(path)
        elif images and path.suffix.lower() in IMAGE_SUFFIXES:
            items += image_items(path)
        else:
            what = ("a folder, a video, an image or a .tar shard" if images
                    else "a folder or a video")
            raise VideoReadError(f"{path}: not {what}")
    if not items:
        raise VideoReadError(f"no {'videos or images' if images else 'videos'} found in "
                             f"{', '.join(map(str, source))}")
    return items


@dataclass(frozen=True)
class ClipBox:
    """Where a clip comes from: the source, its first frame's number (0 for an image), the
    square crop (top-left corner, side in pixels) and a horizontal flip."""

    index: int
    start: int
    top: int
    left: int
    side: int
    flip: bool


@dataclass(frozen=True)
class _Video:
    """What a video's header says, once checked: display size, frames to choose a start from
    (None when unknown), average frame rate."""

    height: int
    width: int
    count: int | None
    fps: Fraction | None


class RandomClips(Dataset):
    """Random `frames` x `size` x `size` clips, indexed by any integer i >= 0, as float
    `[frames, 3, size, size]` in [0, 1].

    Item i is always the same clip of source i mod N for a given seed (a random start, crop and
    flip drawn from (seed, i)), so a run that asks for items by global sample number sees the
    same data after a resume. `stride`: take every n-th frame. `min_scale`: crops may cover up
    to size/min_scale pixels, downscaled. A source smaller than `size` is upscaled. A video
    with fewer frames after the drawn start than the clip needs (variable frame rate, or a
    header that overstates its count) gives the clip from its first frame instead; one too
    short for any clip is skipped. `len()` is the number of sources (one pass).
    """

    def __init__(self, items: Sequence[VideoItem | ImageItem], size: int, frames: int,
                 stride: int = 1, seed: int = 0, flip: bool = True,
                 min_scale: float = 1.0) -> None:
        if frames < 1 or stride < 1:
            raise ValueError(f"frames and stride must be >= 1, got {frames} and {stride}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale!r}")
        items = list(items)
        stills = [item for item in items if isinstance(item, ImageItem)]
        self.left_out = 0  # images not used: a clip has more than one frame
        if frames > 1 and stills:
            items = [item for item in items if not isinstance(item, ImageItem)]
            self.left_out = len(stills)
            warnings.warn(f"{len(stills)} images left out: an image is a 1-frame clip, used only "
                          f"when frames == 1 (here {frames})", stacklevel=2)
        if not items:
            raise ValueError("RandomClips needs at least one video" +
                             (" (images are used only when frames == 1)" if stills else ""))
        self.items, self.size, self.frames, self.stride = items, size, frames, stride
        self.seed, self.flip, self.min_scale = seed, flip, min_scale
        self.span = (frames - 1) * stride + 1  # frames of video one clip covers
        self._videos: dict[int, _Video] = {}
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.items)
        for step in range(n):
            clip = self._clip(i, (i + step) % n)
            if clip is not None:
                return clip
        raise VideoReadError(f"none of the {n} videos and images could be read")

    def batch(self, first: int, count: int) -> torch.Tensor:
        """Items first .. first+count-1 stacked: `[count, frames, 3, size, size]`."""
        return torch.stack([self[i] for i in range(first, first + count)])

    def box(self, i: int, index: int, height: int, width: int, count: int | None) -> ClipBox:
        """Where item i comes from, given the readable source (`index`, its size and the number
        of frames to choose a start from) it falls on."""
        gen = torch.Generator().manual_seed(hash((self.seed, i)) & ((1 << 62) - 1))
        scale = 1.0 - float(torch.rand((), generator=gen)) * (1.0 - self.min_scale)
        side = min(height, width, round(self.size / scale))
        top = int(torch.randint(height - side + 1, (1,), generator=gen))
        left = int(torch.randint(width - side + 1, (1,), generator=gen))
        flip = self.flip and bool(torch.rand((), generator=gen) < 0.5)
        starts = max((count or 1) - self.span, 0) + 1
        start = int(torch.randint(starts, (1,), generator=gen))
        return ClipBox(index, start, top, left, side, flip)

    def _clip(self, i: int, index: int) -> torch.Tensor | None:
        """Item i cut from source `index`, or None when that source is unreadable (skipped)."""
        item = self.items[index]
        if item.name in self.skipped:
            return None
        try:
            if isinstance(item, ImageItem):
                image = item.read()
                box = self.box(i, index, image.shape[1], image.shape[2], 1)
                crops = self._crop(image, box)[None]
            else:
                video = self._video(index)
                box = self.box(i, index, video.height, video.width, video.count)
                crops = self._read(item, video, box)
        except (VideoReadError, ImageReadError) as err:
            self.skipped[item.name] = str(err)
            kind = "image" if isinstance(item, ImageItem) else "video"
            warnings.warn(f"skipping {kind}: {err}", stacklevel=3)
            return None
        return self._finish(crops, box)

    def _video(self, index: int) -> _Video:
        """The checked header of video `index`, read once: VideoReadError when it does not open,
        does not decode, or breaks off (its last second is decoded to find out)."""
        if index in self._videos:
            return self._videos[index]
        path = self.items[index].path
        info = probe_video(path)
        if info.duration:
            tail = max(0.0, info.duration - TAIL_SECONDS)
            # decoded to the end, converted once: a file that breaks off warns
            _, problem = _watched(read_frames(path, start=tail, stride=sys.maxsize), None)
            if problem:
                raise VideoReadError(problem)
        count = info.frames
        if count is None and info.duration and info.fps:
            count = int(info.duration * info.fps)
        self._videos[index] = _Video(info.height, info.width, count, info.fps)
        return self._videos[index]

    def _read(self, item: VideoItem, video: _Video, box: ClipBox) -> torch.Tensor:
        """The cropped frames of `box` (`[frames, 3, side, side]`)."""
        def crops(start: Fraction) -> tuple[list[torch.Tensor], str | None]:
            frames = read_frames(item.path, start=start, stride=self.stride,
                                 max_frames=self.frames)
            return _watched(frames, lambda frame: self._crop(frame, box, video, item.name))

        start = Fraction(box.start) / video.fps if video.fps else Fraction(0)
        got, problem = crops(start)
        if len(got) < self.frames and problem is None and start > 0:
            got, problem = crops(Fraction(0))  # the clip ran past the last frame
        if problem:
            raise VideoReadError(problem)
        if len(got) < self.frames:
            raise VideoReadError(f"{item.name}: too short: {len(got)} frames at stride "
                                 f"{self.stride} from its first, a clip takes {self.frames}")
        return torch.stack(got)

    def _crop(self, frame: torch.Tensor, box: ClipBox, video: _Video | None = None,
              name: str = "") -> torch.Tensor:
        if video is not None and frame.shape[1:] != (video.height, video.width):
            raise VideoReadError(f"{name}: frame size changes from {video.width}x{video.height} "
                                 f"to {frame.shape[2]}x{frame.shape[1]}")
        # a copy, so the whole frame is freed
        return frame[:, box.top : box.top + box.side, box.left : box.left + box.side].clone()

    def _finish(self, crops: torch.Tensor, box: ClipBox) -> torch.Tensor:
        if box.side != self.size:
            crops = F.interpolate(crops, size=(self.size, self.size), mode="bilinear",
                                  antialias=True, align_corners=False).clamp(0, 1)
        if box.flip:
            crops = crops.flip(-1)
        return crops.contiguous()


def _watched(frames, keep) -> tuple[list[torch.Tensor], str | None]:
    """`keep(frame)` of every frame (nothing kept when `keep` is None), and the problem a
    `VideoReadWarning` reported (the file broke off), else None. Other warnings pass on."""
    kept = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VideoReadWarning)
        for frame in frames:
            if keep is not None:
                kept.append(keep(frame))
    problem = None
    for w in caught:
        if issubclass(w.category, VideoReadWarning):
            problem = problem or str(w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return kept, problem
