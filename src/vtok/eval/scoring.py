"""Per-image scores and their running totals over a streamed image set, one `RowStats` per
tokenizer or codec setting. Memory per row does not grow with the number of images: sums,
a codebook histogram, feature moments and the first few reconstructions for the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from vtok.eval.features import FeatureExtractor, GaussianStats
from vtok.eval.methods import Coded
from vtok.eval.metrics import MS_SSIM_MIN_SIDE, ms_ssim, psnr, ssim
from vtok.eval.text_fidelity import TextScore
from vtok.losses import LPIPS

QUALITY_KEYS = ("psnr", "ssim", "ms_ssim", "lpips_alex", "lpips_vgg")


class Scorer:
    """The networks and settings every row is scored with. `lpips_vgg` and `features` may be
    None (their weights are not there); their columns are then null and a note says why."""

    def __init__(self, lpips_alex: LPIPS, lpips_vgg: LPIPS | None,
                 features: FeatureExtractor | None, device: torch.device) -> None:
        self.lpips_alex, self.lpips_vgg, self.features = lpips_alex, lpips_vgg, features
        self.device = device

    @torch.no_grad()
    def reference(self, originals: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The LPIPS networks' features of a batch of originals, computed once for all the
        settings scored against it."""
        x = originals.to(self.device)
        nets = {"lpips_alex": self.lpips_alex, "lpips_vgg": self.lpips_vgg}
        return {key: net.unit_features(x) for key, net in nets.items() if net is not None}

    @torch.no_grad()
    def lpips(self, key: str, reference: dict[str, list[torch.Tensor]],
              recons: torch.Tensor) -> torch.Tensor:
        net = self.lpips_alex if key == "lpips_alex" else self.lpips_vgg
        return net.distance(reference[key], recons.to(self.device)).double().cpu()

    def quality(self, originals: torch.Tensor, recons: torch.Tensor,
                reference: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Per-image scores of one batch ([B, 3, H, W] in [0, 1], on the CPU); `reference` is
        `self.reference(originals)`."""
        scores = {"psnr": psnr(originals, recons), "ssim": ssim(originals, recons)}
        if min(originals.shape[-2:]) >= MS_SSIM_MIN_SIDE:
            scores["ms_ssim"] = ms_ssim(originals, recons)
        for key in reference:
            scores[key] = self.lpips(key, reference, recons)
        return scores


@dataclass
class RowStats:
    """Running totals of one setting."""

    method: str
    setting: str
    kind: str
    coding: str
    num_tokens: int | None = None
    codebook_size: int | None = None
    keep: int = 3
    images: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    file_bytes: int = 0
    raw_bytes: int = 0
    index_bits: float = 0.0
    pixels: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    tokens_seen: int = 0
    histogram: torch.Tensor | None = None
    feature_stats: GaussianStats = field(default_factory=GaussianStats)
    shown: list[torch.Tensor] = field(default_factory=list)
    robustness: dict[float, float] = field(default_factory=dict)
    robustness_images: int = 0
    text: TextScore | None = None
    text_bpp: float | None = None
    text_recons: list[torch.Tensor] = field(default_factory=list)
    inception_stats: GaussianStats = field(default_factory=GaussianStats)

    def add(self, coded: Coded, scores: dict[str, torch.Tensor],
            features: torch.Tensor | None) -> None:
        n = len(coded.recons)
        self.images += n
        for key, values in scores.items():
            # inf PSNR (a lossless image) would swamp the mean; cap it at 100 dB
            values = values.clamp(max=100) if key == "psnr" else values
            self.sums[key] = self.sums.get(key, 0.0) + float(values.sum())
        self.file_bytes += sum(coded.file_bytes)
        self.raw_bytes += sum(coded.raw_bytes)
        self.index_bits += sum(coded.index_bits)
        self.pixels += n * coded.recons.shape[-1] * coded.recons.shape[-2]
        self.encode_s += coded.encode_s
        self.decode_s += coded.decode_s
        if coded.tokens is not None and self.codebook_size is not None:
            counts = torch.bincount(coded.tokens.indices.flatten(), minlength=self.codebook_size)
            self.histogram = counts if self.histogram is None else self.histogram + counts
        if features is not None:
            self.feature_stats.add(features)
        for image in coded.recons[: max(0, self.keep - len(self.shown))]:
            self.shown.append(image.clone())

    def add_robustness(self, lpips_sums: dict[float, float], images: int) -> None:
        """Summed LPIPS of `images` decoded after corrupting each fraction of their tokens."""
        for fraction, total in lpips_sums.items():
            self.robustness[fraction] = self.robustness.get(fraction, 0.0) + total
        self.robustness_images += images

    def codebook(self) -> tuple[float | None, float | None]:
        """(usage, perplexity) over the set: the share of codes used at least once, and
        exp(entropy) of the code frequencies."""
        if self.histogram is None:
            return None, None
        total = self.histogram.sum().item()
        p = self.histogram.double() / total
        entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
        return (self.histogram > 0).double().mean().item(), math.exp(entropy)

    def row(self, reference_features: GaussianStats | None,
            reference_inception: GaussianStats | None = None) -> dict[str, Any]:
        from vtok.eval.features import frechet_distance

        mean = {k: (self.sums[k] / self.images if k in self.sums else None)
                for k in QUALITY_KEYS}
        usage, perplexity = self.codebook()
        frechet = None
        if reference_features is not None and self.feature_stats.count >= 2:
            frechet = frechet_distance(reference_features, self.feature_stats)
        fid = None
        if reference_inception is not None and self.inception_stats.count >= 2:
            fid = frechet_distance(reference_inception, self.inception_stats)
        tokenizer = self.kind == "tokenizer"
        return {
            "method": self.method, "kind": self.kind, "setting": self.setting,
            "tokens": self.num_tokens, "coding": self.coding, "images": self.images,
            "bpp": self.file_bytes * 8 / self.pixels,
            "bpp_index": self.index_bits / self.pixels if tokenizer else None,
            "bpp_file_raw": self.raw_bytes * 8 / self.pixels if tokenizer else None,
            "bpp_file_entropy": (self.file_bytes * 8 / self.pixels
                                 if self.coding == "entropy-coded" else None),
            **mean,
            "frechet_effnet": frechet, "fid_inception": fid,
            "codebook_usage": usage, "codebook_perplexity": perplexity,
            "encode_images_per_s": self.images / self.encode_s if self.encode_s else None,
            "decode_images_per_s": self.images / self.decode_s if self.decode_s else None,
            "robustness_lpips_alex": ({f"{p:g}": s / self.robustness_images
                                       for p, s in sorted(self.robustness.items())}
                                      if self.robustness_images else None),
            "text": self.text.to_dict() if self.text is not None else None,
            "text_bpp": self.text_bpp,
        }
