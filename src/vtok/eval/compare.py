"""`vtok eval`: tokenizers side by side with JPEG, WebP and AVIF on one image set, in one report.

Per tokenizer and token count: bpp (index bits, raw and entropy-coded .vtok bytes), PSNR,
SSIM, MS-SSIM, LPIPS-Alex/VGG, the Fréchet distance of EfficientNet-Lite0 features, codebook
usage and perplexity, encode/decode images/s; decoder robustness to random token errors;
text fidelity (`text_fidelity`); BD-rate and BD-LPIPS against AVIF (`bdrate`). Inputs are
checked and loaded first (`compare_inputs`); images are then streamed in batches, so memory
does not grow with the folder. Everything is written to a temporary folder first and moved
into `out` only when the whole run has succeeded (`compare_report` builds the files).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vtok.eval.bdrate import bd_rows
from vtok.eval.compare_inputs import EvalConfig, EvalError, Run, batches, prepare
from vtok.eval.methods import CodecSetting, TokenizerSetting
from vtok.eval.robustness import corrupt
from vtok.eval.scoring import RowStats
from vtok.eval.text_fidelity import TextImage, TextScore

__all__ = ["EvalConfig", "EvalError", "evaluate"]


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run the whole evaluation, write `results.json`, the plots and `report.html` into
    `config.out`, and return the results (what results.json holds)."""
    from vtok.eval.features import GaussianStats

    started = time.time()
    run = prepare(config)
    stats = [RowStats(s.method, s.setting, s.kind, s.coding, s.num_tokens,
                      getattr(getattr(s, "tok", None), "codebook_size", None), config.keep)
             for s in run.settings]
    probed = _robustness_settings(run.settings) if config.robustness else set()
    reference = GaussianStats() if run.scorer.features is not None else None
    inception = GaussianStats() if run.inception is not None else None
    skipped: list[dict[str, str]] = []
    names: list[str] = []
    kept: list[torch.Tensor] = []
    bar = tqdm(total=len(run.files) * len(run.settings), desc="eval", unit="image",
               disable=not config.progress)
    with torch.no_grad():
        for index, (batch_names, originals) in enumerate(
                batches(run.files, config.size, config.batch_size, skipped)):
            names += batch_names
            kept += list(originals[: max(0, max(config.keep, config.text_photos) - len(kept))])
            if reference is not None:
                reference.add(run.scorer.features(originals))
            if inception is not None:
                inception.add(run.inception(originals))
            lpips_reference = run.scorer.reference(originals)
            for setting, row in zip(run.settings, stats):
                coded = setting.code(originals)
                feats = run.scorer.features(coded.recons) if reference is not None else None
                row.add(coded, run.scorer.quality(originals, coded.recons, lpips_reference),
                        feats)
                if inception is not None:
                    row.inception_stats.add(run.inception(coded.recons))
                if id(setting) in probed:
                    _probe(setting, coded, lpips_reference, row, run, index)
                bar.update(len(originals))
    bar.close()
    if not names:
        raise EvalError(f"none of the {len(run.files)} image files could be read "
                        f"(first: {skipped[0]['file']}: {skipped[0]['reason']})")
    text_originals: list[TextImage] = []
    if run.reader is not None:
        text_originals = _text_fidelity(run, stats, kept[: config.text_photos])
    rows = [row.row(reference, inception) for row in stats]
    results = _summary(run, rows, names, skipped, started)
    _write(Path(config.out), results, stats, kept[: config.keep], text_originals, run)
    return results


def _robustness_settings(settings: Sequence[TokenizerSetting | CodecSetting]) -> set[int]:
    """Each tokenizer's setting with the most tokens (its last one)."""
    last: dict[str, int] = {}
    for s in settings:
        if s.kind == "tokenizer":
            last[s.method] = id(s)
    return set(last.values())


def _probe(setting: TokenizerSetting, coded, lpips_reference: dict[str, list[torch.Tensor]],
           row: RowStats, run: Run, batch_index: int) -> None:
    generator = torch.Generator().manual_seed(run.config.seed * 1_000_003 + batch_index)
    sums = {}
    for p in run.config.fractions:
        damaged = corrupt(coded.tokens, p, setting.tok.codebook_size, generator)
        recons = setting.decode_tokens(damaged)
        sums[p] = float(run.scorer.lpips("lpips_alex", lpips_reference, recons).sum())
    row.add_robustness(sums, len(coded.recons))


def _text_fidelity(run: Run, stats: list[RowStats], photos: list[torch.Tensor]
                   ) -> list[TextImage]:
    from vtok.eval.text_fidelity import mark_readable, text_images

    config = run.config
    images = text_images(photos, config.text_sizes, config.seed, config.text_words)
    mark_readable(images, run.reader)
    bar = tqdm(total=len(images) * len(run.settings), desc="text", unit="image",
               disable=not config.progress)
    for setting, row in zip(run.settings, stats):
        row.text, total_bytes, pixels = TextScore(), 0, 0
        for start in range(0, len(images), config.batch_size):
            chunk = images[start : start + config.batch_size]
            with torch.no_grad():
                coded = setting.code(torch.stack([t.pixels for t in chunk]))
            for item, recon in zip(chunk, coded.recons):
                row.text.add(item, recon, run.reader)
            row.text_recons += list(coded.recons[: max(0, len(run.config.text_sizes)
                                                       - len(row.text_recons))])
            total_bytes += sum(coded.file_bytes)
            pixels += coded.recons[0].numel() // 3 * len(chunk)
            bar.update(len(chunk))
        row.text_bpp = total_bytes * 8 / pixels
    bar.close()
    return images


def _summary(run: Run, rows: list[dict[str, Any]], names: list[str],
             skipped: list[dict[str, str]], started: float) -> dict[str, Any]:
    from vtok.eval.features import FEATURE_NAME

    config = run.config
    notes = list(run.notes)
    if config.size < 161:
        notes.append(f"MS-SSIM not measured: it needs more than 160 pixels a side "
                     f"(images are {config.size}x{config.size})")
    notes.append("face fidelity is not measured: no face identity model is available offline")
    return {
        "size": config.size, "images": names, "skipped": skipped,
        "device": str(run.device), "seconds": time.time() - started,
        "rows": rows, "bd": bd_rows(rows), "notes": notes,
        "feature_distance": FEATURE_NAME if run.scorer.features is not None else None,
        "robustness_fractions": list(config.fractions) if config.robustness else [],
        "text_sizes": list(config.text_sizes) if run.reader is not None else [],
    }


def _write(out: Path, results: dict[str, Any], stats: list[RowStats],
           originals: list[torch.Tensor], text_images: list[TextImage], run: Run) -> None:
    """Build every output in a temporary sibling folder, then move each file into `out`."""
    from vtok.eval.compare_report import write_all

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write_all(staging, results, stats, originals, text_images)
        out.mkdir(exist_ok=True)
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = out / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
