"""The main job (`vtok demo`): every shipped tokenizer at each of its token counts, stored as
real .vtok files, against JPEG, WebP and AVIF on the same validation photos and real bytes.

bpp counts every byte of the stored file (headers included) x 8 / pixels, for us and for the
classic codecs alike; PSNR is per image on 8-bit RGB, averaged; LPIPS is AlexNet v0.1.
Tokenizers that code clips also get a video section (`vtok.eval.demo_video`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vtok.codec.tokens_file import has_prior, make_coder
from vtok.data.datasets import center_crop
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.eval import codecs
from vtok.eval.demo_video import VideoOptions, VideoSection, video_section
from vtok.eval.methods import CodecSetting, code_through_files, token_counts
from vtok.eval.metrics import psnr
from vtok.files import atomic_write_text
from vtok.losses import LPIPS
from vtok.models import Tokenizer, list_pretrained
from vtok.models.shipped import tokenizer_dir

SIZE = 256
DEFAULT_VIDEO = VideoOptions()
CLASSIC = {"jpeg": [5, 10, 25, 50], "webp": [0, 5, 25, 50], "avif": [0, 10, 30, 50]}


@dataclass
class Result:
    method: str
    setting: str
    bpp: float
    psnr: float
    lpips_alex: float
    n_images: int
    recons: torch.Tensor = field(repr=False)

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in
                ("method", "setting", "bpp", "psnr", "lpips_alex", "n_images")}


def _score(method: str, setting: str, images: torch.Tensor, recons: torch.Tensor,
           nbytes: list[int], lpips: LPIPS) -> Result:
    with torch.no_grad():
        lp = torch.cat([lpips(a, b) for a, b in zip(images.split(4), recons.split(4))])
    pixels = images.shape[-1] * images.shape[-2]
    return Result(method, setting, sum(nbytes) * 8 / (pixels * len(nbytes)),
                  psnr(images, recons).mean().item(), lp.mean().item(), len(images), recons)


def tokenizer_results(name: str, tok: Tokenizer, directory: Path, images: torch.Tensor,
                      lpips: LPIPS, tick: Callable[[], None],
                      counts: list[int | None] | None = None) -> list[Result]:
    """`tok` at each token count (default: `token_counts(tok)`), through real .vtok files."""
    coding = "entropy" if has_prior(directory) else "raw"
    coder = make_coder(coding, tok, directory)
    out = []
    for k in token_counts(tok) if counts is None else counts:
        recons, nbytes = [], []
        for image in images:
            coded = code_through_files(tok, image[None], k, coder)
            recons.append(coded.recons[0])
            nbytes += coded.file_bytes
            tick()
        setting = f"{k or coded.tokens.num_tokens} tokens, {coding}"
        out.append(_score(name, setting, images, torch.stack(recons), nbytes, lpips))
    return out


def classic_results(codec: str, images: torch.Tensor, lpips: LPIPS,
                    tick: Callable[[], None], qualities: list[int] | None = None
                    ) -> list[Result]:
    """`codec` at each of `qualities` (default: the demo's settings `CLASSIC[codec]`)."""
    out = []
    for quality in CLASSIC[codec] if qualities is None else qualities:
        recons, nbytes, setting = [], [], CodecSetting(codec, quality)
        for image in images:
            coded = setting.code(image[None])
            recons.append(coded.recons[0])
            nbytes += coded.file_bytes
            tick()
        out.append(_score(codec.upper(), f"q{quality}", images, torch.stack(recons), nbytes,
                          lpips))
    return out


@dataclass
class Demo:
    """What `run_demo` computed: the photo rows and the video section."""

    results: list[Result]
    video: VideoSection


def run_demo(out: Path, limit: int | None = None, progress: bool = True,
             cache: str | Path | None = None, tokenizers: Sequence[str | Path] | None = None,
             video: VideoOptions | None = DEFAULT_VIDEO) -> Demo:
    """Compute every row, write results.json, the plots and report.html into `out`.

    tokenizers: shipped names or tokenizer folders (default: every shipped tokenizer).
    video: the video section's clips and sizes; None skips the section.
    The validation photos, clips and LPIPS weights come from `cache` (see `vtok data
    prepare`)."""
    from vtok.eval.report import write_report

    started = time.time()
    paths = photo_paths("val", cache)[:limit]
    lpips = LPIPS("alex", cache=cache)  # before the work: a missing asset fails at once
    images = torch.stack([center_crop(read_image(p), SIZE) for p in paths])
    folders = ([Path(e["path"]) for e in list_pretrained()] if tokenizers is None
               else [tokenizer_dir(t) for t in tokenizers])
    shipped = [(d.name, Tokenizer.from_pretrained(d), d) for d in folders]
    classic = [c for c in CLASSIC if codecs.available(c)]
    total = len(images) * (sum(len(token_counts(tok)) for _, tok, _ in shipped)
                           + sum(len(CLASSIC[c]) for c in classic))
    bar = tqdm(total=total, desc="demo", unit="code", disable=not progress)
    results = []
    with torch.no_grad():
        for name, tok, directory in shipped:
            results += tokenizer_results(name, tok, directory, images, lpips,
                                         lambda: bar.update())
        for codec in classic:
            results += classic_results(codec, images, lpips, lambda: bar.update())
        bar.close()
        out.mkdir(parents=True, exist_ok=True)
        section = (VideoSection("skipped: not asked for (--no-video)") if video is None
                   else video_section(out, shipped, lpips, video, cache))
    summary = {"size": SIZE, "photos": [p.name for p in paths],
               "seconds": time.time() - started, "rows": [r.row() for r in results],
               "video": section.summary()}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    write_report(out, results, images, [p.name for p in paths], section)
    return Demo(results, section)


def table(results: list[Result]) -> str:
    lines = [f"{'method':12s} {'setting':24s} {'bpp':>7s} {'PSNR':>6s} {'LPIPS':>6s}"]
    lines += [f"{r.method:12s} {r.setting:24s} {r.bpp:7.4f} {r.psnr:6.2f} {r.lpips_alex:6.3f}"
              for r in results]
    return "\n".join(lines)
