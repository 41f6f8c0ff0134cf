"""Prefill time and peak memory of a LLaVA-1.5-shaped model with and without token reduction.

Random weights: this measures shape only (how long a prefill takes and how much memory it
needs), never answers. Batch 8, 576 visual tokens per image (CLIP ViT-L/14 at 336 px), a
short text prompt around each image. Every configuration runs in its own process, so the
peak memory of one cannot hide behind another's: on a GPU the peak allocated by torch during
the prefill, on the CPU the growth of the process's peak resident memory over what the built
model and inputs already held.

Shapes: `--shape llava-1.5-7b` is the real one (LM: 32 layers, width 4096, 32 heads, MLP
11008; vision: 24 layers, width 1024), for a GPU. `--shape cpu` (default) scales it down so
that it fits and runs on a small CPU: LM 8 layers, width 1024, 16 heads, MLP 2816; vision 4
layers, width 256; the token counts (576 per image, keep 64) and the batch stay the real ones.

Usage: python benchmarks/vlm_speed.py [--shape cpu|llava-1.5-7b] [--device cpu|cuda]
       [--repeats 3] [--json benchmarks/results/vlm_speed.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "vlm_speed.json"
SHAPES = {
    "cpu": {"lm": (8, 1024, 16, 2816), "vision": (4, 256, 4, 1024)},
    "llava-1.5-7b": {"lm": (32, 4096, 32, 11008), "vision": (24, 1024, 16, 4096)},
}
BATCH, TEXT_BEFORE, TEXT_AFTER, IMAGE_TOKENS, KEEP_TOKENS = 8, 35, 20, 576, 64
# (label, attach arguments or None for the unreduced model)
CONFIGS = [
    ("unreduced", None),
    ("fastv in the LLM, layer 2", {"method": "fastv", "where": "llm", "layer": 2}),
    ("random in the LLM, layer 2", {"method": "random", "where": "llm", "layer": 2}),
    ("pool2d before the projector", {"method": "pool2d", "where": "vision"}),
    ("random before the projector", {"method": "random", "where": "vision"}),
    ("divprune after the projector", {"method": "divprune", "where": "projector"}),
]


def build(shape: str, device: str, dtype: torch.dtype):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    lm_layers, width, heads, mlp = SHAPES[shape]["lm"]
    v_layers, v_width, v_heads, v_mlp = SHAPES[shape]["vision"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=v_width, intermediate_size=v_mlp,
                                       num_hidden_layers=v_layers, num_attention_heads=v_heads,
                                       image_size=336, patch_size=14),
        text_config=LlamaConfig(vocab_size=32064, hidden_size=width, intermediate_size=mlp,
                                num_hidden_layers=lm_layers, num_attention_heads=heads,
                                max_position_embeddings=4096, pad_token_id=0),
        image_token_id=32000, vision_feature_layer=-2, projector_hidden_act="gelu")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config)
    model = model.to(dtype).eval()
    model.set_attn_implementation("sdpa")
    return model


def inputs(device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text = lambda n: torch.randint(1, 32000, (BATCH, n), generator=g)  # noqa: E731
    ids = torch.cat([text(TEXT_BEFORE), torch.full((BATCH, IMAGE_TOKENS), 32000),
                     text(TEXT_AFTER)], dim=1)
    pixels = torch.rand(BATCH, 3, 336, 336, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": pixels.to(device, dtype)}


def run_one(shape: str, device: str, label: str, repeats: int) -> dict:
    """Measure one configuration in this process (called in a child process)."""
    from vtok.reduce import attach

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, batch = build(shape, device, dtype), inputs(device, dtype)
    options = dict(CONFIGS)[label]
    handle = None
    if options is not None:
        handle = attach(model, keep=KEEP_TOKENS / IMAGE_TOKENS, **options)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        model(**batch, use_cache=True)  # warm-up (on the CPU its peak is the prefill's peak)
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = model(**batch, use_cache=True)
            sync()
            times.append(time.perf_counter() - start)
            cached = out.past_key_values.get_seq_length(len(model.model.language_model.layers) - 1)
            del out
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss, 0) / 1024
    return {"config": label, "prefill_s": statistics.median(times), "times_s": times,
            "peak_extra_mb": peak_mb, "last_layer_cache_tokens": cached,
            "visual_tokens": None if handle is None else handle.last_counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.shape, args.device, args.one, args.repeats)))
        return 0
    rows = []
    for label, _ in CONFIGS:
        cmd = [sys.executable, __file__, "--shape", args.shape, "--device", args.device,
               "--repeats", str(args.repeats), "--one", label]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{label:32s} prefill {rows[-1]['prefill_s']:7.3f} s   peak +"
              f"{rows[-1]['peak_extra_mb']:8.1f} MB   cache {rows[-1]['last_layer_cache_tokens']}",
              flush=True)
    base = rows[0]
    for row in rows:
        row["speedup"] = base["prefill_s"] / row["prefill_s"]
        row["memory_ratio"] = row["peak_extra_mb"] / max(base["peak_extra_mb"], 1e-9)
    report = {"shape": args.shape, "shapes": SHAPES[args.shape], "device": args.device,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": BATCH,
              "image_tokens": IMAGE_TOKENS, "keep_tokens": KEEP_TOKENS,
              "text_tokens": TEXT_BEFORE + TEXT_AFTER, "attention": "sdpa",
              "weights": "random (shape only)", "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    for row in rows:
        print(f"{row['config']:32s} speed-up {row['speedup']:5.2f}x   memory "
              f"{row['memory_ratio']:5.2f}x of unreduced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
