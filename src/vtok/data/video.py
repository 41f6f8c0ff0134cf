"""Reading video clips into float RGB frames, decoded as a stream through PyAV (FFmpeg).

- A path is a local file (never a URL or an FFmpeg protocol such as "concat:"), and only the
  demuxers in `FORMATS` are opened: video containers and raw video streams. Image files (read
  them with `read_image`), playlists that open other files or URLs (HLS, DASH, concat) and
  capture devices are refused as "not a readable video".
- Frames are decoded one at a time; nothing holds more than the current frame (and, when
  resampling to a frame rate, the previous one), so a long video never sits whole in memory.
- Times are presentation times in seconds from the start of the video stream, kept as exact
  fractions, so variable frame rate is read as it is stored.
- The display matrix (rotation, mirroring) is applied; odd sizes are kept; grey keeps its range
  and becomes three equal channels; alpha is composited on white as images are; see
  `vtok.data.video_frames`, where a decoded frame becomes pixels.
- Each frame may hold at most `MAX_PIXELS` pixels, checked from the header and again per frame.
- A file that cannot be opened or decodes no frame raises `VideoReadError` (a ValueError)
  naming the file and the problem. A file that breaks off after some frames gives the frames
  before the break, then warns with `VideoReadWarning` naming the file and stops: a packet that
  does not demux or decode, or a stream that ends quietly more than half a frame before the
  duration its header declares. Frames the decoder flags corrupt are skipped and counted in
  that warning. No PyAV exception escapes. Reads stopped early by `duration` or `max_frames`
  never look past their end, so they warn about nothing beyond it.

PyAV is imported when a video is read, not when `vtok.data` is imported.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from vtok.data.images import MAX_PIXELS
from vtok.data.video_frames import frame_orientation, frame_to_tensor

# Demuxer names (FFmpeg's) that are opened; FFmpeg refuses any other format it detects.
FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "mpegvideo", "m4v", "flv",
           "asf", "ogg", "nut", "ivf", "obu", "h264", "hevc", "vvc", "mxf", "dv", "rm",
           "yuv4mpegpipe")


class VideoReadError(ValueError):
    """A video that cannot be read; the message names the file and the problem."""


class VideoReadWarning(UserWarning):
    """A video that broke off (truncated or corrupt) after some frames were read."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says. width/height: as displayed (after rotation). frames: the
    count the container declares, None when it keeps none (Matroska, MPEG-TS). fps: the
    average frame rate, None when unknown. duration: seconds, None when unknown. rotation:
    degrees counter-clockwise applied to stored frames to display them (0, 90, 180 or 270);
    mirrored: then flipped left-right."""

    width: int
    height: int
    frames: int | None
    fps: Fraction | None
    duration: float | None
    codec: str
    rotation: int
    mirrored: bool


@dataclass(frozen=True)
class Clip:
    """frames: float `[T, 3, H, W]` in [0, 1]. fps: the frame rate of `frames` (the requested
    rate, or the video's average rate divided by the stride; None when the video has none).
    times: each frame's presentation time in seconds (the tick it stands for when resampled).
    problem: why reading stopped early (truncated or corrupt file; also warned), else None."""

    frames: torch.Tensor
    fps: Fraction | None
    times: list[float]
    problem: str | None


def probe_video(path: str | Path, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    """Read a video's header, and decode its first frame only for the display matrix (PyAV
    gives the matrix on decoded frames, not on streams)."""
    av = _import_av()
    name = str(path)
    with _open(path, name) as container:
        stream = _video_stream(container, name, max_pixels)
        first = None
        try:
            for frame in _decoded_frames(container, stream):
                first = frame
                break
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{name}: cannot decode ({err})") from None
        if first is None:
            raise VideoReadError(f"{name}: cannot decode: no frame decodes")
        rotation, mirrored = frame_orientation(first)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(width, height, stream.frames or None, stream.average_rate or None,
                         duration, stream.codec_context.name, rotation, mirrored)


def read_frames(path: str | Path, start: float = 0.0, duration: float | None = None,
                stride: int = 1, fps: float | Fraction | None = None,
                max_frames: int | None = None,
                max_pixels: int = MAX_PIXELS) -> Iterator[torch.Tensor]:
    """Frames of a video, float `[3, H, W]` in [0, 1], decoded as they are consumed.

    start: seconds; seeks to the keyframe before it and drops earlier frames. duration: seconds
    of presentation time from `start` (end excluded). stride: keep every n-th frame from
    `start`. fps: instead of a stride, one frame per tick `start + k / fps`, the latest frame
    shown at or before that tick (ticks before the first frame are skipped; the last frame
    lasts its own duration). max_frames: stop after that many.
    Arguments are checked at the call; the file is opened when iteration starts. A file that
    breaks off yields the frames before the break, then warns (`VideoReadWarning`) and stops.
    """
    options = _Options.checked(start, duration, stride, fps, max_frames)
    return (frame for _, frame in _timed_frames(path, options, _Status(), max_pixels))


def read_clip(path: str | Path, max_frames: int, start: float = 0.0,
              duration: float | None = None, stride: int = 1,
              fps: float | Fraction | None = None, max_pixels: int = MAX_PIXELS) -> Clip:
    """At most `max_frames` frames stacked into a `Clip` (options as in `read_frames`); the
    bound is required so memory stays bounded. Raises `VideoReadError` when no frame is read
    or the frame size changes within the clip."""
    options = _Options.checked(start, duration, stride, fps, max_frames)
    name, status = str(path), _Status()
    times, frames = [], []
    for time, frame in _timed_frames(path, options, status, max_pixels):
        if frames and frame.shape != frames[0].shape:
            raise VideoReadError(f"{name}: frame size changes from {tuple(frames[0].shape[1:])} "
                                 f"to {tuple(frame.shape[1:])} at {float(time):.3f} s")
        times.append(float(time))
        frames.append(frame)
    if not frames:
        raise VideoReadError(f"{name}: no frame from {start} s"
                             + (f" ({status.problem})" if status.problem else ""))
    if options.fps is not None:
        rate = options.fps
    else:
        rate = status.average_rate / options.stride if status.average_rate else None
    return Clip(torch.stack(frames), rate, times, status.problem)


@dataclass(frozen=True)
class _Options:
    start: Fraction
    end: Fraction | None
    stride: int
    fps: Fraction | None
    max_frames: int | None

    @classmethod
    def checked(cls, start, duration, stride, fps, max_frames) -> _Options:
        start = _seconds("start", start)
        if start < 0:
            raise ValueError(f"start must be >= 0 seconds, got {float(start)}")
        end = None
        if duration is not None:
            duration = _seconds("duration", duration)
            if duration <= 0:
                raise ValueError(f"duration must be > 0 seconds, got {float(duration)}")
            end = start + duration
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
        if fps is not None:
            if stride != 1:
                raise ValueError("give either stride or fps, not both")
            fps = _seconds("fps", fps)
            if fps <= 0:
                raise ValueError(f"fps must be > 0, got {float(fps)}")
        if max_frames is not None and (isinstance(max_frames, bool) or
                                       not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")
        return cls(start, end, stride, fps, max_frames)


def _seconds(what: str, value) -> Fraction:
    """An exact fraction; a float is read as its shortest decimal, so 0.1 is 1/10 (and a frame
    at pts 1/10 is not before `start=0.1`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be finite, got {value}")
        return Fraction(repr(value))
    return Fraction(value)


@dataclass
class _Status:
    """What a read learned on the way: the stream's average rate, and why it stopped early."""

    average_rate: Fraction | None = None
    problem: str | None = None


def _timed_frames(path: str | Path, options: _Options, status: _Status,
                  max_pixels: int) -> Iterator[tuple[Fraction, torch.Tensor]]:
    """(time, frame) pairs chosen by `options`; frames are converted only when chosen."""
    av = _import_av()
    name = str(path)
    with _open(path, name) as container:
        stream = _video_stream(container, name, max_pixels)
        status.average_rate = stream.average_rate or None
        timed = _frames_from(container, stream, options.start, status, name, max_pixels)
        chosen = _resampled(timed, options) if options.fps is not None else _strided(timed, options)
        for _ in range(options.max_frames or sys.maxsize):
            try:
                item = next(chosen, None)
            except VideoReadError:
                raise
            except (av.error.FFmpegError, ValueError) as err:  # a frame that does not convert
                raise VideoReadError(f"{name}: cannot convert a frame to RGB "
                                     f"({type(err).__name__}: {err})") from None
            if item is None:
                return
            yield item


def _strided(timed, options: _Options):
    index = 0
    for time, frame, _ in timed:
        if time < options.start:
            continue
        if options.end is not None and time >= options.end:
            return
        if index % options.stride == 0:
            yield time, frame_to_tensor(frame)
        index += 1


def _resampled(timed, options: _Options):
    """One frame per tick `start + k / fps`: the latest frame whose time is at or before it."""
    step = 1 / options.fps
    tick = options.start
    shown = None  # the latest frame: (time, av frame, its length)
    pixels = None  # `shown` converted, once it is first needed

    def show():
        nonlocal pixels
        first = pixels is None
        if first:
            pixels = frame_to_tensor(shown[1])
        return tick, (pixels if first else pixels.clone())

    for time, frame, length in timed:
        if options.end is not None and time >= options.end:
            break
        while tick < time and (options.end is None or tick < options.end):
            if shown is not None:
                yield show()
            tick += step
        shown, pixels = (time, frame, length), None
    if shown is None:
        return
    # the last frame lasts its own length (at least its own tick)
    while ((tick < shown[0] + shown[2] or tick <= shown[0])
           and (options.end is None or tick < options.end)):
        yield show()
        tick += step


def _frames_from(container, stream, start: Fraction, status: _Status, name: str,
                 max_pixels: int):
    """(time, av frame, frame length) from the keyframe before `start` to the end of the
    stream; warns and stops where the file breaks off."""
    av = _import_av()
    base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
    origin = stream.start_time if stream.start_time is not None else 0
    rate = stream.average_rate or None
    default_length = 1 / Fraction(rate) if rate else Fraction(0)
    seeked = start > 0 and _seek(container, stream, origin + int(start / base))
    decoded = corrupt = 0
    last_time, last_length = None, default_length
    frames = _decoded_frames(container, stream)
    while True:
        try:
            frame = next(frames, None)
        except av.error.FFmpegError as err:
            if seeked and last_time is None:  # where the seek landed does not decode
                seeked, decoded, corrupt = False, 0, 0
                frames = _rewound(container, stream, origin)
                continue
            status.problem = f"breaks off after {decoded} decoded frames ({err})"
            break
        if frame is None:
            if seeked and last_time is None:  # the seek went past every frame
                seeked, decoded, corrupt = False, 0, 0
                frames = _rewound(container, stream, origin)
                continue
            status.problem = _short(container, stream, last_time, last_length, base)
            break
        decoded += 1
        if frame.is_corrupt:
            corrupt += 1
            continue
        if frame.width * frame.height > max_pixels:
            raise VideoReadError(f"{name}: a frame of {frame.width}x{frame.height} pixels is over "
                                 f"the limit of {max_pixels} pixels (MAX_PIXELS)")
        if frame.pts is not None:
            time = (frame.pts - origin) * base
        else:  # no timestamp (some raw streams): one frame length after the last
            time = Fraction(0) if last_time is None else last_time + last_length
        if seeked and last_time is None and time > start:  # the seek overshot
            seeked, decoded, corrupt = False, 0, 0
            frames = _rewound(container, stream, origin)
            continue
        last_length = frame.duration * base if frame.duration else default_length
        last_time = time
        yield time, frame, last_length
    if decoded == corrupt and status.problem:
        raise VideoReadError(f"{name}: cannot decode: {status.problem}")
    if corrupt:
        status.problem = ((status.problem + "; ") if status.problem else "") + (
            f"skipped {corrupt} corrupt frame{'s' if corrupt > 1 else ''}")
    if status.problem:
        warnings.warn(f"{name}: {status.problem}", VideoReadWarning, stacklevel=2)


def _short(container, stream, last_time, last_length, base) -> str | None:
    """Why a stream that ended quietly looks truncated, or None: its last frame ends more than
    half a frame before the duration its header declares (the stream's, else the file's when
    the file holds nothing else). Frame counts are not compared: edit lists drop frames."""
    if stream.duration:
        declared = stream.duration * base
    elif container.duration and len(container.streams) == 1:
        declared = Fraction(container.duration, 1_000_000)
    else:
        return None
    if last_time is None:
        return "ends before any frame" if declared > 0 else None
    end = last_time + last_length
    if end < declared - last_length / 2 - Fraction(1, 1000):
        return f"ends at {float(end):.3f} s of the {float(declared):.3f} s its header declares"
    return None


def _decoded_frames(container, stream):
    """Decoded PyAV frames in presentation order; PyAV errors pass through."""
    for packet in container.demux(stream):
        yield from stream.decode(packet)


def _rewound(container, stream, origin: int):
    """Decoded frames from the first one on. The target is before the first timestamp: MPEG-TS
    finds a seek target by searching timestamps, and a search for the first one itself can land
    seconds later."""
    if not _seek(container, stream, min(origin, 0) - 1):
        _seek(container, stream, origin)
    return _decoded_frames(container, stream)


def _seek(container, stream, offset: int) -> bool:
    """Seek to the keyframe at or before `offset` (stream time base); False when the file
    cannot seek (then it is read from the start)."""
    av = _import_av()
    try:
        container.seek(offset, stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError:
        return False
    return True


@contextmanager
def _open(path: str | Path, name: str):
    av = _import_av()
    try:
        # a local file only: "concat:", "http:" and the like are file names, not protocols
        container = av.open("file:" + os.path.abspath(path), mode="r", metadata_errors="replace",
                            options={"protocol_whitelist": "file",
                                     "format_whitelist": ",".join(FORMATS)})
    except (FileNotFoundError, NotADirectoryError):
        raise VideoReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise VideoReadError(f"{name}: is a directory, not a video") from None
    except PermissionError:
        raise VideoReadError(f"{name}: cannot open (permission denied)") from None
    except av.error.InvalidDataError:
        raise VideoReadError(f"{name}: not a readable video (unknown format, corrupt, or "
                             f"truncated before its index)") from None
    except av.error.ArgumentError:  # FFmpeg's answer to a format outside FORMATS
        raise VideoReadError(f"{name}: not a readable video (an image or another format that "
                             f"is not read; read are {', '.join(FORMATS)})") from None
    except Exception as err:  # FFmpeg fails in many ways on a damaged file; name it
        raise VideoReadError(f"{name}: cannot open ({type(err).__name__}: {err})") from None
    try:
        yield container
    finally:
        container.close()


def _video_stream(container, name: str, max_pixels: int):
    """The first video stream that is not a cover picture, its declared size checked."""
    av = _import_av()
    cover = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not s.disposition & cover]
    if not streams:
        raise VideoReadError(f"{name}: no video stream")
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoReadError(f"{name}: cannot decode: no decoder for its video codec")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise VideoReadError(f"{name}: declares {width}x{height} = {width * height} pixels per "
                             f"frame, over the limit of {max_pixels} pixels (MAX_PIXELS); "
                             f"not decoded")
    return stream


def _import_av():
    try:
        import av
    except ImportError:
        raise ImportError("reading video needs PyAV: pip install 'vtok[data]' "
                          "(or pip install av)") from None
    return av
