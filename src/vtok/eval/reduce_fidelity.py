"""What token reduction costs a trained model: TiTok reconstruction quality and classifier
top-1 agreement with the unreduced model, on the validation photos.

Only trained weights make these numbers mean anything; the bench never computes them for a
random-weight model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vtok.eval.reduce_bench import Subject, Variant, reduced

FIDELITY_COLUMNS = {"titok": ("psnr", "lpips_alex"),
                    "timm": ("agreement_center", "agreement_random")}


def read_photos(folder: Path | None = None, limit: int | None = None,
                cache: str | Path | None = None) -> list[Tensor]:
    """`[3, H, W]` photos in [0, 1]: every image in `folder`, or the default val photos
    prepared in `cache` (`vtok data prepare`)."""
    from vtok.data.images import find_images, read_image

    if folder is None:
        from vtok.data.photos import photo_paths

        paths = photo_paths("val", cache)
    else:
        paths = find_images(folder)
    paths = paths[:limit]
    if not paths:
        raise ValueError(f"no images found in {folder}")
    return [read_image(p) for p in paths]


def random_crops(photos: list[Tensor], size: int, per_photo: int, seed: int = 0) -> Tensor:
    """`per_photo` random size x size crops of each photo after scaling its short side to
    size / 0.875 (the scale of the centre view), from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    short = round(size / 0.875)
    crops = []
    for photo in photos:
        h, w = photo.shape[-2:]
        shape = (max(short, round(h * short / w)), short) if h > w else (
            short, max(short, round(w * short / h)))
        scaled = F.interpolate(photo[None], size=shape, mode="bicubic", antialias=True,
                               align_corners=False).clamp(0, 1)[0]
        for _ in range(per_photo):
            top = int(torch.randint(0, shape[0] - size + 1, (), generator=g))
            left = int(torch.randint(0, shape[1] - size + 1, (), generator=g))
            crops.append(scaled[:, top : top + size, left : left + size])
    return torch.stack(crops)


def titok_fidelity(subject: Subject, rows: list[Variant], images: Tensor, layer: int | None,
                   batch: int = 8, progress: Callable[[], None] | None = None,
                   cache: str | Path | None = None) -> dict[Variant, dict[str, float]]:
    """Mean PSNR (8-bit RGB, per image) and LPIPS-Alex of the reconstructions, per variant
    (the LPIPS weights from `cache`, see `vtok data prepare`)."""
    from vtok.eval import psnr
    from vtok.losses import LPIPS

    lpips = LPIPS("alex", cache=cache)
    tok, out = subject.model, {}
    with torch.inference_mode():
        for v in rows:
            with reduced(subject, v, layer):
                recon = torch.cat([tok.decode(tok.encode(b)) for b in images.split(batch)])
            lp = torch.cat([lpips(a, b) for a, b in zip(images.split(batch),
                                                         recon.split(batch))])
            out[v] = {"psnr": psnr(images, recon).mean().item(), "lpips_alex": lp.mean().item()}
            if progress:
                progress()
    return out


def classifier_agreement(subject: Subject, rows: list[Variant], center: Tensor, crops: Tensor,
                         layer: int | None, batch: int = 16,
                         progress: Callable[[], None] | None = None
                         ) -> dict[Variant, dict[str, float]]:
    """Share of images whose top-1 class under each variant is the unreduced model's, on the
    centre views and on the random crops."""
    from vtok.eval.classifier import top1_agreement

    model = subject.model

    def logits(x: Tensor) -> Tensor:
        return torch.cat([model(b) for b in x.split(batch)])

    with torch.inference_mode():
        ref_center, ref_crops = logits(center), logits(crops)
        out = {}
        for v in rows:
            with reduced(subject, v, layer):
                c, r = logits(center), logits(crops)
            out[v] = {"agreement_center": top1_agreement(c, ref_center),
                      "agreement_random": top1_agreement(r, ref_crops)}
            if progress:
                progress()
    return out
