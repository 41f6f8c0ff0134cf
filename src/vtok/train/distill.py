"""Teach a conv-latent titok a trained conv2d tokenizer's codes (TiTok's proxy-code stage).

The titok (`pixel_codec="conv"`) takes the teacher's encoder, decoder and codebook, frozen.
Its transformers learn to squeeze the frozen encoder's latent grid into up to K ordered
tokens from which the decoder predicts the teacher's code for every grid cell: the squared
error of the predicted codes' softmax mean (what soft decoding feeds the conv decoder; near
codes count as nearly right) plus a little cross-entropy. Nothing is decoded to pixels while
training, so a step costs only the two transformers: this is what makes a 1D tokenizer
trainable on a CPU. Crops are encoded by the
teacher once and reused. Nested dropout keeps a log-uniform random prefix of the tokens on
most steps (short prefixes are seen as often as long ones), which orders them coarse to fine.

    vtok.train.distill.distill(DistillConfig(teacher="conv2d-f8", out="runs/titok"))

One process; checkpoints every `save_every` steps and `resume=True` continues from the last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from vtok.data.datasets import RandomCrops, center_crop, fit_short_side, image_items
from vtok.data.images import ImageReadError
from vtok.data.photos import photo_paths
from vtok.files import atomic_write, atomic_write_text
from vtok.models import Tokenizer, create_tokenizer, load
from vtok.models.titok import TiTokTokenizer
from vtok.train import checkpoint as ckpt
from vtok.train import core
from vtok.train.logs import RunLog

TEACHER_CACHE = "teacher-codes.safetensors"


@dataclass
class DistillConfig:
    teacher: str = "conv2d-f8"  # a shipped conv2d name or tokenizer directory
    preset: str = "titok-f8-cpu"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's fields
    data: str | None = None  # None = the default photos' train split
    val_data: str | None = None  # scored every save_every steps; None = the val split
    cache: str | None = None  # folder of `vtok data prepare` (default photos); None = default
    out: str = "runs/distill"
    steps: int = 3000
    stop_at: int | None = None  # end this invocation early (the schedule still spans `steps`)
    batch_size: int = 32
    crops: int = 4096  # random crops encoded by the teacher once, drawn from every step
    crop_size: int = 256
    min_scale: float = 0.5
    lr: float = 4e-4
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    full_tokens: float = 0.2  # share of steps that keep all K tokens (the rest: a prefix)
    # the first steps pass the latents unquantized, so the decoder learns to read the tokens
    # before the quantizer is seeded (by k-means) from latents that already carry the image
    continuous_steps: int = 0
    ce_weight: float = 0.1  # cross-entropy to the teacher's code indices
    mse_weight: float = 1.0  # squared error of the softmax-mean code to the teacher's code
    seed: int = 0
    log_every: int = 25
    save_every: int = 250
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ["steps", "batch_size", "crops", "crop_size", "log_every", "save_every"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DistillConfig.{name} must be an integer >= 1, got {value!r}")
        value = self.continuous_steps
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.steps:
            raise ValueError(f"DistillConfig.continuous_steps must be an integer in "
                             f"[0, steps={self.steps}), got {value!r}")
        ranges = {"lr": (0, 1), "min_lr_ratio": (0, 1), "weight_decay": (0, 10),
                  "grad_clip": (0, 1e6), "ce_weight": (0, 1e6), "mse_weight": (0, 1e6),
                  "ema_decay": (0, 0.99999), "full_tokens": (0, 1),
                  "min_scale": (1e-3, 1)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"DistillConfig.{name} must be a number in [{low}, {high}], "
                                 f"got {value!r}")

        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"DistillConfig.stop_at must be in [1, steps={self.steps}], "
                             f"got {self.stop_at!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def same_run(self) -> dict[str, Any]:
        """The fields a resumed run must share with the one it continues."""
        return {k: v for k, v in self.to_dict().items()
                if k not in ("stop_at", "progress", "cache")}


def student_from_teacher(config: DistillConfig, teacher: Tokenizer) -> TiTokTokenizer:
    """A fresh titok from the preset holding the teacher's conv pair and codebook, frozen."""
    if teacher.architecture != "conv2d":
        raise ValueError(f"the teacher must be a conv2d tokenizer, not {teacher.architecture!r}")
    student = create_tokenizer(config.preset, **config.model)
    if student.architecture != "titok" or student.config.pixel_codec != "conv":
        raise ValueError(f"preset {config.preset!r} is not a titok with pixel_codec='conv'")
    codes = teacher.quantizer.decode(torch.arange(teacher.codebook_size)).detach()
    if tuple(student.grid_codebook.shape) != tuple(codes.shape):
        raise ValueError(f"the student predicts {tuple(student.grid_codebook.shape)} grid codes "
                         f"but the teacher has {tuple(codes.shape)}")
    try:
        student.pixel_encoder.load_state_dict(teacher.encoder.state_dict())
        student.pixel_decoder.load_state_dict(teacher.decoder.state_dict())
    except RuntimeError as err:
        raise ValueError(f"the student's conv pair does not fit the teacher's: {err}") from None
    student.grid_codebook.data.copy_(codes)
    for part in (student.pixel_encoder, student.pixel_decoder):
        part.requires_grad_(False)
    student.grid_codebook.requires_grad_(False)
    return student


@torch.no_grad()
def teacher_codes(teacher: Tokenizer, images: Tensor, batch: int = 16) -> tuple[Tensor, Tensor]:
    """(encoder latent grid `[N, D, h, w]`, code indices `[N, h, w]`) of `images`."""
    grids, codes = [], []
    for part in images.split(batch):
        z = teacher.encoder(part * 2 - 1)
        grids.append(z)
        codes.append(teacher.quantizer(z.permute(0, 2, 3, 1)).indices)
    return torch.cat(grids), torch.cat(codes)


def _training_codes(config: DistillConfig, teacher: Tokenizer, run: Path) -> dict[str, Tensor]:
    cache = run / TEACHER_CACHE
    made_by = {"teacher": teacher.tokenizer_id, "data": str(config.data), "seed": config.seed,
               "crops": config.crops, "crop_size": config.crop_size,
               "min_scale": config.min_scale}
    made_by = {k: str(v) for k, v in made_by.items()}
    if cache.exists():
        with safe_open(str(cache), "pt") as f:
            same = f.metadata() == made_by
        if same:
            return load_file(str(cache))
    items = image_items(config.data if config.data else photo_paths("train", config.cache))
    crops = RandomCrops(items, config.crop_size, seed=config.seed, min_scale=config.min_scale)
    from tqdm import tqdm

    grids, codes = [], []
    starts = range(0, config.crops, 64)  # the teacher's pass takes minutes: show it
    for start in tqdm(starts, desc="teacher codes", unit="batch", disable=not config.progress):
        images = torch.stack([crops[i] for i in range(start, min(config.crops, start + 64))])
        g, c = teacher_codes(teacher, images)
        grids.append(g)
        codes.append(c)
    saved = {"grids": torch.cat(grids).contiguous(), "codes": torch.cat(codes).contiguous()}
    atomic_write(cache, lambda p: save_file(saved, str(p), metadata=made_by))
    return saved


def _val_codes(config: DistillConfig, teacher: Tokenizer) -> tuple[Tensor, Tensor]:
    items = image_items(config.val_data if config.val_data else photo_paths("val", config.cache))
    size, images = config.crop_size, []
    for item in items:
        try:
            images.append(center_crop(fit_short_side(item.read(), size), size))
        except ImageReadError as err:
            warnings.warn(f"skipping unreadable validation image: {err}", stacklevel=2)
    if not images:
        raise ValueError("distillation needs at least one readable validation image")
    return teacher_codes(teacher, torch.stack(images))


def prefix_length(step: int, config: DistillConfig, k_max: int) -> int:
    """All K tokens on a `full_tokens` share of steps, else a log-uniform prefix in [1, K]."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    if float(torch.rand((), generator=gen)) < config.full_tokens:
        return k_max
    u = float(torch.rand((), generator=gen))
    return min(k_max, int(math.exp(u * math.log(k_max + 1))))


def code_loss(model: TiTokTokenizer, grids: Tensor, codes: Tensor, k: int,
              config: DistillConfig, quantize: bool = True) -> tuple[Tensor, dict[str, float]]:
    """(loss, metrics) of predicting the teacher's codes from k tokens: cross-entropy, plus
    the squared distance of the predicted codes' softmax mean (what soft decoding feeds the
    conv decoder) to the teacher's code vectors, relative to their variance. quantize=False
    passes the encoder's latents to the decoder unquantized."""
    latents = model.latents_of(grids)
    out = model.quantizer(latents) if quantize else None
    cell = model.cell
    grid = (grids.shape[-2] // cell, grids.shape[-1] // cell)
    logits = model.decode_grid((out.z_q if quantize else latents)[:, :k], grid)
    table = model.grid_codebook
    target = F.embedding(codes, table).permute(0, 3, 1, 2)
    soft = torch.einsum("bkhw,kd->bdhw", logits.softmax(1), table)
    mse = F.mse_loss(soft, target) / table.var(0).sum().div(table.shape[1])
    ce = F.cross_entropy(logits, codes)
    loss = config.ce_weight * ce + config.mse_weight * mse
    metrics = {"ce": ce.item(), "mse": mse.item(),
               "accuracy": (logits.argmax(1) == codes).float().mean().item(),
               "usage": 0.0, "perplexity": 0.0}
    if out is not None:
        loss = loss + out.loss
        metrics.update(usage=out.metrics.get("usage", 0.0),
                       perplexity=out.metrics.get("perplexity", 0.0))
    return loss, metrics


def _lr(step: int, config: DistillConfig) -> float:
    return core.lr_factor(step, config.steps, config.warmup, config.min_lr_ratio)


VAL_COUNTS = (8, 32, 128)


@torch.no_grad()
def _val_scores(model: TiTokTokenizer, val: tuple[Tensor, Tensor], config: DistillConfig,
                quantize: bool = True) -> dict[str, float]:
    model.eval()
    result = {}
    for k in VAL_COUNTS:
        _, metrics = code_loss(model, val[0], val[1], min(k, model.max_tokens), config,
                               quantize)
        result[f"val_mse_{k}"] = metrics["mse"]
        result[f"val_acc_{k}"] = metrics["accuracy"]
    return result


def latest_student(run_dir: str | Path) -> Tokenizer:
    """The exported student of a finished run, else the EMA weights of its latest checkpoint
    (so a run can be evaluated while it trains)."""
    run_dir = Path(run_dir)
    if (run_dir / "model" / "config.json").exists():
        return Tokenizer.from_pretrained(run_dir / "model")
    last = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise ValueError(f"{run_dir}: no exported model and no checkpoint")
    tensors, state = ckpt.load_checkpoint(last)
    config = DistillConfig(**state["config"])
    model = create_tokenizer(config.preset, **config.model)
    model.load_state_dict(ckpt.module_state(tensors, "ema"))
    return model.eval()


def distill(config: DistillConfig, resume: bool = False) -> dict[str, Any]:
    """Train; the EMA student is exported to `out/model` (config.json + model.safetensors)."""
    torch.manual_seed(config.seed)
    run = Path(config.out)
    run.mkdir(parents=True, exist_ok=True)
    teacher = load(config.teacher).eval()
    model = student_from_teacher(config, teacher).train()
    ema = core.ema_copy(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(core.param_groups(model, config.weight_decay), lr=config.lr,
                            betas=(0.9, 0.99))
    start, seconds = 0, 0.0
    last = ckpt.latest_checkpoint(run / "checkpoints") if resume else None
    if last is not None:
        tensors, state = ckpt.load_checkpoint(last)
        if DistillConfig(**state["config"]).same_run() != config.same_run():
            raise ValueError(f"{run}: the checkpoint was made with another DistillConfig")
        model.load_state_dict(ckpt.module_state(tensors, "model"))
        ema.load_state_dict(ckpt.module_state(tensors, "ema"))
        ckpt.restore_optimizer(opt, "opt", tensors, state)
        start, seconds = state["step"], state["seconds"]
    atomic_write_text(run / "distill.json", json.dumps(config.to_dict(), indent=2) + "\n")

    data = _training_codes(config, teacher, run)
    val = _val_codes(config, teacher)
    log = RunLog(run)
    bar = core.progress_bar(config.progress, config.steps, "distill", initial=start)
    began, rows = time.time(), []
    stop = config.stop_at or config.steps
    for step in range(start, stop):
        for group in opt.param_groups:
            group["lr"] = config.lr * _lr(step, config)
        gen = torch.Generator().manual_seed(config.seed * 7_919 + step)
        pick = torch.randint(config.crops, (config.batch_size,), generator=gen)
        k = prefix_length(step, config, model.max_tokens)
        model.train()
        quantize = step >= config.continuous_steps
        if step == config.continuous_steps > 0 and hasattr(model.quantizer, "initialized"):
            model.quantizer.initialized.fill_(False)  # seed the codes from today's latents
        loss, metrics = code_loss(model, data["grids"][pick], data["codes"][pick].long(), k,
                                  config, quantize)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        opt.step()
        core.update_ema(ema, model, step, config.ema_decay)
        rows.append({"loss": loss.item(), "tokens": k, **metrics})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(mse=f"{metrics['mse']:.3f}", acc=f"{metrics['accuracy']:.3f}", k=k)
        done = step + 1
        save = done % config.save_every == 0 or done == stop
        if done % config.log_every == 0 or save:
            mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
            # every row has the validation columns (the log's columns are fixed by its first)
            nan = float("nan")
            mean.update(_val_scores(ema, val, config, quantize) if save
                        else {f"val_{m}_{k}": nan for k in VAL_COUNTS for m in ("mse", "acc")})
            log.write(done, {**mean, "lr": config.lr * _lr(step, config)})
            rows = []
        if save:
            state = {"config": config.to_dict(), "seconds": seconds + time.time() - began}
            ckpt.save_checkpoint(run / "checkpoints", done,
                                 {"model": model.state_dict(), "ema": ema.state_dict()},
                                 {"opt": opt}, state, keep=2)
    if stop == config.steps:
        ema.eval().save_pretrained(run / "model")
    if bar is not None:
        bar.close()
    log.close()
    summary = {"steps_done": stop, "seconds": seconds + time.time() - began,
               **_val_scores(ema, val, config)}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
