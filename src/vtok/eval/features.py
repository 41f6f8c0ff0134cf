"""Feature-distribution distances between originals and reconstructions.

- `FeatureExtractor`: EfficientNet-Lite0's 1280-d globally pooled features (the offline
  ImageNet model of `vtok.eval.classifier`), on the standard 224x224 evaluation view. The
  Fréchet distance over them is named "Fréchet distance (EfficientNet-Lite0)", never FID: FID
  is defined on Inception-v3's pool features, whose weights do not ship offline.
- `InceptionFeatures`: Inception-v3's 2048-d pool features through torch-fidelity's FID
  Inception-v3, only with a weights file the user has (nothing is downloaded); the Fréchet
  distance over them is real FID.

Sample-size caveat: a Fréchet distance is biased upwards for small sets (its covariance is
estimated from N images in 1280 or 2048 dimensions; below a few thousand images the value
depends strongly on N). Compare numbers only between rows of one run (same images, same N).
"""

from __future__ import annotations

import tempfile
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


class InceptionFeatures:
    """`extractor(images [B, 3, H, W] in [0, 1]) -> [B, 2048]` float64 Inception-v3 pool
    features, the ones FID is defined on, through torch-fidelity's FID Inception-v3 (the
    TF-compatible port every FID library uses; `pip install 'vtok[fid]'`) with a weights file
    the user has: `.safetensors`, or a `.pt`/`.pth` of plain tensors (torch-fidelity's own
    `pt_inception-2015-12-05-*.pth` is one). Nothing is downloaded. Images are rounded to
    8 bits first, as FID's reference code sees them, and resized to 299x299 inside the network
    as TensorFlow 1 did for the published FID numbers (torchmetrics' FID resizes with
    antialiasing instead, so its values differ for other sizes)."""

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu") -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise ValueError(f"--inception-weights {weights}: no such file")
        state = _inception_state(weights)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import (
                FeatureExtractorInceptionV3,
            )
        except ImportError as err:
            raise ValueError(f"real FID needs torch-fidelity (pip install 'vtok[fid]'): "
                             f"{err}") from None
        # torch-fidelity reads its weights with a full unpickler; hand it a copy of the tensors
        # loaded above instead of the user's file
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "inception.pt"
            torch.save(state, copy)
            try:
                self.model = FeatureExtractorInceptionV3(
                    "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(copy))
            except Exception as err:  # noqa: BLE001 - the library names what does not fit
                detail = " ".join(str(err).split())[:200]
                raise ValueError(f"--inception-weights {weights}: not the weights of FID's "
                                 f"Inception-v3 ({type(err).__name__}: {detail})") from None
        self.model.to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        (pooled,) = self.model(pixels.to(self.device))
        return pooled.double().cpu()


def _inception_state(weights: Path) -> dict[str, Tensor]:
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"--inception-weights {weights}: not a readable safetensors file "
                             f"({err})") from None
    from vtok.models.convert import torch_load_tensors

    try:
        state = torch_load_tensors(weights, "If you trust the file, re-save just its state "
                                   "dict (torch.save(model.state_dict(), PATH)) and pass that")
    except ValueError as err:
        raise ValueError(f"--inception-weights {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"--inception-weights {weights}: holds no state dict of tensors")
    return state
