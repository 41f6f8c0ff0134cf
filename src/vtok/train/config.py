"""Training configuration: one typed dataclass, validated on creation, saved in every run."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_STEPS = 10**9
MAX_BATCH = 4096  # per process
MAX_LR = 1.0  # AdamW: anything larger only diverges
# name: (minimum, maximum) of the integer fields (crop_size and disc_layers are also checked
# against the model and each other, see vtok.train.model_check)
INT_RANGES = {
    "steps": (1, MAX_STEPS), "batch_size": (1, MAX_BATCH), "crop_size": (1, 2048),
    "warmup": (0, MAX_STEPS), "gan_start": (0, MAX_STEPS), "disc_channels": (1, 1024),
    "disc_layers": (1, 8), "seed": (0, 2**31 - 1), "workers": (0, 256),
    "log_every": (1, MAX_STEPS), "sample_every": (1, MAX_STEPS),
    "checkpoint_every": (1, MAX_STEPS), "keep_checkpoints": (1, 1000),
    "skip_window": (1, 10**6), "clip_frames": (1, 1024), "frame_stride": (1, 1000),
    "image_every": (0, MAX_STEPS), "lpips_frames": (0, 1024),
}
# name: (low, high, whether high itself is excluded) of the float fields; all must be finite
FLOAT_RANGES = {
    "lr": (0.0, MAX_LR, False), "disc_lr": (0.0, MAX_LR, False),
    "min_lr_ratio": (0.0, 1.0, False), "min_scale": (0.0, 1.0, False),
    "weight_decay": (0.0, 10.0, False), "grad_clip": (0.0, 1e6, False),
    "beta1": (0.0, 1.0, True), "beta2": (0.0, 1.0, True), "ema_decay": (0.0, 1.0, True),
    "l1_weight": (0.0, 1e6, False), "l2_weight": (0.0, 1e6, False),
    "lpips_weight": (0.0, 1e6, False), "gan_weight": (0.0, 1e6, False),
    "lecam_weight": (0.0, 1e6, False), "max_skipped_fraction": (0.0, 1.0, False),
    "photo_motion": (0.0, 1.0, False),
}


class ConfigError(ValueError):
    """A TrainConfig field with a bad value; `field` names it ("crop_size", "model.channels")."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class TrainConfig:
    """Everything a tokenizer training run depends on (the model comes from a preset)."""

    preset: str = "conv2d-f8-cpu"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's fields
    # images (folder / tar shards), or for a tokenizer of clips a folder of videos; None = the
    # default photos' (clips') train split
    data: str | None = None
    # scored every sample_every steps (center crops, the first clip_frames frames of a video);
    # None: the default clips' val split for a tokenizer of clips on the default clips, else none
    val_data: str | None = None
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
    # tokenizers of clips (video) only: clips of clip_frames frames, a length the tokenizer
    # codes without padding (1 + 4k for the conv3d presets), every frame_stride-th frame
    clip_frames: int = 17
    frame_stride: int = 1
    # every n-th step trains on one-frame clips (the data's images and single frames of its
    # videos) instead; 0: never (images in the data are then left out)
    image_every: int = 0
    lpips_frames: int = 0  # LPIPS on this many random frames of each clip; 0: all of them
    # this share of the clips are made from photos by a random camera move (pan and zoom,
    # `vtok.data.motion`): from motion_data's images, or None: the default photos' train split
    photo_motion: float = 0.0
    motion_data: str | None = None
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
    disc_kind: str = "2d"  # "2d": PatchGAN on images (clips frame by frame); "3d": on clips
    lecam_weight: float = 0.001
    bf16: bool | None = None  # None: bf16 autocast on CUDA, fp32 on CPU
    seed: int = 0
    workers: int = 0
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True
    # a run fails (without exporting a model) when more than this share of its last
    # `skip_window` steps (or of all its steps, when it ran fewer) had a non-finite loss or
    # gradient and were skipped
    max_skipped_fraction: float = 0.5
    skip_window: int = 20

    def __post_init__(self) -> None:
        for name in ("preset", "out", "lpips_net", "disc_kind"):
            _need(isinstance(getattr(self, name), str) and getattr(self, name), name,
                  "a non-empty string", getattr(self, name))
        for name in ("data", "val_data", "init", "motion_data"):
            value = getattr(self, name)
            _need(value is None or isinstance(value, str) and value, name,
                  "a path or shipped name (a non-empty string)", value)
        for name in ("grow_codebook", "progress"):
            _need(isinstance(getattr(self, name), bool), name, "true or false",
                  getattr(self, name))
        _need(self.bf16 is None or isinstance(self.bf16, bool), "bf16",
              "true, false or null (null: bf16 on CUDA only)", self.bf16)
        for name, (low, high) in INT_RANGES.items():
            _int(self, name, low, high)
        _need(self.stop_at is None or _is_int(self.stop_at) and 1 <= self.stop_at <= self.steps,
              "stop_at", f"an integer in [1, steps={self.steps}] or null", self.stop_at)
        for name, (low, high, open_high) in FLOAT_RANGES.items():
            _float(self, name, low, high, open_high)
        _need(self.min_scale > 0, "min_scale", "a number in (0, 1]", self.min_scale)
        _need(self.lpips_net in ("alex", "vgg"), "lpips_net", "'alex' or 'vgg'", self.lpips_net)
        _need(self.disc_kind in ("2d", "3d"), "disc_kind", "'2d' or '3d'", self.disc_kind)
        if self.grow_codebook and self.init is None:
            raise ConfigError("grow_codebook", "TrainConfig.grow_codebook needs init: the "
                                               "tokenizer whose codebook grows")
        _need(self.train_only is None or isinstance(self.train_only, list) and self.train_only
              and all(isinstance(n, str) and n for n in self.train_only), "train_only",
              'a non-empty list of part names such as ["decoder"]', self.train_only)
        _need(isinstance(self.model, dict) and all(isinstance(k, str) for k in self.model),
              "model", "a dict of preset overrides", self.model)
        from vtok.train.model_check import check_model  # builds the model on the meta device

        check_model(self)

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(ok: Any, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(name, f"TrainConfig.{name} must be {allowed}, got {value!r}")


def _int(config: TrainConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    _need(_is_int(value) and low <= value <= high, name, f"an integer in [{low}, {high}]", value)


def _float(config: TrainConfig, name: str, low: float, high: float, open_high: bool) -> None:
    value = getattr(config, name)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and low <= value and (value < high if open_high
                                                         else value <= high))
    _need(ok, name, f"a finite number in [{low:g}, {high:g}{')' if open_high else ']'}", value)
    setattr(config, name, float(value))  # 1 and 1.0 are the same setting (and the same JSON)
