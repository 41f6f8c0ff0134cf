"""Side-by-side speed of token reduction: images/s and GFLOPs of every method and keep ratio
against the unreduced model, measured in one run (ToMe's throughput protocol, Bolya et al. 2023).

Timing: inference mode, `warmup` calls per variant (the last one sizes how many calls make one
timed repeat of at least `min_time` seconds), then `repeats` rounds. Each round times the
unreduced model between every two variants (base, v1, base, v2, base, ...), so each variant's
speed-up in a round is over the mean of the two base timings beside it: load that comes and
goes on a shared machine hits both sides of every ratio. A variant's images/s is its median
over the rounds; its speed-up is the median of its per-round ratios, with their quartiles.
GFLOPs: `torch.utils.flop_counter.FlopCounterMode` on one batch-1 call (2 FLOPs per
multiply-add; convolutions, matmuls and attention, the reducer's own matmuls included).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from vtok.reduce.adapter import ReductionHandle, attach


@dataclass
class Subject:
    """The model a bench times: `run(images)` is the timed call, `model` gets the reducer."""

    name: str
    kind: str  # "timm" or "titok"
    model: nn.Module
    run: Callable[[Tensor], Any]
    image_size: int
    trained: bool  # False: random weights, good for speed only


@dataclass(frozen=True)
class Variant:
    """One row of the bench: a method at a keep ratio, or the unreduced model (method None)."""

    method: str | None
    keep: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()  # passed to the reducer, e.g. round_share

    @property
    def label(self) -> str:
        if self.method is None:
            return "none"
        # values as written on the command line (JSON), so a label parses back to the variant
        text = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                        for k, v in self.options)
        return f"{self.method}:{text}" if self.options else self.method


def parse_method(spec: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """'tome' -> ('tome', ()); 'tome:round_share=0.25' -> ('tome', (('round_share', 0.25),)).
    Option values are JSON when they parse as JSON, strings otherwise."""
    name, _, rest = spec.partition(":")
    options = []
    for item in filter(None, rest.split(",")):
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ValueError(f"method {spec!r}: options look like NAME:option=value,...")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options.append((key, value))
    return name, tuple(options)


@dataclass
class Measurement:
    tokens: list[int] = field(default_factory=list)  # tokens entering each block
    gflops: float | None = None
    images_per_s: dict[int, float] = field(default_factory=dict)
    speedups: dict[int, list[float]] = field(default_factory=dict)  # per round, paired
    error: str | None = None


def variants(methods: list[str], keeps: list[float]) -> list[Variant]:
    """The unreduced model first, then every method (a name, or NAME:option=value,...) at
    every keep ratio."""
    parsed = [parse_method(m) for m in methods]
    return [Variant(None)] + [Variant(name, k, options) for name, options in parsed
                              for k in keeps]


def timm_subject(name_or_dir: str, model_kwargs: dict[str, Any] | None = None,
                 trained: bool | None = None) -> Subject:
    """A timm ViT by architecture name (random weights), or a folder with config.json +
    model.safetensors (`vtok.eval.classifier.save_classifier`'s layout; never unpickled)."""
    import timm

    path = Path(name_or_dir)
    if path.is_dir():
        from vtok.eval.classifier import load_classifier

        model = load_classifier(path)
        name, trained = path.name, True if trained is None else trained
    else:
        if not timm.is_model(name_or_dir):
            raise ValueError(f"timm has no model named {name_or_dir!r} (and it is not a folder)")
        model = timm.create_model(name_or_dir, pretrained=False, **(model_kwargs or {}))
        name, trained = name_or_dir, False
    size = model.patch_embed.img_size if hasattr(model, "patch_embed") else None
    if size is None:
        raise ValueError(f"{name}: cannot tell its input size (no patch_embed.img_size)")
    return Subject(name, "timm", model.eval(), model, int(size[0]), trained)


def titok_subject(name_or_dir: str, image_size: int | None = None) -> Subject:
    """A vtok TiTok tokenizer (shipped name or folder); the timed call is `encode`, the part
    whose patch tokens are reduced."""
    from vtok.models import load
    from vtok.models.titok import TiTokTokenizer

    tok = load(name_or_dir).eval()
    if not isinstance(tok, TiTokTokenizer):
        raise ValueError(f"{name_or_dir}: a {tok.architecture} tokenizer; token reduction "
                         f"needs a titok one")
    size = image_size or tok.config.image_size
    return Subject(Path(str(name_or_dir)).name, "titok", tok, tok.encode, size, True)


@contextlib.contextmanager
def reduced(subject: Subject, variant: Variant, layer: int | None) -> Iterator[
        ReductionHandle | None]:
    """The subject with the variant's reducer attached (nothing for the unreduced model)."""
    if variant.method is None:
        yield None
        return
    with attach(subject.model, variant.method, keep=variant.keep, layers=layer,
                **dict(variant.options)) as handle:
        yield handle


def count_gflops(run: Callable[[Tensor], Any], image: Tensor) -> float:
    """GFLOPs of one call on a batch of one image."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
    with counter:
        run(image)
    return counter.get_total_flops() / 1e9


def _sdpa_flops(query: tuple, key: tuple, value: tuple, *args: Any, out_shape: Any = None,
                **kwargs: Any) -> int:
    # q @ k^T and attn @ v, 2 FLOPs per multiply-add; torch's table lacks the CPU kernel
    *batch, sq, d = query
    sk, dv = key[-2], value[-1]
    return 2 * math.prod(batch) * sq * sk * (d + dv)


_EXTRA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_variants(subject: Subject, rows: list[Variant], layer: int | None = None
                   ) -> dict[Variant, Measurement]:
    """Tokens entering each block and GFLOPs per image of every variant; a variant that cannot
    run on this model (e.g. pool2d on a non-square grid) gets its error instead."""
    out = {v: Measurement() for v in rows}
    size = subject.image_size
    one = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for v in rows:
            # the unreduced model gets an identity reducer here: it counts tokens, changes nothing
            identity = attach(subject.model, "tome", r=0) if v.method is None else None
            try:
                with identity or reduced(subject, v, layer) as handle:
                    out[v].gflops = count_gflops(subject.run, one)
                out[v].tokens = list(handle.tokens_per_block)
            except ValueError as err:
                out[v].error = str(err)
    return out


def time_variants(subject: Subject, measured: dict[Variant, Measurement], batch_sizes: list[int],
                  layer: int | None = None, warmup: int = 2, repeats: int = 5,
                  min_time: float = 0.2, progress: Callable[[], None] | None = None) -> None:
    """Fill in the median images/s of every variant without an error, per batch size."""
    live = [v for v, m in measured.items() if m.error is None]
    base = next(v for v in live if v.method is None)
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for b in batch_sizes:
            size = subject.image_size
            x = torch.rand(b, 3, size, size, generator=g)
            calls = {v: _calibrate(subject, v, layer, x, warmup, min_time) for v in live}
            speeds: dict[Variant, list[float]] = {v: [] for v in live}
            ratios: dict[Variant, list[float]] = {v: [] for v in live}
            for _ in range(repeats):
                before = _images_per_s(subject, base, layer, x, calls[base])
                speeds[base].append(before)
                ratios[base].append(1.0)
                if progress:
                    progress()
                for v in live:
                    if v is base:
                        continue
                    own = _images_per_s(subject, v, layer, x, calls[v])
                    after = _images_per_s(subject, base, layer, x, calls[base])
                    speeds[v].append(own)
                    speeds[base].append(after)
                    ratios[v].append(own / ((before + after) / 2))
                    before = after
                    if progress:
                        progress()
            for v in live:
                measured[v].images_per_s[b] = statistics.median(speeds[v])
                measured[v].speedups[b] = ratios[v]


def _images_per_s(subject: Subject, variant: Variant, layer: int | None, x: Tensor,
                  calls: int) -> float:
    with reduced(subject, variant, layer):
        start = time.perf_counter()
        for _ in range(calls):
            subject.run(x)
        seconds = time.perf_counter() - start
    return x.shape[0] * calls / seconds


def _calibrate(subject: Subject, variant: Variant, layer: int | None, x: Tensor, warmup: int,
               min_time: float) -> int:
    """Warm up; return how many calls one timed repeat needs to last `min_time`."""
    seconds = 0.0
    with reduced(subject, variant, layer):
        for _ in range(warmup):
            start = time.perf_counter()
            subject.run(x)
            seconds = time.perf_counter() - start
    if seconds <= 0 or min_time <= 0:
        return 1
    return max(1, math.ceil(min_time / seconds))


def result_rows(rows: list[Variant], measured: dict[Variant, Measurement],
                fidelity: dict[Variant, dict[str, float]], columns: tuple[str, ...],
                batch_sizes: list[int]) -> list[dict[str, Any]]:
    """One flat JSON row per variant. Speed-ups are over the unreduced row (the first) of the
    same run, paired per round (see `time_variants`); fidelity `columns` are None where nothing
    was measured."""
    out = []
    for v in rows:
        m = measured[v]
        row: dict[str, Any] = {"method": v.label, "keep": v.keep,
                               "tokens": m.tokens[-1] if m.tokens else None,
                               "tokens_per_block": m.tokens or None, "gflops": m.gflops}
        for b in batch_sizes:
            ratios = m.speedups.get(b)
            row[f"images_per_s_b{b}"] = m.images_per_s.get(b)
            row[f"speedup_b{b}"] = statistics.median(ratios) if ratios else None
            row[f"speedup_quartiles_b{b}"] = (
                statistics.quantiles(ratios, n=4, method="inclusive")[::2]
                if ratios and len(ratios) > 1 else None)
        row.update({c: fidelity.get(v, {}).get(c) for c in columns})
        if m.error:
            row["error"] = m.error
        out.append(row)
    return out
