"""Adversarial training pieces for tokenizers: PatchGAN discriminators (Isola et al., 2017) on
images or frames and on clips (3D convs), hinge losses, LeCam regularization (Tseng et al.,
2021) and VQGAN's adaptive generator weight (Esser et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.nn import group_norm


class PatchDiscriminator(nn.Module):
    """Scores overlapping patches of an image in [0, 1] as real (>0) or reconstructed (<0).
    Clips `[B, T, 3, H, W]` are scored frame by frame (`[B * T, 1, h, w]`)."""

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1), group_norm(out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim == 5:  # clips: each frame on its own
            images = images.flatten(0, 1)
        return self.net(images * 2 - 1)


class PatchDiscriminator3d(nn.Module):
    """Scores overlapping space-time patches of clips `[B, T, 3, H, W]` in [0, 1] (an image
    `[B, 3, H, W]` is a one-frame clip): the PatchGAN's layers with 3-frame x 4x4 kernels,
    halving frames (rounded up), height and width where the 2D one halves height and width.
    Frames are zero-padded on both sides: a critic need not be causal. Its spatial score map
    has the 2D one's size, `vtok.train.model_check.discriminator_output`."""

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(3, channels, (3, 4, 4), 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv3d(ch, out, (3, 4, 4), stride, 1), group_norm(out),
                     nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv3d(ch, 1, (3, 4, 4), 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, clips: Tensor) -> Tensor:
        if clips.ndim == 4:
            clips = clips[:, None]
        return self.net(clips.transpose(1, 2) * 2 - 1)


DISCRIMINATORS = {"2d": PatchDiscriminator, "3d": PatchDiscriminator3d}


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: Tensor) -> Tensor:
    return -fake.mean()


class LeCam(nn.Module):
    """Keeps discriminator logits near EMAs of their own past values (limited-data GANs)."""

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("real_ema", torch.zeros(()))
        self.register_buffer("fake_ema", torch.zeros(()))

    def forward(self, real: Tensor, fake: Tensor) -> Tensor:
        with torch.no_grad():
            self.real_ema.lerp_(real.mean().float(), 1 - self.decay)
            self.fake_ema.lerp_(fake.mean().float(), 1 - self.decay)
        return (F.relu(real - self.fake_ema).pow(2).mean()
                + F.relu(self.real_ema - fake).pow(2).mean())


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor,
                    max_weight: float = 1e4) -> Tensor:
    """|grad of rec_loss| / |grad of g_loss| at the decoder's last layer (detached)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, max_weight).detach()
