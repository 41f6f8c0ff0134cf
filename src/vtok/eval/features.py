"""Feature-distribution distances between originals and reconstructions.

- `FeatureExtractor`: EfficientNet-Lite0's 1280-d globally pooled features (the offline
  ImageNet model of `vtok.eval.classifier`), on the standard 224x224 evaluation view. The
  Fréchet distance over them is named "Fréchet distance (EfficientNet-Lite0)", never FID: FID
  is defined on Inception-v3's pool features, whose weights do not ship offline.
- `InceptionFID`: real FID through torchmetrics (torch-fidelity's FID Inception-v3), only with
  a weights file the user has; nothing is downloaded.

Sample-size caveat: a Fréchet distance is biased upwards for small sets (its covariance is
estimated from N images in 1280 or 2048 dimensions; below a few thousand images the value
depends strongly on N). Compare numbers only between rows of one run (same images, same N).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FEATURE_NAME = "Fréchet distance (EfficientNet-Lite0 pooled features)"


class FeatureExtractor:
    """`extractor(images [B, 3, H, W] in [0, 1]) -> [B, 1280]` float64 features (CPU)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from vtok.eval.classifier import load_teacher

        self.model = load_teacher().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        from vtok.eval.classifier import classifier_view

        view = classifier_view(images.to(self.device))
        net = self.model.model
        pooled = net.forward_head(net.forward_features((view - self.model.mean)
                                                       / self.model.std), pre_logits=True)
        return pooled.double().cpu()


class GaussianStats:
    """Running sums of feature rows, enough for their mean and covariance: memory stays
    D x D whatever the number of images."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, rows: np.ndarray | Tensor) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        if self.total is None:
            self.total = np.zeros(rows.shape[1])
            self.outer = np.zeros((rows.shape[1], rows.shape[1]))
        self.count += len(rows)
        self.total += rows.sum(0)
        self.outer += rows.T @ rows

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError("a Fréchet distance needs at least 2 images in each set")
        mean = self.total / self.count
        cov = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def frechet_distance(a: np.ndarray | Tensor | GaussianStats,
                     b: np.ndarray | Tensor | GaussianStats) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows [N, D] (or their
    `GaussianStats`): |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with
    tr (S_a S_b)^(1/2) computed as the sum of square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2) (symmetric, so stable even when the covariances are singular, as
    they are for N < D)."""
    mu_a, cov_a = _stats(a).mean_cov()
    mu_b, cov_b = _stats(b).mean_cov()
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"frechet_distance needs features of one size, got {mu_a.shape[0]} "
                         f"and {mu_b.shape[0]}")
    root_a = _psd_sqrt(cov_a)
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(max(value, 0.0))


def _stats(x: np.ndarray | Tensor | GaussianStats) -> GaussianStats:
    if isinstance(x, GaussianStats):
        return x
    rows = np.asarray(x, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"frechet_distance needs [N, D] feature rows, got shape {rows.shape}")
    stats = GaussianStats()
    stats.add(rows)
    return stats


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


class InceptionFID:
    """Real FID (2048-d Inception-v3 pool features) from a local weights file; needs torchmetrics
    and torch-fidelity (`pip install 'vtok[fid]'`). `update(images, real)` then `compute()`."""

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu") -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise ValueError(f"--inception-weights {weights}: no such file")
        from vtok.models.convert import torch_load_tensors

        # the library unpickles the file itself: only a file of plain tensors gets that far
        try:
            torch_load_tensors(weights, "If you trust the file, re-save just its state dict "
                               "(torch.save(model.state_dict(), PATH)) and pass that")
        except ValueError as err:
            raise ValueError(f"--inception-weights {err}") from None
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError as err:
            raise ValueError(f"real FID needs torchmetrics and torch-fidelity "
                             f"(pip install 'vtok[fid]'): {err}") from None
        try:
            self.metric = FrechetInceptionDistance(
                feature=2048, normalize=True, feature_extractor_weights_path=str(weights)
            ).to(device)
        except Exception as err:  # the library names what is wrong with the file
            raise ValueError(f"--inception-weights {weights}: cannot build the FID Inception "
                             f"model ({type(err).__name__}: {err})") from None
        self.device = device

    def update(self, images: Tensor, real: bool) -> None:
        self.metric.update(images.to(self.device), real=real)

    def compute(self) -> float:
        return float(self.metric.compute())
