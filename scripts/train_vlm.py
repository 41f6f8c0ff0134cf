"""Train the small LLaVA-architecture VLM (`vtok.eval.vlm_model`) to answer a question about a
photo with the EfficientNet-Lite0 teacher's ImageNet label, for reduction fidelity in a VLM.

    OMP_NUM_THREADS=2 python scripts/train_vlm.py --out runs/vlm
    ... add --resume to continue from the last checkpoint in --out
    python scripts/train_vlm.py --evaluate benchmarks/vlm      # score a saved model

The vision tower is the repo's distilled ViT (benchmarks/classifier) converted to an HF
`ViTModel`, frozen. So its features (hidden state -2 without CLS, float16) are computed once
for a fixed pool of `--crops` random crops of the train photos (cut as
scripts/train_vit_classifier.py cuts them: `RandomCrops`, zoomed out down to `--min-scale`,
flipped), each labelled by the teacher's top-1 on the very same 224x224 view, and cached in
OUT/features-*.safetensors (chunks of 1024 crops, named by split, seed and min scale only: give
another --classifier another --out). The projector and the language model learn
the answer with cross-entropy on the answer tokens only. Crop i is asked `QUESTIONS[i % 3]`,
so batches of prompts of different lengths are left-padded. AdamW, linear warmup then cosine;
checkpoints (safetensors + JSON, atomic) every `--save-every` steps; each epoch's order is
seeded, so a resumed run sees the same batches.

Scores (at checkpoints and by `--evaluate`): exact answers against the teacher's label on
`--eval-crops` crops of the val photos (never trained on) and fresh crops of the train photos
(seed 12345, which no training run uses). At checkpoints the answer is read under teacher
forcing (every answer token and `</s>` the arg-max: the greedy answer); at the end and with
`--evaluate`, by batched greedy `generate` with left padding, plus the fraction of crops whose
batched answer equals the answer generated for that crop alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vtok.data.datasets import RandomCrops, image_items
from vtok.data.photos import photo_paths
from vtok.eval import vlm_model as vlm
from vtok.eval.classifier import load_classifier, load_teacher
from vtok.files import atomic_write
from vtok.train import core
from vtok.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    module_state,
    restore_optimizer,
    save_checkpoint,
)

sys.path.insert(0, str(Path(__file__).parent))
from train_vit_classifier import SCORE_SEED, SIZE, device_name, pick_device  # noqa: E402

RUN_OPTIONS = ("crops", "min_scale", "steps", "batch_size", "lr", "weight_decay", "warmup",
               "hidden", "layers", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/vlm"))
    p.add_argument("--classifier", type=Path, default=Path("benchmarks/classifier"),
                   help="the distilled timm ViT whose weights become the vision tower")
    p.add_argument("--crops", type=int, default=10000, help="training crops in the pool")
    p.add_argument("--min-scale", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--hidden", type=int, default=128, help="language model width")
    p.add_argument("--layers", type=int, default=4, help="language model layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    p.add_argument("--eval-crops", type=int, default=256, help="crops scored per split")
    p.add_argument("--device", default="auto")
    p.add_argument("--evaluate", type=Path, default=None, metavar="DIR",
                   help="only score the VLM saved in DIR and print the scores as JSON")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if min(args.crops, args.steps, args.batch_size, args.save_every) < 1:
        p.error("--crops, --steps, --batch-size and --save-every must be >= 1")
    return args


CHUNK = 1024  # crops per cached feature file: a killed featurization loses one chunk at most


@torch.no_grad()
def featurize(model: nn.Module, teacher: nn.Module, crops: RandomCrops, first: int, count: int,
              device: torch.device, batch: int = 32) -> dict[str, Tensor]:
    """Features (float16, CPU) and the teacher's top-1 classes of crops first..first+count-1."""
    features, classes = [], []
    for start in range(first, first + count, batch):
        images = crops.batch(start, min(batch, first + count - start), device)
        features.append(vlm.image_features(model, images).half().cpu())
        classes.append(teacher(images).argmax(-1).cpu())
    return {"features": torch.cat(features), "classes": torch.cat(classes)}


def cached_features(folder: Path, name: str, count: int,
                    make: Callable[[int, int], dict[str, Tensor]]) -> dict[str, Tensor]:
    """`make(first, count)` for crops 0..count-1 in chunks, each stored in `folder`
    (atomically) the first time and read back afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    bar = core.progress_bar(True, count, f"features {name}")
    for first in range(0, count, CHUNK):
        size = min(CHUNK, count - first)
        path = folder / f"features-{name}-{first:07d}-{size}.safetensors"
        try:
            chunks.append(load_file(str(path)))
        except (OSError, SafetensorError):
            chunks.append(make(first, size))
            atomic_write(path, lambda tmp: save_file(chunks[-1], str(tmp)))
        bar.update(size)
    bar.close()
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


def questions_for(indices: Tensor) -> list[str]:
    return [vlm.QUESTIONS[i % len(vlm.QUESTIONS)] for i in indices.tolist()]


def batch_loss(model: nn.Module, tokenizer, data: dict[str, Tensor], indices: Tensor,
               answers: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of the answer tokens, and per crop whether every answer token
    (and `</s>`) is the arg-max under teacher forcing."""
    batch = vlm.prompt_batch(tokenizer, questions_for(indices),
                         [answers[c] for c in data["classes"][indices].tolist()])
    batch = {k: v.to(device) for k, v in batch.items()}
    features = data["features"][indices].to(device)
    embeds = vlm.embeds_with_features(model, batch["input_ids"], features)
    out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                labels=batch["labels"])
    labels = batch["labels"][:, 1:]
    hit = (out.logits[:, :-1].argmax(-1) == labels) | (labels == -100)
    return out.loss, hit.all(-1)


@torch.no_grad()
def teacher_forced_scores(model: nn.Module, tokenizer, sets: dict[str, dict[str, Tensor]],
                          answers: list[str], device: torch.device) -> dict[str, float]:
    model.eval()
    result = {}
    for name, data in sets.items():
        hits = [batch_loss(model, tokenizer, data, idx, answers, device)[1]
                for idx in torch.arange(len(data["classes"])).split(64)]
        result[f"acc_{name}"] = torch.cat(hits).float().mean().item()
    model.train()
    return result


@torch.no_grad()
def generation_scores(model: nn.Module, tokenizer, teacher: nn.Module, count: int,
                      min_scale: float, device: torch.device, batch: int = 16) -> dict[str, Any]:
    """Greedy answers by batched `generate` (left padding: questions of three lengths) on
    crops of the val photos and fresh crops of the train photos: accuracy against the
    teacher's label and agreement with the answer each crop gets alone."""
    answers, result = vlm.label_answers(), {}
    for split in ("val", "train"):
        crops = RandomCrops(image_items(photo_paths(split)), SIZE, seed=SCORE_SEED,
                            min_scale=min_scale)
        right = same = 0
        examples = []
        for first in range(0, count, batch):
            images = crops.batch(first, min(batch, count - first), device)
            questions = questions_for(torch.arange(first, first + images.shape[0]))
            expected = [answers[c] for c in teacher(images).argmax(-1).tolist()]
            batched = vlm.generate_answers(model, tokenizer, images, questions)
            alone = [vlm.generate_answers(model, tokenizer, images[i:i + 1], questions[i:i + 1])[0]
                     for i in range(images.shape[0])]
            right += sum(a == e for a, e in zip(batched, expected))
            same += sum(a == b for a, b in zip(batched, alone))
            examples += list(zip(expected, batched))[: max(0, 8 - len(examples))]
        result[f"accuracy_{split}"] = right / count
        result[f"batched_equals_alone_{split}"] = same / count
        result[f"examples_{split}"] = [f"teacher: {e} | model: {a}" for e, a in examples]
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python scripts/train_vlm.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    teacher = load_teacher().to(device)
    if args.evaluate is not None:
        model, tokenizer = vlm.load_vlm(args.evaluate)
        scores = generation_scores(model.to(device), tokenizer, teacher, args.eval_crops,
                                   args.min_scale, device)
        print(json.dumps(scores, indent=2))
        return 0
    answers = vlm.label_answers()
    tokenizer = vlm.build_tokenizer(answers)
    tower = vlm.vision_tower_from_timm(load_classifier(args.classifier).float())
    model = vlm.build_vlm(tokenizer, tower, hidden_size=args.hidden, layers=args.layers,
                          seed=args.seed).to(device)
    model.model.vision_tower.requires_grad_(False)

    def pool(split: str, seed: int, count: int, min_scale: float) -> dict[str, Tensor]:
        crops = RandomCrops(image_items(photo_paths(split)), SIZE, seed=seed,
                            min_scale=min_scale)
        return cached_features(args.out, f"{split}-seed{seed}-s{min_scale}", count,
                               lambda first, n: featurize(model, teacher, crops, first, n, device))

    train = pool("train", args.seed, args.crops, args.min_scale)
    held_out = {"val": pool("val", SCORE_SEED, args.eval_crops, args.min_scale),
                "train_fresh": pool("train", SCORE_SEED, args.eval_crops, args.min_scale)}
    print(f"{len(train['classes'])} training crops, "
          f"{len(set(train['classes'].tolist()))} distinct teacher classes")

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(core.param_groups(model, args.weight_decay), lr=args.lr)
    ckpt_dir = args.out / "checkpoints"
    start, elapsed, history = 0, 0.0, []
    last = latest_checkpoint(ckpt_dir) if args.resume else None
    if last is not None:
        tensors, meta = load_checkpoint(last)
        run = {k: getattr(args, k) for k in RUN_OPTIONS}
        differ = {k: (meta["run"].get(k), v) for k, v in run.items() if meta["run"].get(k) != v}
        if differ:
            raise SystemExit(f"{last} was made with other options (saved, now): {differ}")
        model.load_state_dict(module_state(tensors, "model"), strict=False)
        restore_optimizer(optimizer, "optimizer", tensors, meta)
        start, elapsed, history = meta["step"], meta["elapsed_s"], meta["history"]
        print(f"resumed from {last} at step {start}")

    per_epoch = len(train["classes"]) // args.batch_size
    bar = core.progress_bar(args.progress, args.steps, "train VLM", initial=start)
    model.train()
    segment_start, losses, hits = time.time(), [], []
    for step in range(start, args.steps):
        epoch, within = divmod(step, per_epoch)
        order = torch.randperm(len(train["classes"]),
                               generator=torch.Generator().manual_seed(args.seed * 1009 + epoch))
        indices = order[within * args.batch_size:(within + 1) * args.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * core.lr_factor(step, args.steps, args.warmup, min_ratio=0.01)
        loss, hit = batch_loss(model, tokenizer, train, indices, answers, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        losses.append(loss.item())
        hits.append(hit.float().mean().item())
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if done % args.save_every == 0 or done == args.steps:
            row = {"step": done, "loss": sum(losses) / len(losses),
                   "acc_train_batches": sum(hits) / len(hits),
                   **teacher_forced_scores(model, tokenizer, held_out, answers, device)}
            history.append(row)
            losses, hits = [], []
            elapsed += time.time() - segment_start
            segment_start = time.time()
            trained = {k: v for k, v in model.state_dict().items() if "vision_tower" not in k}
            meta = {"run": {k: getattr(args, k) for k in RUN_OPTIONS}, "elapsed_s": elapsed,
                    "history": history, "device": device_name(device)}
            save_checkpoint(ckpt_dir, done, {"model": trained}, {"optimizer": optimizer}, meta,
                            keep=args.keep)
            message = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items())
            (bar.write if bar is not None else print)(message)
    if bar is not None:
        bar.close()
    vlm.save_vlm(model.cpu().eval(), tokenizer, args.out / "model")
    model, tokenizer = vlm.load_vlm(args.out / "model")  # score what was stored (float16 weights)
    scores = generation_scores(model.to(device), tokenizer, teacher, args.eval_crops,
                               args.min_scale, device)
    summary = {"command": command, "device": device_name(device),
               "train_minutes": round(elapsed / 60, 2), "history": history, **scores}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
