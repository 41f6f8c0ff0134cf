"""What `vtok eval` checks and loads before the first image is coded: its configuration, the
tokenizers (each at every token count it is scored at), the image files, the scoring networks,
and the batches of centre crops streamed from the files. Every bad input is an `EvalError` with
a message for the user, raised before anything is written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vtok.eval.methods import CodecSetting, TokenizerSetting, codec_settings, tokenizer_settings
from vtok.eval.robustness import FRACTIONS
from vtok.eval.scoring import Scorer
from vtok.eval.text_fidelity import SIZES

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
    inception: Any = None
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
        except ValueError as err:  # a folder that is there but does not load says why
            what = "tokenizer" if Path(spec).exists() else "unknown tokenizer"
            raise EvalError(f"{what} {spec!r}: {err}") from None
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
    inception = None
    if config.inception_weights is not None:  # before the other networks: a bad file fails fast
        from vtok.eval.features import InceptionFeatures

        try:
            inception = InceptionFeatures(config.inception_weights, device)
        except ValueError as err:
            raise EvalError(str(err)) from None
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
    return Run(config, device, settings, files, Scorer(alex, vgg, features, device),
               reader, inception, notes)


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
