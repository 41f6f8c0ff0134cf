"""`vtok eval`: tokenizers side by side with JPEG, WebP and AVIF on one image set, in one report.

Per tokenizer and token count: bpp (index bits, raw and entropy-coded .vtok bytes), PSNR,
SSIM, MS-SSIM, LPIPS-Alex/VGG, the Fréchet distance of EfficientNet-Lite0 features, codebook
usage and perplexity, encode/decode images/s; decoder robustness to random token errors;
text fidelity (`text_fidelity`); BD-rate and BD-LPIPS against AVIF (`bdrate`). Images are
streamed in batches, so memory does not grow with the folder. Everything is written to a
temporary folder first and moved into `out` only when the whole run has succeeded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vtok.eval.methods import CodecSetting, TokenizerSetting, codec_settings, tokenizer_settings
from vtok.eval.robustness import FRACTIONS, corrupt
from vtok.eval.scoring import RowStats, Scorer
from vtok.eval.text_fidelity import SIZES, TextImage, TextScore

CODECS = ("jpeg", "webp", "avif")


class EvalError(ValueError):
    """Bad input to `vtok eval`; the message says what and is meant for the user."""


@dataclass
class EvalConfig:
    """What to evaluate and how. `images`: a folder (recursive) or None for the default
    validation photos (`vtok data prepare`). Images are centre-cropped to `size` x `size`."""

    tokenizers: Sequence[str]
    images: str | Path | None = None
    out: str | Path = "eval"
    size: int = 256
    limit: int | None = None
    batch_size: int = 4
    token_counts: Sequence[int] | None = None
    codecs: Sequence[str] = CODECS
    qualities: dict[str, list[int]] | None = None
    text: bool = True
    text_sizes: Sequence[int] = SIZES
    text_photos: int = 4
    text_words: int = 8
    robustness: bool = True
    fractions: Sequence[float] = FRACTIONS
    features: bool = True
    inception_weights: str | Path | None = None
    device: str = "auto"
    cache: str | Path | None = None
    seed: int = 0
    keep: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.tokenizers, str | Path):
            self.tokenizers = [str(self.tokenizers)]
        self.tokenizers = [str(t) for t in self.tokenizers]
        if not self.tokenizers:
            raise EvalError("name at least one tokenizer (a folder, a shipped name or a preset)")
        if self.size < 16:
            raise EvalError(f"size must be at least 16 pixels, got {self.size}")
        for name in ("batch_size", "text_photos", "text_words", "keep"):
            if getattr(self, name) < 1:
                raise EvalError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"limit must be at least 1, got {self.limit}")
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown:
            raise EvalError(f"unknown codec {unknown[0]!r} (known: {', '.join(CODECS)})")
        if any(not 0 < p <= 1 for p in self.fractions):
            raise EvalError(f"token error fractions must be in (0, 1], got {list(self.fractions)}")
        if any(s < 4 for s in self.text_sizes):
            raise EvalError(f"text sizes must be at least 4 pixels, got {list(self.text_sizes)}")
        if self.token_counts is not None and any(k < 1 for k in self.token_counts):
            raise EvalError(f"token counts must be at least 1, got {list(self.token_counts)}")


@dataclass
class Run:
    """What a run needs, checked before any work: tokenizers, files, networks, notes."""

    config: EvalConfig
    device: torch.device
    settings: list[TokenizerSetting | CodecSetting]
    files: list[Path]
    scorer: Scorer
    reader: Any = None
    fid: Any = None
    notes: list[str] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise EvalError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"device {name!r}: no CUDA GPU is available")
    return device


def load_tokenizers(specs: Sequence[str], size: int, counts: Sequence[int] | None,
                    device: torch.device) -> list[TokenizerSetting]:
    """Every setting of every tokenizer; EvalError for a name that is no tokenizer or a
    tokenizer that cannot code `size` x `size` images."""
    from vtok.models.presets import load_or_build

    if len(set(specs)) != len(specs):
        raise EvalError(f"a tokenizer is named twice: {list(specs)}")
    settings: list[TokenizerSetting] = []
    for spec in specs:
        try:
            tok, directory = load_or_build(spec)
        except ValueError as err:
            raise EvalError(f"unknown tokenizer {spec!r}: {err}") from None
        tok = tok.to(device).eval()
        try:
            ours = tokenizer_settings(spec, tok, directory, list(counts) if counts else None)
        except ValueError as err:  # its token prior does not fit it
            raise EvalError(f"tokenizer {spec!r}: {err}") from None
        for s in ours:
            try:
                tok.token_shape((size, size), s.num_tokens)
            except ValueError as err:
                raise EvalError(f"tokenizer {spec!r} cannot code {size}x{size} images: {err} "
                                f"(choose another --size)") from None
        settings += ours
    return settings


def image_files(images: str | Path | None, cache: str | Path | None,
                limit: int | None) -> list[Path]:
    from vtok.data.images import find_images
    from vtok.data.photos import photo_paths

    if images is None:
        try:
            files = photo_paths("val", cache)
        except (OSError, RuntimeError, ValueError) as err:
            raise EvalError(f"no --images folder given and the default photos are missing: "
                            f"{err}") from None
    else:
        folder = Path(images)
        if not folder.is_dir():
            raise EvalError(f"--images {folder}: not a folder")
        files = find_images(folder)
        if not files:
            raise EvalError(f"--images {folder}: no image files in it (JPEG, PNG, WebP, ...)")
    return files[:limit]


def prepare(config: EvalConfig) -> Run:
    """Everything checked and loaded before the first image is coded."""
    from vtok.cache import MissingAssetError
    from vtok.losses import LPIPS

    device = pick_device(config.device)
    for module, extra in (("pytorch_msssim", "eval"), ("matplotlib", "data")):
        try:  # imported where they are used, after the coding: checked before it
            __import__(module)
        except ImportError:
            raise EvalError(f"vtok eval needs {module}: pip install 'vtok[{extra}]'") from None
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} is a file, not a folder")
    files = image_files(config.images, config.cache, config.limit)
    settings: list[TokenizerSetting | CodecSetting] = list(
        load_tokenizers(config.tokenizers, config.size, config.token_counts, device))
    codecs, missing = codec_settings(list(config.codecs), config.qualities)
    settings += codecs
    notes = [f"{c.upper()} is not in this Pillow build: not measured" for c in missing]
    try:
        alex = LPIPS("alex", cache=config.cache).to(device)
    except MissingAssetError as err:
        raise EvalError(str(err)) from None
    try:
        vgg = LPIPS("vgg", cache=config.cache).to(device)
    except MissingAssetError as err:
        vgg = None
        notes.append(f"LPIPS-VGG not measured: its weights are not in the cache ({err})")
    features = None
    if config.features:
        from vtok.eval.features import FeatureExtractor

        try:
            features = FeatureExtractor(device)
        except ImportError as err:
            notes.append(f"feature distance not measured: {err}")
    reader = None
    if config.text:
        from vtok.eval.text_fidelity import WordReader

        try:
            reader = WordReader()
        except ImportError as err:
            notes.append(f"text fidelity not measured: {err}")
    fid = None
    if config.inception_weights is not None:
        from vtok.eval.features import InceptionFID

        try:
            fid = InceptionFID(config.inception_weights, device)
        except ValueError as err:
            raise EvalError(str(err)) from None
        notes.append("FID (Inception-v3, from --inception-weights) is measured for the "
                     "tokenizer rows only")
    return Run(config, device, settings, files, Scorer(alex, vgg, features, device),
               reader, fid, notes)


def batches(files: Sequence[Path], size: int, batch_size: int, skipped: list[dict[str, str]]
            ) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Centre crops of the readable files, `batch_size` at a time; unreadable files are
    appended to `skipped` with the reason."""
    from vtok.data.datasets import center_crop
    from vtok.data.images import ImageReadError, read_image

    names, crops = [], []
    for path in files:
        try:
            crops.append(center_crop(read_image(path), size))
            names.append(path.name)
        except (ImageReadError, OSError) as err:
            reason = str(err).removeprefix(f"{path}: ")  # the file is named beside it
            skipped.append({"file": str(path), "reason": reason})
            continue
        if len(crops) == batch_size:
            yield names, torch.stack(crops)
            names, crops = [], []
    if crops:
        yield names, torch.stack(crops)


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
    fids = ({id(s): _fresh_fid(run) for s in run.settings if s.kind == "tokenizer"}
            if run.fid is not None else {})
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
            for fid in fids.values():
                fid.update(originals, real=True)
            for setting, row in zip(run.settings, stats):
                coded = setting.code(originals)
                feats = run.scorer.features(coded.recons) if reference is not None else None
                row.add(coded, run.scorer.quality(originals, coded.recons), feats)
                if id(setting) in fids:
                    fids[id(setting)].update(coded.recons, real=False)
                if id(setting) in probed:
                    _probe(setting, coded, originals, row, run, index)
                bar.update(len(originals))
    bar.close()
    if not names:
        raise EvalError(f"none of the {len(run.files)} image files could be read "
                        f"(first: {skipped[0]['file']}: {skipped[0]['reason']})")
    for setting, row in zip(run.settings, stats):
        if id(setting) in fids:
            row.fid = fids[id(setting)].compute()
    text_originals: list[TextImage] = []
    if run.reader is not None:
        text_originals = _text_fidelity(run, stats, kept[: config.text_photos])
    rows = [row.row(reference) for row in stats]
    results = _summary(run, rows, names, skipped, started)
    _write(Path(config.out), results, stats, kept[: config.keep], text_originals, run)
    return results


def _fresh_fid(run: Run) -> Any:
    from vtok.eval.features import InceptionFID

    return InceptionFID(run.config.inception_weights, run.device)


def _robustness_settings(settings: Sequence[TokenizerSetting | CodecSetting]) -> set[int]:
    """Each tokenizer's setting with the most tokens (its last one)."""
    last: dict[str, int] = {}
    for s in settings:
        if s.kind == "tokenizer":
            last[s.method] = id(s)
    return set(last.values())


def _probe(setting: TokenizerSetting, coded, originals: torch.Tensor, row: RowStats, run: Run,
           batch_index: int) -> None:
    generator = torch.Generator().manual_seed(run.config.seed * 1_000_003 + batch_index)
    sums = {}
    for p in run.config.fractions:
        damaged = corrupt(coded.tokens, p, setting.tok.codebook_size, generator)
        recons = setting.decode_tokens(damaged)
        sums[p] = float(run.scorer.lpips(run.scorer.lpips_alex, originals, recons).sum())
    row.add_robustness(sums, len(originals))


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


def _bd_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BD-rate / BD-quality of every tokenizer with 2+ rate points against AVIF."""
    from vtok.eval.bdrate import bd_quality, bd_rate

    anchor = [r for r in rows if r["method"] == "AVIF"]
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r["kind"] == "tokenizer"):
        test = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"tokenizer": method, "anchor": "AVIF"}
        if len(test) < 2 or len(anchor) < 2:
            entry["note"] = ("a single rate point: no curve" if len(test) < 2 else
                             "AVIF was not measured")
            out.append(entry)
            continue
        for metric in ("lpips_alex", "psnr"):
            args = ([r["bpp"] for r in anchor], [r[metric] for r in anchor],
                    [r["bpp"] for r in test], [r[metric] for r in test])
            entry[f"bd_rate_{metric}"] = bd_rate(*args).to_dict()
            entry[f"bd_{metric}"] = bd_quality(*args).to_dict()
        out.append(entry)
    return out


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
        "rows": rows, "bd": _bd_rows(rows), "notes": notes,
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
