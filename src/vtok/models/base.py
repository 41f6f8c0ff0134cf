"""The tokenizer interface: `encode` images to `Tokens`, `decode` them back, save and load.

Images at the API are float `[B, 3, H, W]` in [0, 1]; a video tokenizer also takes clips
`[B, T, 3, H, W]` (a still image being a one-frame clip). Weights live in a directory holding
`config.json` and `model.safetensors` (the Hugging Face layout); nothing else is ever read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import vtok
from vtok.files import atomic_write, atomic_write_text
from vtok.models.limits import MAX_LATENT_DIM, check_budget, check_fields, check_quantizer
from vtok.quant import Quantizer, create_quantizer
from vtok.registry import Registry

ARCHITECTURES: Registry[type[Tokenizer]] = Registry(
    "tokenizer architecture",
    modules=("vtok.models.conv2d", "vtok.models.conv3d", "vtok.models.titok",
             "vtok.models.vqgan", "vtok.models.titok_published"))
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes; refuse megabytes unread
MAX_DECODE_PIXELS = 1 << 24  # 16.7 megapixels: larger images are not decoded (split them)
DEFAULT_TILE_SIZE = 1024  # pixels a side: larger images are coded in tiles
DEFAULT_NORM_WINDOW = 512  # pixels a side of the windows a large image's GroupNorm statistics
# are local to (training crops are 256-512 pixels: whole-photo statistics cast its colours)


@dataclass
class Tokens:
    """Discrete tokens of a batch of images (or clips).

    indices: `[B, *token_shape]` (plus a trailing axis for multi-index quantizers).
    token_shape: `(h, w)` for a 2D grid, `(k,)` for a 1D sequence or `(t, h, w)` for the
    latent frames of a video tokenizer. image_size: the original `(H, W)` of each frame.
    tokenizer_id: hash of the tokenizer's config and weights. num_tokens: tokens kept per image
    (less than the maximum for variable-length tokenizers). frames and fps: how many frames
    the tokens stand for and their rate as a fraction (num, den); a still image is one frame
    with rate (0, 1), "none".
    """

    indices: Tensor
    token_shape: tuple[int, ...]
    image_size: tuple[int, int]
    tokenizer_id: str
    num_tokens: int
    frames: int = 1
    fps: tuple[int, int] = (0, 1)


@dataclass
class TokenizerConfig:
    """Fields shared by every tokenizer; subclasses add their architecture's fields.

    `__post_init__` checks every field's type and size against `LIMITS` (see
    `vtok.models.limits`), then `check()` (relations between fields), then the estimated
    weights against MAX_PARAMETERS: a bad config fails here, before anything is allocated.
    """

    latent_dim: int = 16
    quantizer: str = "vq"
    quantizer_options: dict[str, Any] = field(default_factory=lambda: {"codebook_size": 1024})

    LIMITS: ClassVar[dict[str, int]] = {"latent_dim": MAX_LATENT_DIM}  # largest value per field
    LENGTHS: ClassVar[dict[str, int]] = {}  # most entries per tuple field

    def __post_init__(self) -> None:
        check_fields(self, self.LIMITS, self.LENGTHS)
        self.check()
        codebooks = check_quantizer(f"{type(self).__name__}.quantizer_options", self.quantizer,
                                    self.quantizer_options, self.latent_dim)
        check_budget(self, self.parameter_estimate() + codebooks)

    def check(self) -> None:
        """Relations between fields; subclasses raise ValueError naming the fields."""

    def parameter_estimate(self) -> int:
        """About how many weights the architecture holds (quantizer codebooks aside)."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TokenizerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}; "
                             f"its fields are: {', '.join(sorted(names))}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        fixed = {k: tuple(v) if "tuple" in str(types[k]) and isinstance(v, list) else v
                 for k, v in values.items()}
        return cls(**fixed)


class Tokenizer(nn.Module):
    """Base class: an encoder to latents, a quantizer, a decoder back to pixels.

    `tile_size` (pixels, default 1024) and `norm_window` (pixels, default 512): `encode`/
    `decode` of a conv tokenizer process an image with a side over `tile_size` in overlapping
    tiles of at most `tile_size` a side, which bounds their memory, and normalise an image
    spanning several windows of about `norm_window` pixels with each window's own GroupNorm
    statistics (an image under 1.5 windows a side is normalised as a whole). Neither is part
    of the config or the tokenizer id: set them on a loaded tokenizer (`tok.tile_size = 512`).
    """

    architecture: ClassVar[str]
    config_class: ClassVar[type[TokenizerConfig]]

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                             f"got {type(config).__name__}")
        self.config = config
        self.quantizer: Quantizer = create_quantizer(
            config.quantizer, dim=config.latent_dim, **config.quantizer_options)
        self._id: str | None = None
        self.tile_size = DEFAULT_TILE_SIZE
        self.norm_window = DEFAULT_NORM_WINDOW

    # -- what subclasses provide ---------------------------------------------------------
    def forward(self, images: Tensor) -> dict[str, Any]:  # pragma: no cover
        """Training path: {"recon": [B,3,H,W], "quant_loss": scalar, "metrics": {...}, ...}."""
        raise NotImplementedError

    def last_layer(self) -> Tensor:  # pragma: no cover
        """Weight of the decoder's output layer (for the adaptive GAN weight)."""
        raise NotImplementedError

    def _encode(self, images: Tensor, num_tokens: int | None) -> Tokens:  # pragma: no cover
        raise NotImplementedError

    def _decode(self, tokens: Tokens) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def token_shape(self, image_size: tuple[int, int], num_tokens: int | None = None,
                    frames: int = 1) -> tuple[int, ...]:  # pragma: no cover
        """The token layout `encode` gives an image of `image_size` (H, W), or a clip of
        `frames` such frames: `(h, w)` for a grid, `(k,)` for a sequence (`num_tokens` of them
        for a variable-length tokenizer, default `max_tokens`), `(t, h, w)` for a video
        tokenizer (t = 1 for a still); one index per token, or `indices_per_token` on a
        trailing axis. ValueError for a size, count or frame count this tokenizer cannot code
        (an image tokenizer codes one frame only, see `refuse_clips`)."""
        raise NotImplementedError

    def refuse_clips(self, frames: int) -> None:
        """ValueError unless `frames` is 1: for tokenizers of still images."""
        if frames != 1:
            raise ValueError(f"a {self.architecture} tokenizer codes still images (one frame), "
                             f"not clips of {frames!r} frames; use a video tokenizer (conv3d)")

    def check_input(self, images: Tensor) -> None:
        """ValueError unless `images` is what `encode` takes (`[B, 3, H, W]` floats here)."""
        check_images(images)

    def check_tokens(self, image_size: tuple[int, int], token_shape: tuple[int, ...],
                     depth: int = 1, codebook_size: int | None = None,
                     frames: int = 1) -> None:
        """Refuse token metadata (from a file, say) that this tokenizer could not have made,
        before any decoding work: ValueError naming the mismatch. `frames`: how many frames
        the tokens stand for (1: a still image)."""
        h, w = image_size
        if h * w > MAX_DECODE_PIXELS:
            raise ValueError(f"{w}x{h} pixels exceed the {MAX_DECODE_PIXELS} a tokenizer "
                             f"decodes at once")
        if codebook_size is not None and codebook_size != self.codebook_size:
            raise ValueError(f"tokens from a codebook of {codebook_size} codes; this tokenizer "
                             f"has {self.codebook_size}")
        if depth != self.indices_per_token:
            raise ValueError(f"{depth} indices per token; this tokenizer uses "
                             f"{self.indices_per_token}")
        token_shape = tuple(token_shape)
        if self.variable_length and len(token_shape) != 1:
            raise ValueError(f"this tokenizer gives tokens in a sequence, not {token_shape}")
        expected = self.token_shape((h, w), token_shape[0] if self.variable_length else None,
                                    frames=frames)
        if token_shape != expected:
            what = f"a {w}x{h} image" if frames == 1 else f"a clip of {frames} {w}x{h} frames"
            raise ValueError(f"{what} gives tokens of shape {expected} with this "
                             f"tokenizer, not {token_shape}")

    # -- coding path ---------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def variable_length(self) -> bool:
        """Whether `encode(images, num_tokens=k)` may keep any 1 <= k <= `max_tokens` tokens
        (ordered, each prefix a coarser code); False: the token count follows from the image
        size alone."""
        return False

    @property
    def codes_clips(self) -> bool:
        """Whether `encode` takes clips `[B, T, 3, H, W]` (a video tokenizer); False: it codes
        still images only and refuses clips (see `refuse_clips`)."""
        return False

    def coded_frames(self, frames: int) -> int:
        """How many frames `encode` pads a clip of `frames` to: `frames` itself when the
        tokenizer codes that length as it is (a training clip should have such a length).
        A still-image tokenizer codes one frame only (ValueError otherwise, `refuse_clips`)."""
        self.refuse_clips(frames)
        return 1

    @property
    def max_tokens(self) -> int | None:
        """The most tokens an image gets whatever its size; None when it grows with the size."""
        return None

    @property
    def indices_per_token(self) -> int:
        """Indices per token (several for residual or grouped quantizers)."""
        return self.quantizer.num_codebooks

    @torch.no_grad()
    def encode(self, images: Tensor, num_tokens: int | None = None) -> Tokens:
        self.check_input(images)
        if images.shape[-1] * images.shape[-2] > MAX_DECODE_PIXELS:
            raise ValueError(f"{images.shape[-1]}x{images.shape[-2]} pixels exceed the "
                             f"{MAX_DECODE_PIXELS} a tokenizer codes at once")
        with eval_mode(self):
            return self._encode(images, num_tokens)

    @torch.no_grad()
    def decode(self, tokens: Tokens) -> Tensor:
        if tokens.tokenizer_id != self.tokenizer_id:
            raise ValueError(f"tokens were made by tokenizer {tokens.tokenizer_id}, "
                             f"this is tokenizer {self.tokenizer_id}")
        with eval_mode(self):
            return self._decode(tokens).clamp(0, 1)

    @property
    def tokenizer_id(self) -> str:
        """16 hex digits of sha256 over the config and every weight and buffer.

        Cached only in eval mode: in training mode every optimizer step changes the weights,
        so the id is recomputed each time it is asked for.
        """
        if self._id is not None and not self.training:
            return self._id
        self._id = state_id(self.architecture, self.config.to_dict(), self.state_dict())
        return self._id

    def train(self, mode: bool = True) -> Tokenizer:
        self._id = None  # leaving training mode: the weights may have changed
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._id = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- files -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write `config.json` and `model.safetensors` (each to a temp name, then renamed).

        `dtype` (e.g. torch.float16) stores floating point tensors at that precision, halving
        the file; loading casts them back to the model's own precision.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"architecture": self.architecture, "vtok_version": vtok.__version__,
                  "config": self.config.to_dict()}
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
        # the id of the tokenizer from_pretrained rebuilds (floats at the default dtype)
        loaded = {k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v
                  for k, v in state.items()}
        config["tokenizer_id"] = state_id(self.architecture, config["config"], loaded)
        atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Tokenizer:
        """Load a tokenizer directory; on a subclass, refuse another architecture.

        Every failure (missing or malformed files, a config out of bounds, an unknown
        architecture or quantizer, weights that do not fit) is a ValueError naming the folder.
        """
        directory = Path(directory)
        try:
            arch, config = read_config(directory)
            if cls is not Tokenizer and arch != cls.architecture:
                raise ValueError(f"holds a {arch!r} tokenizer, not {cls.architecture!r}")
            model_cls = ARCHITECTURES.get(arch)
            model = model_cls(model_cls.config_class.from_dict(config))  # checked, then built
            model.load_weights(directory / WEIGHTS_FILE)
            stored = json.loads((directory / CONFIG_FILE).read_text()).get("tokenizer_id")
            if stored is not None and stored != model.eval().tokenizer_id:
                raise ValueError(f"{CONFIG_FILE} says tokenizer {stored} but its config and "
                                 f"weights hash to {model.tokenizer_id} (changed after saving?)")
        except Exception as err:  # whatever a damaged folder triggers, say which folder
            message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            if str(directory) not in message:
                message = f"{directory}: {message}"
            raise ValueError(f"cannot load tokenizer: {message}") from None
        return model.eval()

    def load_weights(self, path: Path) -> None:
        if not path.exists():
            raise ValueError(f"{path}: no weights file (expected {WEIGHTS_FILE})")
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
        self.load_checked(state, str(path))

    def load_checked(self, state: dict[str, Tensor], source: str) -> None:
        """Load `state` only if it has exactly this model's tensors, in their shapes; else a
        ValueError naming `source` and the first keys that differ."""
        own = self.state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or wrong:
            raise ValueError(
                f"{source}: weights do not fit this {self.architecture} tokenizer "
                f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})")
        self.load_state_dict(state)


def state_id(architecture: str, config: dict[str, Any], state: dict[str, Tensor]) -> str:
    """16 hex digits of sha256 over the architecture, the config and every tensor of `state`."""
    h = hashlib.sha256(architecture.encode())
    h.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_config(directory: Path) -> tuple[str, dict[str, Any]]:
    """(architecture, config fields) from `directory/config.json`; ValueError naming the file."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: not a tokenizer directory (no {CONFIG_FILE})")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, too large for a tokenizer "
                         f"config (at most {MAX_CONFIG_BYTES})")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # ValueError covers JSON and UTF-8 errors
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    arch, config = data.get("architecture"), data.get("config")
    if not isinstance(arch, str):
        raise ValueError(f"{path}: \"architecture\" must be a name such as \"conv2d\", "
                         f"got {arch!r}")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: \"config\" must be an object of config fields, "
                         f"got {config!r}")
    return arch, config


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Pad `[B, C, H, W]` at the bottom and right (edge pixels repeated) to multiples of `multiple`;
    decoders crop back to the original size."""
    h, w = images.shape[-2:]
    if h % multiple or w % multiple:
        images = torch.nn.functional.pad(images, (0, -w % multiple, 0, -h % multiple),
                                         mode="replicate")
    return images


def check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [B, 3, H, W] in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run in eval mode (no EMA or codebook updates) and restore the previous mode."""
    was_training = module.training
    if was_training and isinstance(module, Tokenizer):
        module._id = None  # weights may have moved since the id was last computed
    nn.Module.train(module, False)
    try:
        yield
    finally:
        nn.Module.train(module, was_training)
