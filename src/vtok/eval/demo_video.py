"""The video section of `vtok demo`: each tokenizer that codes clips, through real .vtok files
(entropy-coded when a token prior sits in its folder), against H.264, H.265 and AV1 at the CRF
whose rate is closest to the tokenizer's, on the same val clips (`vtok data prepare --clips`).

Every clip is cut to its first `VideoOptions.frames` frames and centre-cropped (scaled to
cover `side` x `side` when both of its sides reach it) to sides that are multiples of the
tokenizers' spatial factor and of 2 (4:2:0). Scores and bpp as in `vtok.eval.video_compare`.
The report plays the source and every reconstruction of the first `SHOWN_CLIPS` clips from
H.264 copies made at `DISPLAY_CRF` (near-lossless), since browsers play neither .vtok files
nor H.265; the bytes counted are always those of each method's own file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vtok.cache import MissingAssetError
from vtok.codec.tokens_file import has_prior, make_coder
from vtok.data.clips import clip_paths
from vtok.eval import video_codecs as vc
from vtok.eval.video_compare import DEFINITIONS, HEADER, grid_multiple, measure, read_clips, show
from vtok.files import atomic_write

SHOWN_CLIPS = 3
DISPLAY_CRF = 12
DISPLAY = (f"the report plays H.264 copies (libx264 CRF {DISPLAY_CRF}, yuv420p) of the source "
           f"and of each decoded clip; bytes and scores are those of each method's own file")


@dataclass(frozen=True)
class VideoOptions:
    """clips: video files (default: the prepared val clips); frames: the first that many of
    each; side: the largest frame side (a multiple of every tokenizer's grid)."""

    clips: tuple[Path, ...] | None = None
    frames: int = 17
    side: int = 256

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError(f"video frames must be at least 2 (flicker compares consecutive "
                             f"frames), got {self.frames}")
        if self.side < 16:
            raise ValueError(f"the video side must be at least 16 pixels, got {self.side}")


@dataclass
class VideoSection:
    """note: why the section is empty (one line), else None. rows: one per method (see
    `video_compare.measure`). clips: what was coded. notes: clips left out, codecs that did
    not reach the tokenizer's rate. shown: per shown clip, its videos as (label, file, bpp,
    LPIPS) under the demo folder, the source first."""

    note: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What results.json keeps under "video"."""
        if self.note:
            return {"note": self.note}
        return {"clips": self.clips, "definitions": DEFINITIONS, "display": DISPLAY,
                "notes": self.notes, "rows": self.rows}

    def text(self) -> str:
        """The section as printed by `vtok demo`."""
        if self.note:
            return f"video: {self.note}"
        first = self.clips[0]
        lines = [f"video: {len(self.clips)} clip(s) of {first['frames']} frames, "
                 f"{first['size'][0]}x{first['size'][1]}", HEADER, *map(show, self.rows)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def video_section(out: Path, tokenizers: list[tuple[str, Any, Path]], lpips,
                  options: VideoOptions | None = None, cache=None) -> VideoSection:
    """The section for `tokenizers` ((name, tokenizer, folder) triples; those that code clips
    take part), writing the report's videos under `out/video`. Without a video tokenizer or
    readable clips it only says so."""
    options = options or VideoOptions()
    video = [(n, t, d) for n, t, d in tokenizers if t.codes_clips]
    if not video:
        return VideoSection("skipped: no video tokenizer (none of the tokenizers codes clips)")
    try:
        paths = clip_paths("val", cache) if options.clips is None else list(options.clips)
    except MissingAssetError as err:
        return VideoSection(f"skipped: {err}")
    multiple = math.lcm(*(grid_multiple(t) for _, t, _ in video))
    section = VideoSection()
    clips = read_clips(paths, options.frames, None, multiple,
                       max_side=max(multiple, options.side // multiple * multiple),
                       skipped=section.notes)
    section.notes += [f"{c['name']}: one frame only, left out" for c in clips
                      if len(c["frames"]) < 2]
    clips = [c for c in clips if len(c["frames"]) >= 2]
    if not clips:
        return VideoSection("skipped: no clip could be read"
                            + "".join(f"; {n}" for n in section.notes))
    decoded: list[list[np.ndarray]] = []
    for name, tok, directory in video:
        coder, coding = _coder(name, tok, directory, section.notes)
        kept: list[np.ndarray] = []
        code = lambda c, t=tok, k=coder, s=kept: _kept(
            vc.code_with_tokenizer(t, c["frames"], k, c["fps"]), s)
        section.rows.append(measure(name, coding, clips, code, lpips))
        decoded.append(kept)
    section.notes += [f"{spec.label}: FFmpeg's {spec.encoder} is not in this PyAV, skipped"
                      for c, spec in vc.CODECS.items() if not vc.available(c)]
    for codec in (c for c in vc.CODECS if vc.available(c)):
        for target in sorted({r["bpp"] for r in section.rows[: len(video)]}):
            row, frames = _codec_row(codec, clips, target, lpips, section)
            if row is not None:
                section.rows.append(row)
                decoded.append(frames)
    section.clips = [{"name": c["name"], "frames": len(c["frames"]), "fps": str(c["fps"]),
                      "size": [c["frames"].shape[2], c["frames"].shape[1]]} for c in clips]
    section.shown = _write_videos(out, clips, section.rows, decoded)
    return section


def _coder(name: str, tok, directory: Path, notes: list[str]):
    if has_prior(directory):
        try:
            return make_coder("entropy", tok, directory), "entropy"
        except ValueError as err:  # e.g. a prior made for image grids, not (t, h, w) ones
            notes.append(f"{name}: raw coding, its token prior does not fit ({err})")
    return make_coder("raw", tok, directory), "raw"


def _kept(coded: vc.Coded, kept: list[np.ndarray]) -> vc.Coded:
    if len(kept) < SHOWN_CLIPS:
        kept.append(coded.frames)
    return coded


def _codec_row(codec: str, clips: list[dict], target: float, lpips, section: VideoSection):
    """`codec` at the CRF closest to `target` bpp, with its decoded shown clips; (None, None)
    when another target already chose that CRF."""
    spec, tried = vc.CODECS[codec], {}

    def rate_at(crf: int) -> float:
        tried[crf] = [vc.code_clip(c["frames"], codec, crf, c["fps"]) for c in clips]
        return _rate(tried[crf], clips)

    crf = vc.closest_crf(rate_at, target, codec)
    setting = f"crf {crf}"
    if any(r["method"] == spec.label and r["setting"] == setting for r in section.rows):
        return None, None
    rate, (lo, hi) = _rate(tried[crf], clips), spec.crf_range
    if (crf == hi and rate > target) or (crf == lo and rate < target):
        section.notes.append(f"{spec.label}: CRF {crf}, the end of its range, spends "
                             f"{rate:.4f} bpp, the closest it gets to {target:.4f}")
    coded = {id(c): k for c, k in zip(clips, tried[crf])}
    row = measure(spec.label, setting, clips, lambda c: coded[id(c)], lpips)
    return row, [k.frames for k in tried[crf][:SHOWN_CLIPS]]


def _rate(coded: list[vc.Coded], clips: list[dict]) -> float:
    """Bits per pixel per frame over all clips."""
    return sum(len(k.data) for k in coded) * 8 / sum(c["frames"].size // 3 for c in clips)


def _write_videos(out: Path, clips: list[dict], rows: list[dict],
                  decoded: list[list[np.ndarray]]) -> list[dict[str, Any]]:
    if not vc.available("h264"):
        return []  # the rows stand; the report says it has no videos to play
    folder = out / "video"
    folder.mkdir(parents=True, exist_ok=True)
    shown = []
    for i, clip in enumerate(clips[:SHOWN_CLIPS]):
        items = [{"label": "source", "file": _write(folder / f"{i}-source.mp4", clip["frames"],
                                                    clip)}]
        for j, (row, frames) in enumerate(zip(rows, decoded)):
            per_clip = row["clips"][i]
            items.append({"label": f"{row['method']} {row['setting']}",
                          "file": _write(folder / f"{i}-{j}.mp4", frames[i], clip),
                          "bpp": per_clip["bpp"], "lpips_alex": per_clip["lpips_alex"]})
        for item in items:
            item["file"] = str(item["file"].relative_to(out))
        shown.append({"clip": clip["name"], "size": [clip["frames"].shape[2],
                                                     clip["frames"].shape[1]],
                      "frames": len(clip["frames"]), "items": items})
    return shown


def _write(path: Path, frames: np.ndarray, clip: dict) -> Path:
    data = vc.code_clip(frames, "h264", DISPLAY_CRF, clip["fps"]).data
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
