"""vtok quantizers side by side with vector-quantize-pytorch (vqpt) 1.32.0, in one run.

1. Speed: forward + backward on 32x256 vectors in training mode, 2 CPU threads, median of
   repeated runs, for vq (8192 x 32, 16384 x 8), lfq with the entropy loss (2^14 codes),
   fsq ([8, 5, 5, 5]) and rvq (4 x 1024). vq runs with the rotation trick on both sides
   (vqpt's default). Also checks that, given the same codebook, both pick the same codes.
2. Codebook usage: the same small conv autoencoder trained on random 64x64 crops of the
   scikit-image photos (32 crops x 16x16 latents = 8192 vectors a step) for a fixed number of
   steps, with an 8192-code vq: ours with default options, vqpt with its recommended
   ones (kmeans_init=True, threshold_ema_dead_code=2). Usage = share of codes chosen at least
   once on 131,072 vectors from fresh crops.

Usage: python benchmarks/quant_vs_vqpt.py [--steps 300] [--skip-usage]
Needs: pip install -e ".[bench]"; writes benchmarks/results/quant_vs_vqpt.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import vector_quantize_pytorch as vqpt
from torch import nn

from vtok.quant import create_quantizer

OUT = Path(__file__).parent / "results" / "quant_vs_vqpt.json"


def median_seconds(step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step(module, x, ours: bool):
    def step():
        x.grad = None
        if ours:
            out = module(x)
            total = out.z_q.square().sum() + out.loss
        else:
            result = module(x)
            total = result[0].square().sum() + result[-1].sum()
        total.backward()

    return step


SPEED_CASES = {
    "vq 8192x32": (
        32,
        lambda: create_quantizer("vq", dim=32, codebook_size=8192, rotation_trick=True),
        lambda: vqpt.VectorQuantize(dim=32, codebook_size=8192),
    ),
    "vq 16384x8": (
        8,
        lambda: create_quantizer("vq", dim=8, codebook_size=16384, rotation_trick=True),
        lambda: vqpt.VectorQuantize(dim=8, codebook_size=16384),
    ),
    "lfq 2^14 +entropy": (
        14,
        lambda: create_quantizer("lfq", dim=14, entropy_loss_weight=0.1),
        lambda: vqpt.LFQ(dim=14, codebook_size=2**14, entropy_loss_weight=0.1),
    ),
    "fsq 8-5-5-5": (
        4,
        lambda: create_quantizer("fsq", levels=[8, 5, 5, 5]),
        lambda: vqpt.FSQ(levels=[8, 5, 5, 5]),
    ),
    "rvq 4x1024": (
        32,
        lambda: create_quantizer("rvq", dim=32, num_quantizers=4, codebook_size=1024,
                                 rotation_trick=True),
        lambda: vqpt.ResidualVQ(dim=32, num_quantizers=4, codebook_size=1024),
    ),
}


def same_codes(dim: int, k: int) -> dict:
    """Give vqpt our codebook and compare nearest-code choices on fresh inputs (eval mode)."""
    torch.manual_seed(1)
    ours = create_quantizer("vq", dim=dim, codebook_size=k, kmeans_init=False).eval()
    peer = vqpt.VectorQuantize(dim=dim, codebook_size=k).eval()
    peer._codebook.embed.data.copy_(ours.codebook[None])
    peer._codebook.initted.data.fill_(True)
    x = torch.randn(32, 256, dim)
    with torch.no_grad():
        a, b = ours(x).indices.reshape(-1), peer(x)[1].reshape(-1)
    differ = (a != b).nonzero().squeeze(1)
    # a differing pick must be an fp32 tie: both codes equally near in float64
    xs, cb = x.reshape(-1, dim).double()[differ], ours.codebook.double()
    gap = ((xs - cb[a[differ]]).norm(dim=1) - (xs - cb[b[differ]]).norm(dim=1)).abs()
    return {
        "vectors": a.numel(),
        "identical": int((a == b).sum()),
        "max_float64_gap_where_different": float(gap.max()) if differ.numel() else 0.0,
    }


def run_speed() -> list[dict]:
    rows = []
    for name, (dim, make_ours, make_peer) in SPEED_CASES.items():
        x = torch.randn(32, 256, dim, requires_grad=True)
        torch.manual_seed(0)
        ours = make_ours().train()
        torch.manual_seed(0)
        peer = make_peer().train()
        t_peer = median_seconds(train_step(peer, x, ours=False), repeats=5)
        t_ours = median_seconds(train_step(ours, x, ours=True), repeats=10)
        row = {"case": name, "vqpt_s": t_peer, "vtok_s": t_ours, "speedup": t_peer / t_ours}
        if name.startswith("vq "):
            row["assignments"] = same_codes(dim, ours.codebook_size)
        rows.append(row)
        print(f"{name:20s} vqpt {t_peer:8.4f} s   vtok {t_ours:8.4f} s   {t_peer / t_ours:7.1f}x"
              + (f"   same codes {row['assignments']['identical']}/"
                 f"{row['assignments']['vectors']}" if "assignments" in row else ""), flush=True)
    return rows


def photos() -> list[torch.Tensor]:
    import skimage.data as data

    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(),
              data.hubble_deep_field(), data.retina(), data.immunohistochemistry(),
              *data.stereo_motorcycle()[:2]]
    return [torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255 for im in images]


def random_crops(images, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    crops = []
    for _ in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=gen))]
        top = int(torch.randint(im.shape[1] - size + 1, (1,), generator=gen))
        left = int(torch.randint(im.shape[2] - size + 1, (1,), generator=gen))
        crops.append(im[:, top : top + size, left : left + size])
    return torch.stack(crops)


class AutoEncoder(nn.Module):
    """64x64 RGB -> 16x16x32 latents -> 64x64 RGB, around a quantizer."""

    def __init__(self, quantizer: nn.Module, ours: bool) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 64, 4, 2, 1), nn.GELU(), nn.Conv2d(64, 64, 4, 2, 1), nn.GELU(),
            nn.Conv2d(64, 32, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(32, 64, 3, 1, 1), nn.GELU(), nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(64, 3, 4, 2, 1))
        self.quantizer, self.ours = quantizer, ours

    def forward(self, x):
        z = self.encoder(x).permute(0, 2, 3, 1)
        b, h, w, d = z.shape
        z = z.reshape(b, h * w, d)  # [B, N, D]: the layout both libraries take
        if self.ours:
            out = self.quantizer(z)
            z_q, idx, qloss = out.z_q, out.indices, out.loss
        else:
            z_q, idx, qloss = self.quantizer(z)
        recon = self.decoder(z_q.reshape(b, h, w, d).permute(0, 3, 1, 2))
        return recon, idx, qloss.sum()


def run_usage(steps: int) -> list[dict]:
    images = photos()
    eval_crops = random_crops(images, 512, 64, torch.Generator().manual_seed(123))
    setups = {
        "vtok vq (defaults)": lambda: create_quantizer("vq", dim=32, codebook_size=8192),
        "vqpt VectorQuantize (kmeans_init, threshold_ema_dead_code=2)": lambda: (
            vqpt.VectorQuantize(dim=32, codebook_size=8192, kmeans_init=True,
                                threshold_ema_dead_code=2)),
    }
    rows = []
    for name, make in setups.items():
        torch.manual_seed(0)
        model = AutoEncoder(make(), ours=name.startswith("vtok")).train()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(7)
        start = time.perf_counter()
        for step in range(steps):
            x = random_crops(images, 32, 64, gen)
            recon, _, qloss = model(x)
            loss = (recon - x).square().mean() + qloss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 50 == 0:
                print(f"  {name[:12]} step {step + 1}/{steps} loss {loss.item():.4f}", flush=True)
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            outs = [model(eval_crops[i : i + 64]) for i in range(0, 512, 64)]
        used = torch.unique(torch.cat([o[1].reshape(-1) for o in outs])).numel()
        recon = torch.cat([o[0] for o in outs]).clamp(0, 1)
        mse = (recon - eval_crops).square().flatten(1).mean(1)
        psnr = (10 * torch.log10(1 / mse)).mean().item()
        row = {"setup": name, "steps": steps, "usage": used / 8192, "psnr": psnr,
               "train_seconds": seconds}
        rows.append(row)
        print(f"{name:64s} usage {used / 8192:7.2%}  PSNR {psnr:5.2f} dB  "
              f"train {seconds:6.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-usage", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, vector-quantize-pytorch {vqpt_version()}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("forward + backward, 32x256 vectors, median seconds:")
    result = {"speed": run_speed()}
    if not args.skip_usage:
        print(f"codebook usage after {args.steps} training steps, 8192 codes:")
        result["usage"] = run_usage(args.steps)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(OUT)
    print(f"wrote {OUT}")


def vqpt_version() -> str:
    from importlib.metadata import version

    return version("vector-quantize-pytorch")


if __name__ == "__main__":
    main()
