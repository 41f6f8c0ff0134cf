"""`vtok reduce-bench --vlm DIR`: visual-token reduction on a trained vision-language model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run_vlm(args: Any, methods: list[str], keeps: list[float]) -> int:
    """Bench every method x keep x place on the VLM folder `args.vlm` (see vlm_bench)."""
    import torch
    from tqdm import tqdm

    from vtok.cli.reduce_bench_cmd import torch_threads
    from vtok.eval import vlm_bench
    from vtok.eval.reduce_bench import parse_method
    from vtok.eval.reduce_fidelity import random_crops, read_photos
    from vtok.eval.vlm_model import QUESTIONS, VlmLoadError, load_vlm
    from vtok.files import atomic_write_text

    places = list(dict.fromkeys(args.where or vlm_bench.PLACES))
    bad = [p for p in places if p not in vlm_bench.PLACES]
    try:
        if bad:
            raise ValueError(f"--where {bad[0]!r}: choose from {', '.join(vlm_bench.PLACES)}")
        model, tokenizer = load_vlm(args.vlm)
        photos = read_photos(args.images, args.limit, args.cache)
    except (ValueError, OSError, VlmLoadError) as err:
        print(f"vtok reduce-bench: {err}", file=sys.stderr)
        return 2
    size = model.config.vision_config.image_size
    crops = random_crops(photos, size, args.random_crops, seed=1)
    layer = 2 if args.layer is None else args.layer
    named = list(dict.fromkeys([*methods, *vlm_bench.BASELINES]))
    rows = vlm_bench.vlm_variants([parse_method(m) for m in named], keeps, places, layer)
    steps = len(rows) * (1 + len(args.batch_sizes) * args.repeats)
    with torch_threads(args.threads):
        with tqdm(total=steps, desc="reduce-bench vlm", unit="step", disable=None) as bar:
            results = vlm_bench.run_vlm_bench(model, tokenizer, rows, crops, QUESTIONS[0],
                                              args.batch_sizes, args.repeats, bar.update)
        used = torch.get_num_threads()
    summary = {
        "subject": {"name": str(args.vlm), "kind": "vlm", "weights": "trained",
                    "visual_tokens": model.config.image_seq_length,
                    "attention": model.config.text_config._attn_implementation},
        "question": QUESTIONS[0], "crops": int(crops.shape[0]), "crop_size": size,
        "photos": str(args.images) if args.images else "default photos, val split",
        "threads": used, "batch_sizes": args.batch_sizes, "repeats": args.repeats,
        "layer": layer, "keeps": keeps, "places": places,
        "agreement": "greedy answer equal to the unreduced model's answer",
        "first_token_kl": "KL(unreduced || reduced) of the first answer token, nats",
        "timing": "prefill (image encoding + one forward over the prompt); speed-up: median "
                  "over rounds of the unreduced model's time just before / the variant's",
        "rows": results,
    }
    print(table(summary))
    out_json = args.json or args.out / "results.json"
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_json, json.dumps(summary, indent=2) + "\n")
        plot(summary, args.out / "agreement.png")
    except OSError as err:
        print(f"vtok reduce-bench: cannot write results ({err})", file=sys.stderr)
        return 1
    print(f"wrote {out_json} and {args.out / 'agreement.png'}")
    return 0


def table(summary: dict) -> str:
    sizes = summary["batch_sizes"]
    head = f"{'variant':34s} {'kept':>5s} {'agree':>6s} {'KL':>7s}" + "".join(
        f" {'x b' + str(b):>7s}" for b in sizes)
    lines = [head]
    for row in summary["rows"]:
        if "error" in row:
            lines.append(f"{row['variant']:34s} error: {row['error']}")
            continue
        speed = "".join(f" {row.get(f'speedup_b{b}', float('nan')):7.2f}" for b in sizes)
        lines.append(f"{row['variant']:34s} {row['visual_kept']:5.2f} {row['agreement']:6.3f} "
                     f"{row['first_token_kl']:7.4f}{speed}")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    """Agreement against keep ratio, one panel per place, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vtok.files import atomic_write

    places = summary["places"]
    fig, axes = plt.subplots(1, len(places), figsize=(4.5 * len(places), 3.6), squeeze=False)
    for ax, place in zip(axes[0], places, strict=True):
        lines: dict[str, list[tuple[float, float]]] = {}
        for row in summary["rows"]:
            if row.get("where") == place and "error" not in row:
                lines.setdefault(row["method"], []).append((row["keep"], row["agreement"]))
        for method, points in sorted(lines.items()):
            points.sort()
            style = "--" if method in ("random", "pool2d", "stride") else "-"  # baselines
            ax.plot(*zip(*points, strict=True), style, marker="o", label=method)
        ax.set_title(f"reduced at: {place}")
        ax.set_xlabel("visual tokens kept (ratio)")
        ax.set_ylabel("answer agreement with unreduced")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
