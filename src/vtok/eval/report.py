"""The demo's report: rate-distortion plots (PNG) and an HTML page with the table and
reconstructions side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vtok.eval.codecs import to_pil
from vtok.files import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from vtok.eval.demo import Result


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
                 names: list[str]) -> None:
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
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vtok demo</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>vtok demo: tokenizers vs JPEG, WebP, AVIF</h1>
<p>{len(images)} validation photos (never trained on), {images.shape[-1]}x{images.shape[-2]}
centre crops. bpp = bytes of the stored file, headers included, x 8 / pixels. PSNR per image on
8-bit RGB, averaged; LPIPS AlexNet v0.1.</p>
<img src="rd_lpips.png"> <img src="rd_psnr.png">
<table><tr><th>method</th><th>setting</th><th>bpp</th><th>PSNR</th><th>LPIPS</th></tr>
{rows}
</table>
<h2>Reconstructions</h2><p>{html.escape(captions)}</p>
{strips}
</body></html>
"""
    atomic_write_text(out / "report.html", page)
