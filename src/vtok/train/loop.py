"""The tokenizer training loop: plain functions over a `TrainConfig`, readable top to bottom.

Trains on images `[B, 3, H, W]`, or on clips `[B, T, 3, H, W]` when the tokenizer codes clips
(see `vtok.train.data`). Runs as one process or under torchrun (DDP; gloo on CPU, nccl on
GPU). Only rank 0 writes. Item i of step s on rank r is sample number (s * world + r) * batch
+ i of the crop (or clip) stream, so `resume` continues exactly where an interrupted run
stopped.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vtok.files import atomic_write_text
from vtok.losses.gan import DISCRIMINATORS, LeCam
from vtok.losses.perceptual import LPIPS
from vtok.losses.total import LossWeights, critic_loss, generator_loss
from vtok.models import Tokenizer, create_tokenizer
from vtok.models.base import WEIGHTS_FILE, read_config
from vtok.models.inflate import inflated_state, inflates
from vtok.models.presets import tokenizer_dir
from vtok.quant.vq import VectorQuantizer
from vtok.train import checkpoint as ckpt
from vtok.train import core
from vtok.train.config import TrainConfig
from vtok.train.data import VAL_KEYS, has_validation, training_data, validate, validation_set
from vtok.train.distributed import Context, RankGroup, any_true, mean_over_ranks, setup, teardown
from vtok.train.logs import RunLog, save_grid

# fields that may differ when resuming: they do not change what the run computes, or (out)
# say where the run folder is now, or (init, grow_codebook) were only read when it started
RESUME_MAY_CHANGE = {"cache", "steps", "stop_at", "progress", "log_every", "sample_every",
                     "checkpoint_every", "keep_checkpoints", "workers", "out", "init",
                     "grow_codebook", "max_skipped_fraction", "skip_window"}


class TrainingFailed(RuntimeError):
    """The run stopped because most of its steps were skipped (non-finite loss or gradient) or
    its weights became non-finite; its last good checkpoint is kept and no model exported."""


class StepBatches:
    """Batch sampler: the sample numbers each step reads on this rank."""

    def __init__(self, start: int, stop: int, batch: int, ctx: Context) -> None:
        self.start, self.stop, self.batch, self.ctx = start, stop, batch, ctx

    def __iter__(self):
        for step in range(self.start, self.stop):
            base = (step * self.ctx.world + self.ctx.rank) * self.batch
            yield list(range(base, base + self.batch))

    def __len__(self) -> int:
        return self.stop - self.start


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at the last step."""
    return core.lr_factor(step, config.steps, config.warmup, config.min_lr_ratio)


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    ctx = setup()
    try:
        return _train(config, resume, ctx)
    finally:
        teardown(ctx)


def _train(config: TrainConfig, resume: bool, ctx: Context) -> dict[str, Any]:
    run_dir, device = Path(config.out), ctx.device
    ckpt_dir = run_dir / "checkpoints"
    found = ckpt.list_checkpoints(ckpt_dir)
    if found and not resume:
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume to continue it "
                         f"or choose another --out")
    if resume and not found:
        raise ValueError(f"{run_dir}: nothing to resume (no checkpoint in {ckpt_dir})")

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = create_tokenizer(config.preset, **config.model)
    if config.init is not None and not resume:
        init_from(model, Path(config.init), grow=config.grow_codebook, seed=config.seed)
    model = model.to(device).train()
    freeze_except(model, config.train_only)
    ema = core.ema_copy(model) if config.ema_decay > 0 else None
    disc = lecam = None
    if config.gan_weight > 0:
        disc = DISCRIMINATORS[config.disc_kind](config.disc_channels, config.disc_layers)
        disc = disc.to(device)
        lecam = LeCam().to(device)
    lpips = (LPIPS(config.lpips_net, cache=config.cache).to(device)
             if config.lpips_weight > 0 else None)
    opt = torch.optim.AdamW(core.param_groups(model, config.weight_decay), lr=config.lr,
                            betas=(config.beta1, config.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config))
    dopt = (torch.optim.AdamW(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.9))
            if disc is not None else None)
    modules = {"model": model, "ema": ema, "disc": disc, "lecam": lecam}
    optimizers = {"opt": opt, "dopt": dopt}

    start, skipped_steps = 0, 0
    if resume:  # the newest checkpoint that is intact and fits; damaged ones are named
        start, skipped_steps = ckpt.load_newest(
            ckpt_dir, lambda path, tensors, meta: _restore(
                path, tensors, meta, config, modules, optimizers, sched, ctx.rank),
            warn=ctx.main, ranks=RankGroup(ctx) if ctx.world > 1 else None)
    else:
        torch.manual_seed(config.seed + ctx.rank)

    net: nn.Module = model
    dnet: nn.Module | None = disc
    if ctx.world > 1:
        # codebook buffers are synced by the quantizers themselves (vtok.quant.dist)
        net = DistributedDataParallel(model, broadcast_buffers=False)
        dnet = DistributedDataParallel(disc, broadcast_buffers=False) if disc else None

    clips = model.codes_clips  # then the data are videos, the batches clips
    dataset = training_data(config, clips, config.batch_size * ctx.world)
    validating = has_validation(config, clips)  # the same on every rank; only rank 0 scores
    val = validation_set(config, clips) if ctx.main else []
    stop = config.stop_at or config.steps
    # its own generator: creating the iterator must not draw from the global RNG stream,
    # which a resumed run has just restored
    loader = DataLoader(dataset, batch_sampler=StepBatches(start, stop, config.batch_size, ctx),
                        num_workers=config.workers, generator=torch.Generator())
    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", {"train": config.to_dict(),
                                              "model": model.config.to_dict(),
                                              "architecture": model.architecture,
                                              "world_size": ctx.world})
    log = RunLog(run_dir, start) if ctx.main else None  # drops rows logged after `start`
    bar = core.progress_bar(ctx.main and config.progress, stop - start,
                            f"train {config.preset}")
    weights = LossWeights(l1=config.l1_weight, l2=config.l2_weight,
                          lpips=config.lpips_weight, gan=config.gan_weight,
                          lecam=config.lecam_weight)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=config.bf16 if config.bf16 is not None
                              else device.type == "cuda")
    started, window = time.perf_counter(), []
    recent: deque[bool] = deque(maxlen=config.skip_window)  # which of the last steps skipped

    for step, x in zip(range(start, stop), loader):
        x = x.to(device, non_blocking=True)
        gan_on = disc is not None and step >= config.gan_start
        with autocast:
            out = net(x)
            total, terms, recon = generator_loss(
                x, out, weights, lpips, disc, gan_on,
                model.last_layer() if gan_on else None, config.lpips_frames)
        loss_ok = not any_true(not bool(torch.isfinite(total)), ctx)
        skipped = not loss_ok
        if not loss_ok:
            _warn_skip(step, terms, ctx)
        else:
            opt.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       config.grad_clip or 1e12)
            skipped = any_true(not bool(torch.isfinite(grad_norm)), ctx)
            if skipped:
                _warn_skip(step, {"grad_norm": grad_norm}, ctx)
                opt.zero_grad(set_to_none=True)
            else:
                opt.step()
        skipped_steps += skipped
        sched.step()
        if loss_ok:
            if ema is not None:
                core.update_ema(ema, model, step, config.ema_decay)
            if gan_on:
                with autocast:
                    d_loss, terms["gan_d"] = critic_loss(dnet, lecam, x, recon, weights)
                dopt.zero_grad(set_to_none=True)
                d_loss.backward()
                dopt.step()
            window.append(_scalars(terms, out["metrics"], recon, x, sched.get_last_lr()[0]))

        done = step + 1
        recent.append(skipped)
        val_now = validating and (done % config.sample_every == 0 or done == stop)
        # a row needs values: steps whose loss was not finite add none (the same on all ranks)
        if (done % config.log_every == 0 or done == stop or val_now) and window:
            values = mean_over_ranks(_mean(window), ctx)
            window = []
            if log is not None and validating:  # every row has the columns (NaN: not scored)
                values.update(validate(ema or model, val, lpips) if val_now
                              else dict.fromkeys(VAL_KEYS, float("nan")))
            if log is not None:
                log.write(done, {**values, "seconds": time.perf_counter() - started,
                                 "skipped_steps": float(skipped_steps)})
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.4f}", usage=f"{values['usage']:.2f}",
                                psnr=f"{values['psnr']:.2f}")
        if _too_many_skipped(recent, config, last=done == stop):
            _close(bar, log)
            raise TrainingFailed(
                f"{run_dir}: stopped at step {done}: {sum(recent)} of the last {len(recent)} "
                f"steps had a non-finite loss or gradient and were skipped (at most "
                f"{config.max_skipped_fraction:g} of them may be); no model exported, last "
                f"checkpoint kept: {ckpt.latest_checkpoint(ckpt_dir) or 'none'}. Lower lr "
                f"or check the data")
        if ctx.main and done % config.sample_every == 0:
            save_grid(run_dir / "samples" / f"step-{done:07d}.png", x, recon)
        if done % config.checkpoint_every == 0 or done == stop:
            try:
                _checkpoint(ckpt_dir, done, modules, optimizers, sched, config, skipped_steps,
                            ctx)
            except TrainingFailed:
                _close(bar, log)
                raise
        if bar is not None:
            bar.update(1)

    _close(bar, log)
    skipped_files = "skipped_videos" if clips else "skipped_images"
    summary = {"steps_done": stop, "steps": config.steps, "skipped_steps": skipped_steps,
               skipped_files: dataset.skipped, "world_size": ctx.world,
               "seconds": time.perf_counter() - started}
    if ctx.main:
        if stop == config.steps:
            (ema or model).eval().save_pretrained(run_dir / "model")
        _write_json(run_dir / "summary.json", summary)
        if dataset.skipped:
            print(f"skipped {len(dataset.skipped)} unreadable "
                  f"{'videos or images' if clips else 'images'}: " + ", ".join(dataset.skipped))
    return summary


def _close(bar, log: RunLog | None) -> None:
    if bar is not None:
        bar.close()
    if log is not None:
        log.close()


def freeze_except(model: nn.Module, parts: list[str] | None) -> None:
    """Freeze every top-level part of `model` not named in `parts`: no gradients, eval mode
    (a quantizer in eval mode leaves its codebook and statistics alone)."""
    if parts is None:
        return
    children = dict(model.named_children())
    unknown = [name for name in parts if name not in children]
    if unknown:
        raise ValueError(f"TrainConfig.train_only: {type(model).__name__} has no part "
                         f"{', '.join(map(repr, unknown))}; its parts: {', '.join(children)}")
    for name, child in children.items():
        if name not in parts:
            child.requires_grad_(False).eval()


def init_from(model: Tokenizer, directory: Path, grow: bool = False, seed: int = 0) -> None:
    """Fine-tuning: copy the weights of a tokenizer directory or training run into `model`,
    refusing another architecture or a configuration whose weights do not fit. With `grow`, a
    VQ codebook smaller than the model's is first grown to its size (`grown_state`). A conv2d
    source for a conv3d model is inflated (`vtok.models.inflate`): same widths and blocks."""
    try:
        directory = tokenizer_dir(directory)
    except ValueError as err:
        raise ValueError(f"TrainConfig.init: {err}") from None
    source = directory / "model" if (directory / "model" / "config.json").exists() else directory
    arch, _ = read_config(source)
    inflate = inflates(arch, model.architecture)
    if arch != model.architecture and not inflate:
        raise ValueError(f"TrainConfig.init: {source} holds a {arch!r} tokenizer, "
                         f"but preset makes a {model.architecture!r} one")
    if not grow and not inflate:
        try:
            model.load_weights(source / WEIGHTS_FILE)
        except ValueError as err:
            codes = read_config(source)[1].get("quantizer_options", {}).get("codebook_size")
            if codes is not None and codes < model.codebook_size:
                raise ValueError(f"{err}; {source} has {codes} codes, the model "
                                 f"{model.codebook_size}: set grow_codebook to grow them") from None
            raise
        return
    old = Tokenizer.from_pretrained(source)
    state = old.state_dict()
    if grow:
        if not isinstance(old.quantizer, VectorQuantizer) or not isinstance(model.quantizer,
                                                                            VectorQuantizer):
            raise ValueError(f"TrainConfig.grow_codebook: only a 'vq' codebook grows; {source} "
                             f"has a {old.config.quantizer!r} quantizer, the preset makes a "
                             f"{model.config.quantizer!r} one")
        try:
            grown = old.quantizer.grown_state(model.codebook_size, seed=seed)
        except ValueError as err:
            raise ValueError(f"TrainConfig.grow_codebook: {source}: {err}") from None
        state = {k: v for k, v in state.items() if not k.startswith("quantizer.")}
        state.update({f"quantizer.{k}": v for k, v in grown.items()})
    if inflate:  # a conv2d image tokenizer's weights into the conv3d model
        try:
            state = inflated_state(state, model.state_dict(), str(source))
        except ValueError as err:
            raise ValueError(f"TrainConfig.init: {err}") from None
    done = ", ".join(word for word, on in (("grown", grow), ("inflated", inflate)) if on)
    model.load_checked(state, f"TrainConfig.init: {source}, {done}")


def _restore(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any], config: TrainConfig,
             modules: dict[str, nn.Module | None],
             optimizers: dict[str, torch.optim.Optimizer | None], sched, rank: int
             ) -> tuple[int, int]:
    """Load one verified checkpoint into the run; (step, skipped steps). CheckpointError when
    it does not fit (the newest is then passed over), ValueError when another run made it."""
    try:
        saved = TrainConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ckpt.CheckpointError(path, f"no valid training config ({err})") from None
    _check_same_run(saved, config)
    step, skipped = meta["step"], meta.get("skipped_steps")
    if not isinstance(skipped, int) or isinstance(skipped, bool) or not 0 <= skipped <= step:
        raise ckpt.CheckpointError(path, f"skipped_steps is {skipped!r}, not a count <= {step}")
    schedule, expected = meta.get("scheduler"), sched.state_dict()
    if (not isinstance(schedule, dict) or schedule.keys() != expected.keys()
            or schedule["last_epoch"] != step):
        raise ckpt.CheckpointError(path, f"its scheduler state does not fit (keys "
                                         f"{', '.join(sorted(expected))} at step {step})")
    try:
        for name, module in modules.items():
            if module is not None:
                _load_module(module, name, ckpt.module_state(tensors, name))
        for name, optim in optimizers.items():
            if optim is not None:
                ckpt.restore_optimizer(optim, name, tensors, meta)
        sched.load_state_dict(schedule)
        try:
            ckpt.restore_rng(ckpt.module_state(tensors, f"rng.{rank}"))
        except ValueError as err:
            raise ValueError(f"rank {rank}: {err}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise ckpt.CheckpointError(path, str(err)) from None
    return step, skipped


def _load_module(module: nn.Module, name: str, state: dict[str, Tensor]) -> None:
    """load_state_dict, after naming what does not fit (the names, shapes and dtypes)."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys()
                   if (state[k].shape, state[k].dtype) != (expected[k].shape, expected[k].dtype))
    if missing or extra or wrong:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra),
                                     ("wrong shape or dtype", wrong)) if keys]
        raise ValueError(f"its {name} tensors do not fit ({'; '.join(parts)})")
    module.load_state_dict(state)


def _too_many_skipped(recent: deque[bool], config: TrainConfig, last: bool) -> bool:
    """More than max_skipped_fraction of a full window skipped (or of a shorter run's steps,
    at its last step)."""
    if len(recent) < config.skip_window and not last:
        return False
    return sum(recent) > config.max_skipped_fraction * len(recent)


def _check_same_run(saved: TrainConfig, now: TrainConfig) -> None:
    differ = sorted(k for k, v in saved.to_dict().items()
                    if k not in RESUME_MAY_CHANGE and now.to_dict()[k] != v)
    if differ:
        raise ValueError(f"cannot resume with a different {', '.join(differ)} "
                         f"(the checkpoint was made with other values)")


def _scalars(terms: dict[str, Tensor], metrics: dict[str, float], recon: Tensor, x: Tensor,
             lr: float) -> dict[str, float]:
    with torch.no_grad():
        mse = (recon.clamp(0, 1) - x).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        psnr = (10 * torch.log10(1 / mse)).mean().item()
    values = {k: float(v.detach()) for k, v in terms.items()}
    values["loss"] = sum(values[k] for k in ("l1", "lpips") if k in values)
    values.update(psnr=psnr, lr=lr, usage=metrics.get("usage", 0.0),
                  perplexity=metrics.get("perplexity", 0.0),
                  dead_fraction=metrics.get("dead_fraction", 0.0))
    return values


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*rows)
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in sorted(keys)}


def _checkpoint(directory: Path, step: int, modules: dict[str, nn.Module | None],
                optimizers: dict[str, torch.optim.Optimizer | None], sched, config: TrainConfig,
                skipped_steps: int, ctx: Context) -> None:
    bad = [name for name, m in modules.items() if m is not None and not all(
        bool(torch.isfinite(t).all()) for t in m.state_dict().values() if t.is_floating_point())]
    if any_true(bool(bad), ctx):
        raise TrainingFailed(f"{directory.parent}: at step {step} the {', '.join(bad) or 'model'} "
                             f"weights hold non-finite values; not saved: no model exported, "
                             f"last checkpoint kept: {ckpt.latest_checkpoint(directory) or 'none'}."
                             f" Lower lr or check the data")
    rng = [ckpt.rng_state()]
    if ctx.world > 1:
        rng = [None] * ctx.world
        dist.all_gather_object(rng, ckpt.rng_state())
    if ctx.main:
        states = {k: m.state_dict() for k, m in modules.items() if m is not None}
        for rank, state in enumerate(rng):
            states[f"rng.{rank}"] = state
        ckpt.save_checkpoint(
            directory, step, states, {k: o for k, o in optimizers.items() if o is not None},
            {"config": config.to_dict(), "scheduler": sched.state_dict(),
             "skipped_steps": skipped_steps}, keep=config.keep_checkpoints)
    if ctx.world > 1:
        dist.barrier()


def _warn_skip(step: int, terms: dict[str, Tensor], ctx: Context) -> None:
    if ctx.main:
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        warnings.warn(f"step {step + 1}: non-finite loss or gradient ({shown}); step skipped",
                      stacklevel=2)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def load_run_model(run_dir: str | Path) -> Tokenizer:
    """The exported model of a finished run, else the EMA (or raw) weights of its latest
    checkpoint, so a run can be evaluated while it trains."""
    run_dir = Path(run_dir)
    if (run_dir / "model").is_dir():
        return Tokenizer.from_pretrained(run_dir / "model")
    if not ckpt.list_checkpoints(run_dir / "checkpoints"):
        raise ValueError(f"{run_dir}: no exported model and no checkpoint")
    info = json.loads((run_dir / "config.json").read_text())
    config = TrainConfig.from_dict(info["train"])
    model = create_tokenizer(config.preset, **config.model)

    def weights(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Tokenizer:
        state = ckpt.module_state(tensors, "ema") or ckpt.module_state(tensors, "model")
        try:
            _load_module(model, "model", state)
        except ValueError as err:
            raise ckpt.CheckpointError(path, str(err)) from None
        return model

    return ckpt.load_newest(run_dir / "checkpoints", weights).eval()
