"""Check vtok on a CUDA machine: training steps in bf16 with the GAN on, and shipped tokenizers
giving the same tokens on the GPU as on the CPU. Prints one line per check and a JSON summary;
exits 1 if a check fails. CI has no GPU, so this is run by hand:

    python scripts/gpu_check.py --data DIR_OF_IMAGES [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import vtok
from vtok.codec import RawCoder, VtokFile, from_vtok, to_vtok
from vtok.data.datasets import center_crop, image_items
from vtok.models import Tokens
from vtok.train import TrainConfig, train


def train_check(preset: str, data: str, crop: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(preset=preset, data=data, out=out, steps=steps, batch_size=8,
                             crop_size=crop, gan_start=steps // 2, warmup=5, log_every=5,
                             sample_every=steps, checkpoint_every=steps, progress=False)
        start = time.perf_counter()
        summary = train(config)
        seconds = time.perf_counter() - start
        last = (Path(out) / "log.csv").read_text().strip().splitlines()[-1]
        model = vtok.load(Path(out) / "model")
        finite = all(torch.isfinite(p).all() for p in model.parameters())
    ok = summary["skipped_steps"] == 0 and finite
    return {"check": f"train {preset}", "ok": ok, "steps": steps,
            "steps_per_s": steps / seconds, "last_log": last}


def token_check(name: str, images: torch.Tensor) -> dict:
    tok = vtok.load(name)
    cpu = tok.encode(images)
    gpu_tok = vtok.load(name).cuda()
    gpu = gpu_tok.encode(images.cuda())
    same = (cpu.indices == gpu.indices.cpu()).float().mean().item()
    # the same tokens decoded on both devices (near-tie codes may differ between the devices'
    # nearest-code searches, and a differing code changes its pixels by design)
    on_gpu = Tokens(cpu.indices.cuda(), cpu.token_shape, cpu.image_size, cpu.tokenizer_id,
                    cpu.num_tokens)
    diff = (tok.decode(cpu) - gpu_tok.decode(on_gpu).cpu()).abs().max().item()
    # a .vtok round trip checked against the tokenizer living on the GPU
    coder = RawCoder(tok.codebook_size)
    batch = [Tokens(gpu.indices[i : i + 1].cpu(), gpu.token_shape, gpu.image_size,
                    gpu.tokenizer_id, gpu.num_tokens) for i in range(len(images))]
    data = to_vtok(batch, tok.codebook_size, coder).to_bytes()
    back = from_vtok(VtokFile.from_bytes(data), coder, gpu_tok)
    exact = all(torch.equal(a.indices, b.indices) for a, b in zip(back, batch))
    return {"check": f"tokens {name} cpu vs cuda", "ok": same >= 0.99 and diff < 0.02 and exact,
            "same_tokens": same, "max_decode_diff": diff, "vtok_round_trip": exact}


def entropy_check(name: str, images: torch.Tensor) -> dict:
    """Entropy-coded on the CPU, the prior's frequencies recomputed on the GPU: the tokens
    must come back exactly (the integer prior is bit-exact across devices)."""
    from vtok.codec.entropy import EntropyCoder
    from vtok.codec.intprior import IntegerPrior
    from vtok.models.presets import tokenizer_dir

    tok = vtok.load(name)
    directory = tokenizer_dir(name)
    cpu = EntropyCoder(IntegerPrior.load(directory))
    gpu = EntropyCoder(IntegerPrior.load(directory, device="cuda"))
    grids = list(tok.encode(images).indices.numpy())
    payloads = cpu.encode_batch(grids)
    back = gpu.decode_batch(payloads, grids[0].shape)
    exact = all((a == b).all() for a, b in zip(back, grids))
    same_bytes = gpu.encode_batch(grids) == payloads
    return {"check": f"entropy {name} cpu-encoded, cuda-decoded", "ok": exact and same_bytes,
            "exact_tokens": exact, "same_payloads": same_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    results = []
    for preset, crop in [("test-conv2d", 64), ("test-titok", 32), ("conv2d-f8-cpu", 128),
                         ("titok-cpu", 256)]:
        results.append(train_check(preset, args.data, crop, args.steps))
        print(json.dumps(results[-1]), flush=True)
    images = torch.stack([center_crop(item.read(), 256) for item in image_items(args.data)[:8]])
    for entry in vtok.list_pretrained():
        results.append(token_check(entry["name"], images))
        print(json.dumps(results[-1]), flush=True)
        results.append(entropy_check(entry["name"], images))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    failed = [r["check"] for r in results if not r["ok"]]
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
