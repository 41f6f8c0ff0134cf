"""Training configuration: one typed dataclass, validated on creation, saved in every run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """Everything a tokenizer training run depends on (the model comes from a preset)."""

    preset: str = "conv2d-f8-cpu"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's fields
    data: str | None = None  # folder / tar shards; None = the default photos' train split
    cache: str | None = None  # folder of `vtok data prepare` (photos, LPIPS); None = default
    init: str | None = None  # start from this tokenizer directory's weights (fine-tuning)
    # with init: a VQ codebook smaller than the model's (e.g. 128 -> 192 codes) is grown by
    # splitting its most used codes; every other weight must fit as it is
    grow_codebook: bool = False
    # train only these top-level parts (e.g. ["decoder"]); the others keep their weights and
    # run in eval mode, so a frozen quantizer's codebook (and so every token) stays the same
    train_only: list[str] | None = None
    out: str = "runs/tokenizer"
    steps: int = 1000
    stop_at: int | None = None  # end this invocation early (the schedule still spans `steps`)
    batch_size: int = 8  # per process
    crop_size: int = 128
    min_scale: float = 1.0  # random zoom-out: crops cover up to crop_size/min_scale pixels
    lr: float = 2e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # EMA of the weights; 0 turns it off
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    lpips_weight: float = 1.0
    lpips_net: str = "alex"
    gan_weight: float = 0.1
    gan_start: int = 2000  # adversarial terms start at this step
    disc_lr: float = 2e-4
    disc_channels: int = 64
    disc_layers: int = 3
    lecam_weight: float = 0.001
    bf16: bool | None = None  # None: bf16 autocast on CUDA, fp32 on CPU
    seed: int = 0
    workers: int = 0
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ["steps", "batch_size", "crop_size", "log_every", "sample_every",
                    "checkpoint_every", "keep_checkpoints", "disc_channels", "disc_layers"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ["warmup", "gan_start", "seed", "workers"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        weights = ["lr", "disc_lr", "weight_decay", "grad_clip", "l1_weight", "l2_weight",
                   "lpips_weight", "gan_weight", "lecam_weight"]
        for name in weights:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a number >= 0, got {value!r}")
        for name in ["ema_decay", "beta1", "beta2"]:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"TrainConfig.{name} must be a number in [0, 1), got {value!r}")
        if not isinstance(self.min_lr_ratio, (int, float)) or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be a number in [0, 1], "
                             f"got {self.min_lr_ratio!r}")
        if not isinstance(self.min_scale, (int, float)) or not 0 < self.min_scale <= 1:
            raise ValueError(f"TrainConfig.min_scale must be a number in (0, 1], "
                             f"got {self.min_scale!r}")
        if self.lpips_net not in ("alex", "vgg"):
            raise ValueError(f"TrainConfig.lpips_net must be 'alex' or 'vgg', "
                             f"got {self.lpips_net!r}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"TrainConfig.stop_at must be in [1, steps={self.steps}], "
                             f"got {self.stop_at!r}")
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ValueError(f"TrainConfig.init must be a tokenizer directory or shipped name, "
                             f"got {self.init!r}")
        if not isinstance(self.grow_codebook, bool):
            raise ValueError(f"TrainConfig.grow_codebook must be true or false, "
                             f"got {self.grow_codebook!r}")
        if self.grow_codebook and self.init is None:
            raise ValueError("TrainConfig.grow_codebook needs init: the tokenizer whose "
                             "codebook grows")
        if self.train_only is not None and (
                not isinstance(self.train_only, list) or not self.train_only
                or not all(isinstance(n, str) and n for n in self.train_only)):
            raise ValueError(f"TrainConfig.train_only must be a non-empty list of part names "
                             f"such as [\"decoder\"], got {self.train_only!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"TrainConfig.model must be a dict of preset overrides, "
                             f"got {self.model!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"TrainConfig has no field {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})
