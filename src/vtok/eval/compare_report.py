"""`vtok eval`'s outputs: results.json, PNG plots (rate-distortion per metric, text accuracy by
size, robustness) and report.html with the tables, plots and reconstructions side by side,
including crops of the smallest text."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vtok.eval.codecs import to_pil
from vtok.files import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from vtok.eval.scoring import RowStats
    from vtok.eval.text_fidelity import TextImage

# column -> (label, higher is better)
METRICS = {"psnr": ("PSNR dB", True), "ssim": ("SSIM", True), "ms_ssim": ("MS-SSIM", True),
           "lpips_alex": ("LPIPS-Alex", False), "lpips_vgg": ("LPIPS-VGG", False),
           "frechet_effnet": ("Fréchet distance, EfficientNet-Lite0", False),
           "fid_inception": ("FID (Inception-v3)", False)}
# the results table's columns in two tables (too wide for one page as one) and their headers
QUALITY_COLUMNS = {"bpp": "bpp", "psnr": "PSNR dB", "ssim": "SSIM", "ms_ssim": "MS-SSIM",
                   "lpips_alex": "LPIPS-Alex", "lpips_vgg": "LPIPS-VGG",
                   "frechet_effnet": "Fréchet (EffNet-Lite0)", "fid_inception": "FID"}
RATE_COLUMNS = {"bpp_index": "bpp of indices", "bpp_file_raw": "bpp raw .vtok",
                "bpp_file_entropy": "bpp entropy-coded .vtok", "codebook_usage": "codebook usage",
                "codebook_perplexity": "perplexity", "encode_images_per_s": "encode images/s",
                "decode_images_per_s": "decode images/s"}
TEXT_CROP_SIZES = 3  # the smallest text sizes shown as crops


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp))
    _pyplot().close(fig)


def rd_plot(rows: list[dict[str, Any]], key: str, path: Path) -> bool:
    """One line per method: `key` against bpp (log scale); False when no row has `key`."""
    if all(r.get(key) is None for r in rows):
        return False
    label, higher = METRICS[key]
    fig, ax = _pyplot().subplots(figsize=(6, 4.2), dpi=110)
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["bpp"], r[key]) for r in rows
                        if r["method"] == method and r.get(key) is not None)
        if points:
            style = "o-" if any(r["kind"] == "tokenizer" for r in rows
                                if r["method"] == method) else "s--"
            ax.plot(*zip(*points), style, label=method, markersize=4)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter("")  # labelled minor ticks overlap over a narrow range
    ax.set_xlabel("bits per pixel (real file bytes)")
    ax.set_ylabel(f"{label} ({'higher' if higher else 'lower'} is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def nearest_codec_rows(rows: list[dict[str, Any]], bpp_key: str = "bpp") -> dict[int, list[int]]:
    """For each tokenizer row, the row of each codec whose `bpp_key` is nearest in log scale."""
    codecs = [r["method"] for r in rows if r["kind"] == "codec"]
    out = {}
    for i, r in enumerate(rows):
        if r["kind"] != "tokenizer" or not r.get(bpp_key):
            continue
        out[i] = []
        for codec in dict.fromkeys(codecs):
            candidates = [j for j, c in enumerate(rows) if c["method"] == codec and c.get(bpp_key)]
            if candidates:
                out[i].append(min(candidates, key=lambda j: abs(
                    math.log(rows[j][bpp_key] / r[bpp_key]))))
    return out


def text_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    shown = [i for i, r in enumerate(rows) if r.get("text")]
    if not shown:
        return False
    matched = nearest_codec_rows(rows, "text_bpp")
    chosen = [i for i in shown if rows[i]["kind"] == "tokenizer"]
    chosen += sorted({j for i in chosen for j in matched.get(i, [])})
    fig, ax = _pyplot().subplots(figsize=(6, 4.2), dpi=110)
    for i in chosen:
        r = rows[i]
        points = [(int(s), v["accuracy"]) for s, v in r["text"].items()
                  if v["accuracy"] is not None]
        if points:
            ax.plot(*zip(*sorted(points)), "o-" if r["kind"] == "tokenizer" else "s--",
                    label=f"{r['method']} {r['setting']} ({r['text_bpp']:.3f} bpp)",
                    markersize=4)
    ax.set_xscale("log", base=2)
    sizes = sorted({int(s) for i in chosen for s in rows[i]["text"]})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("font size (pixels)")
    ax.set_ylabel("text accuracy (OCR reads the word exactly)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
    return True


def robustness_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    probed = [r for r in rows if r.get("robustness_lpips_alex")]
    if not probed:
        return False
    fig, ax = _pyplot().subplots(figsize=(6, 4.2), dpi=110)
    for r in probed:
        points = [(0.0, r["lpips_alex"])] + [(float(p) * 100, v) for p, v
                                              in r["robustness_lpips_alex"].items()]
        ax.plot(*zip(*points), "o-", label=f"{r['method']} {r['setting']}", markersize=4)
    ax.set_xlabel("tokens replaced by random codes (%)")
    ax.set_ylabel("LPIPS-Alex against the original (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def _png(image: torch.Tensor, path: Path, scale: int = 1) -> None:
    if scale > 1:
        image = F.interpolate(image[None], scale_factor=scale, mode="nearest")[0]
    atomic_write(path, lambda tmp: to_pil(image).save(tmp))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        small = value != 0 and abs(value) < 10**-digits
        return f"{value:.2e}" if small else f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(headers: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>\n{rows}\n</table>"


def _columns_table(rows: list[dict[str, Any]], columns: dict[str, str],
                   text: Sequence[str] = ()) -> str:
    """method, setting, the `text` columns as they are, then `columns` as numbers."""
    return _table(["method", "setting", *text, *columns.values()],
                  [[html.escape(r["method"]), html.escape(r["setting"]),
                    *[html.escape(r[c]) for c in text],
                    *[_fmt(r.get(c), 4 if c.startswith("bpp") else 3) for c in columns]]
                   for r in rows])


def _shown_rows(rows: list[dict[str, Any]]) -> list[int]:
    """Reconstructions shown: every tokenizer row, and each codec's row nearest in bpp."""
    chosen = [i for i, r in enumerate(rows) if r["kind"] == "tokenizer"]
    return chosen + sorted({j for js in nearest_codec_rows(rows).values() for j in js})


def write_all(out: Path, results: dict[str, Any], stats: list[RowStats],
              originals: list[torch.Tensor], text_images: list[TextImage]) -> None:
    rows = results["rows"]
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    plots = [f"rd_{key}.png" for key in METRICS if rd_plot(rows, key, out / f"rd_{key}.png")]
    if text_plot(rows, out / "text_accuracy.png"):
        plots.append("text_accuracy.png")
    if robustness_plot(rows, out / "robustness.png"):
        plots.append("robustness.png")
    shown = _shown_rows(rows)
    (out / "images").mkdir()
    for i, image in enumerate(originals):
        _png(image, out / "images" / f"{i}-original.png")
        for j in shown:
            if i < len(stats[j].shown):
                _png(stats[j].shown[i], out / "images" / f"{i}-row{j}.png")
    crops = _text_crops(out, stats, shown, text_images)
    atomic_write_text(out / "report.html", _page(results, plots, shown, len(originals), crops))


def _text_crops(out: Path, stats: list[RowStats], shown: list[int],
                text_images: list[TextImage]) -> list[int]:
    """Crops around the first words of the smallest sizes (first text photo), 2x enlarged."""
    sizes = []
    for k, item in enumerate(text_images[:TEXT_CROP_SIZES]):
        if not item.words:
            continue
        boxes = [w.box for w in item.words[:3]]
        left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
        right, bottom = max(b[2] for b in boxes), max(b[3] for b in boxes)
        _png(item.pixels[:, top:bottom, left:right], out / "images" / f"text{k}-original.png", 2)
        for j in shown:
            if k < len(stats[j].text_recons):
                _png(stats[j].text_recons[k][:, top:bottom, left:right],
                     out / "images" / f"text{k}-row{j}.png", 2)
        sizes.append(k)
    return sizes


def _page(results: dict[str, Any], plots: list[str], shown: list[int], n_originals: int,
          crops: list[int]) -> str:
    rows = results["rows"]
    quality = _columns_table(rows, QUALITY_COLUMNS, ["coding"])
    rate = _columns_table([r for r in rows if r["kind"] == "tokenizer"], RATE_COLUMNS)
    bd_body = []
    for entry in results["bd"]:
        if "note" in entry:
            bd_body.append([html.escape(entry["tokenizer"]), _note(entry["note"]), "", "", ""])
            continue
        cells = [html.escape(entry["tokenizer"])]
        for key in ("bd_rate_lpips_alex", "bd_lpips_alex", "bd_rate_psnr", "bd_psnr"):
            d = entry[key]
            cells.append(_fmt(d["value"]) if d["value"] is not None else _note(d["note"]))
        bd_body.append(cells)
    bd = _table(["tokenizer vs AVIF", "BD-rate % (LPIPS-Alex)", "BD-LPIPS-Alex",
                 "BD-rate % (PSNR)", "BD-PSNR dB"], bd_body)
    sizes = [str(s) for s in results["text_sizes"]]
    text_rows = [r for r in rows if r.get("text")]
    text = _table(["method", "setting", "bpp (text images)",
                   *[f"{s} px acc / NED (n)" for s in sizes]],
                  [[html.escape(r["method"]), html.escape(r["setting"]), _fmt(r["text_bpp"], 4),
                    *[_text_cell(r["text"].get(s)) for s in sizes]] for r in text_rows])
    matched = nearest_codec_rows(rows, "text_bpp")
    similar = _table(["tokenizer setting", "its bpp", "codec at the nearest bpp", "codec bpp",
                      "bytes ratio (codec / tokenizer)"],
                     [[html.escape(f"{rows[i]['method']} {rows[i]['setting']}"),
                       _fmt(rows[i]["text_bpp"], 4),
                       html.escape(f"{rows[j]['method']} {rows[j]['setting']}"),
                       _fmt(rows[j]["text_bpp"], 4),
                       f"{rows[j]['text_bpp'] / rows[i]['text_bpp']:.2f}"]
                      for i, js in matched.items() for j in js])
    robust = [r for r in rows if r.get("robustness_lpips_alex")]
    fractions = [f"{p:g}" for p in results["robustness_fractions"]]
    robust_table = _table(["method", "setting", "clean", *[f"{float(p) * 100:g} %"
                                                           for p in fractions]],
                          [[html.escape(r["method"]), html.escape(r["setting"]),
                            _fmt(r["lpips_alex"]),
                            *[_fmt(r["robustness_lpips_alex"].get(p)) for p in fractions]]
                           for r in robust])
    labels = ["original"] + [f"{rows[j]['method']} {rows[j]['setting']} "
                             f"({rows[j]['bpp']:.4f} bpp)" for j in shown]
    recon_rows = []
    for i in range(n_originals):
        cells = [f"<img class='recon' src='images/{i}-original.png'>"]
        cells += [f"<img class='recon' src='images/{i}-row{j}.png'>" for j in shown]
        recon_rows.append(cells)
    recons = _table(labels, recon_rows)
    sizes_shown = [results["text_sizes"][k] for k in crops]
    crop_rows = [["original", *[f"<img src='images/text{k}-original.png'>" for k in crops]]]
    crop_rows += [[html.escape(f"{rows[j]['method']} {rows[j]['setting']}"),
                   *[f"<img src='images/text{k}-row{j}.png'>" for k in crops]] for j in shown]
    text_crops = _table(["", *[f"{s} px" for s in sizes_shown]], crop_rows) if crops else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in results["notes"])
    skipped = "".join(f"<li>{html.escape(s['file'])}: {html.escape(s['reason'])}</li>"
                      for s in results["skipped"])
    figures = " ".join(f"<img src='{p}'>" for p in plots)
    n, size = len(results["images"]), results["size"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vtok eval</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right;
font-size:13px;white-space:nowrap}}th{{white-space:normal;max-width:9em;vertical-align:bottom}}
table{{border-collapse:collapse;margin:1em 0}}tr:nth-child(even){{background:#f4f4f4}}
.wide{{overflow-x:auto}}img.recon{{width:160px}}figure img{{max-width:48%}}
div.note{{white-space:normal;text-align:left;max-width:22em}}</style></head><body>
<h1>vtok eval: tokenizers side by side with JPEG, WebP and AVIF</h1>
<p>{n} images, {size}x{size} centre crops, on {html.escape(results['device'])};
{results['seconds']:.0f} s in all.</p>
<h2>Conventions</h2><ul>
<li>bpp: real bytes of the stored file (headers included) x 8 / pixels: the entropy-coded
.vtok file where the tokenizer has a prior, else the raw one, and the codec's own file.
bpp_index: tokens x log2(codebook size) / pixels, no header.</li>
<li>PSNR per image on 8-bit RGB (capped at 100 dB), averaged. SSIM: RGB, Gaussian window
11 / 1.5 (scikit-image). MS-SSIM: the same window, 5 scales (pytorch-msssim).
LPIPS: AlexNet and VGG16 with the v0.1 heads.</li>
<li>Feature distance: the Fréchet distance between Gaussians fitted to EfficientNet-Lite0's
1280-d pooled features (224x224 view) of originals and reconstructions. It is not FID.
With {n} images the covariance of 1280 dimensions is poorly estimated: the value is biased
upwards and depends on the number of images; compare rows of this run only. FID, with
--inception-weights: the same distance on Inception-v3's 2048-d pool features (torch-fidelity's
FID network, images rounded to 8 bits and resized to 299x299 inside it), with the same
caveat, stronger: FID papers use 50,000 images.</li>
<li>Codebook usage: share of the codes used at least once over the set; perplexity:
exp(entropy) of the code frequencies. Images/s include the first batch's warm-up.</li>
<li>Robustness: decode after replacing p % of the indices with uniformly random codes (each
tokenizer at its largest token count); LPIPS-Alex against the original.</li>
<li>Text: words rendered at each size on translucent plates over the first photos, read by
PP-OCRv4 (rapidocr-onnxruntime) on the known word boxes; accuracy = exact reading
(case-insensitive) among the words read exactly in the original; NED = normalized edit
distance.</li>
</ul>
<h2>Notes</h2><ul>{notes}</ul>
{f'<h2>Skipped files</h2><ul>{skipped}</ul>' if skipped else ''}
<h2>Results</h2><div class="wide">{quality}</div>
<h3>Tokenizers: rate, codebook, speed</h3><div class="wide">{rate}</div>
<h2>BD-rate against AVIF</h2>
<p>Bjøntegaard deltas, cubic fits on log-rate over the range both curves cover (negative
BD-rate: fewer bits than AVIF for the same quality; negative BD-LPIPS: better).</p>{bd}
<h2>Plots</h2><figure>{figures}</figure>
<h2>Text fidelity</h2>{text}
<h3>Codecs at similar bytes</h3>{similar}
<div class="wide">{text_crops}</div>
<h2>Robustness to token errors (LPIPS-Alex)</h2>{robust_table}
<h2>Reconstructions</h2><div class="wide">{recons}</div>
</body></html>
"""


def _note(text: str) -> str:
    return f"<div class='note'>{html.escape(text)}</div>"


def _text_cell(entry: dict[str, Any] | None) -> str:
    if not entry or entry["words"] == 0:
        return "–"
    return f"{entry['accuracy']:.2f} / {entry['ned']:.2f} ({entry['words']})"
