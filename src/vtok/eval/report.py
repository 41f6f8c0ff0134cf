"""The demo's report: rate-distortion plots (PNG) and an HTML page with the table and
reconstructions side by side, and the video section's clips playing side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vtok.eval.codecs import to_pil
from vtok.eval.video_codecs import CODECS
from vtok.files import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from vtok.eval.demo import Result
    from vtok.eval.demo_video import VideoSection


def _plot(results: list[Result], key: str, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for method in dict.fromkeys(r.method for r in results):
        rows = sorted((r for r in results if r.method == method), key=lambda r: r.bpp)
        ax.plot([r.bpp for r in rows], [getattr(r, key) for r in rows], "o-", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (real file bytes)")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp))
    plt.close(fig)


def _pick(results: list[Result]) -> list[Result]:
    """For each method, its lowest-bpp and highest-bpp settings (one if it has one)."""
    chosen = []
    for method in dict.fromkeys(r.method for r in results):
        rows = sorted((r for r in results if r.method == method), key=lambda r: r.bpp)
        chosen += [rows[0]] if len(rows) == 1 else [rows[0], rows[-1]]
    return chosen


def write_report(out: Path, results: list[Result], images: torch.Tensor,
                 names: list[str], video: VideoSection | None = None) -> None:
    _plot(results, "lpips_alex", "LPIPS-Alex (lower is better)", out / "rd_lpips.png")
    _plot(results, "psnr", "PSNR dB (higher is better)", out / "rd_psnr.png")
    crops = out / "crops"
    crops.mkdir(exist_ok=True)
    shown = _pick(results)
    for i in range(min(3, len(images))):
        strip = torch.cat([images[i], *[r.recons[i] for r in shown]], -1)
        atomic_write(crops / f"{i}.png", lambda tmp, s=strip: to_pil(s).save(tmp))
    rows = "\n".join(
        f"<tr><td>{html.escape(r.method)}</td><td>{html.escape(r.setting)}</td>"
        f"<td>{r.bpp:.4f}</td><td>{r.psnr:.2f}</td><td>{r.lpips_alex:.3f}</td></tr>"
        for r in results)
    captions = " | ".join(["original"] + [f"{r.method} {r.setting} ({r.bpp:.3f} bpp)"
                                          for r in shown])
    strips = "\n".join(f"<p>{html.escape(names[i])}</p><img src='crops/{i}.png'>"
                       for i in range(min(3, len(images))))
    labels = {c.label for c in CODECS.values()}
    coded = dict.fromkeys(r["method"] for r in (video.rows if video else [])
                          if r["method"] in labels)
    title = f" and {', '.join(coded)}" if coded else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vtok demo</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}
img{{max-width:100%}}
{VIDEO_CSS}</style></head><body>
<h1>vtok demo: tokenizers vs JPEG, WebP, AVIF{title}</h1>
<p>{len(images)} validation photos (never trained on), {images.shape[-1]}x{images.shape[-2]}
centre crops. bpp = bytes of the stored file, headers included, x 8 / pixels. PSNR per image on
8-bit RGB, averaged; LPIPS AlexNet v0.1.</p>
<div class="plots"><img src="rd_lpips.png"><img src="rd_psnr.png"></div>
<table><tr><th>method</th><th>setting</th><th>bpp</th><th>PSNR</th><th>LPIPS</th></tr>
{rows}
</table>
<h2>Reconstructions</h2><p>{html.escape(captions)}</p>
{strips}
{video_html(video) if video is not None else ""}
</body></html>
"""
    atomic_write_text(out / "report.html", page)


VIDEO_CSS = """.plots{display:flex;gap:1em}.plots img{min-width:0;flex:0 1 auto}
.clips{display:flex;gap:14px;align-items:flex-start}figure{margin:0;min-width:0}
figcaption{font-size:13px;line-height:1.3;margin-top:3px}
video{display:block;width:100%;height:auto;background:#000;image-rendering:pixelated}"""
# `autoplay` alone waits for the page to be seen as visible, which headless browsers may never
# report; muted videos may always be started from a script
PLAY = ("<script>document.querySelectorAll('video').forEach("
        "v => v.play().catch(() => {}))</script>")
MIN_SHOWN = 256  # pixels: a smaller clip is shown scaled up by a whole factor


def video_html(section: VideoSection) -> str:
    """The video section: its one-line note, or its table and the shown clips playing."""
    from vtok.eval.demo_video import DISPLAY
    from vtok.eval.video_compare import FLICKER

    if section.note:
        return f"<h2>Video</h2>\n<p>{html.escape(section.note)}</p>"
    first = section.clips[0]
    rows = "\n".join(
        f"<tr><td>{html.escape(r['method'])}</td><td>{html.escape(r['setting'])}</td>"
        f"<td>{r['bpp']:.4f}</td><td>{r['psnr']:.2f}</td><td>{r['ssim']:.3f}</td>"
        f"<td>{r['lpips_alex']:.3f}</td><td>{r['flicker']:.2f}</td></tr>" for r in section.rows)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in section.notes)
    clips = "\n".join(_clip_html(shown) for shown in section.shown) or (
        "<p>No videos to play: this PyAV has no H.264 encoder.</p>")
    return f"""<h2>Video</h2>
<p>{len(section.clips)} validation clip(s) (never trained on), the first {first['frames']}
frames, {first['size'][0]}x{first['size'][1]} centre crops; each codec at the CRF whose rate is
closest to the tokenizer's. bpp = bytes of the stored file x 8 / (frames x pixels). PSNR and
SSIM on 8-bit RGB and LPIPS AlexNet per frame, averaged; flicker: {html.escape(FLICKER)}.
{html.escape(DISPLAY[0].upper() + DISPLAY[1:])}.</p>
<table><tr><th>method</th><th>setting</th><th>bpp</th><th>PSNR</th><th>SSIM</th><th>LPIPS</th>
<th>flicker</th></tr>
{rows}
</table>
{f"<ul>{notes}</ul>" if notes else ""}
{clips}
{PLAY}"""


def _clip_html(shown: dict) -> str:
    w, h = shown["size"]
    scale = max(1, MIN_SHOWN // max(w, h))
    figures = []
    for item in shown["items"]:
        caption = html.escape(item["label"])
        if "bpp" in item:
            caption += f"<br>{item['bpp']:.4f} bpp, LPIPS {item['lpips_alex']:.3f}"
        else:
            caption += f"<br>{shown['frames']} frames, {w}x{h}"
        figures.append(f"<figure style='flex:0 1 {w * scale}px'>"
                       f"<video src='{html.escape(item['file'])}' width='{w * scale}' "
                       f"height='{h * scale}' autoplay muted loop playsinline></video>"
                       f"<figcaption>{caption}</figcaption></figure>")
    return (f"<h3>{html.escape(shown['clip'])}</h3>\n<div class='clips'>\n"
            + "\n".join(figures) + "\n</div>")
