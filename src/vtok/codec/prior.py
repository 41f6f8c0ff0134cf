"""A small learned prior over a tokenizer's tokens, and the entropy coder it drives.

The prior predicts each token from tokens already coded: for a grid, six causal neighbours
(left, two left, up-left, up, up-right, two up); for a sequence, the previous `context` tokens
and the position (ordered 1D tokens differ by position). A neighbour outside the image is a
padding symbol. An MLP over the neighbours' embeddings gives the logits.

Coding walks the tokens in waves of positions that do not depend on each other (for a grid,
the positions with equal 2*row + column; for a sequence, one position at a time). Encoder and
decoder evaluate exactly the same waves with the same shapes, so their probabilities are
bit-identical on the same machine and the range coder (constriction) inverts exactly. Across
machines, floating-point differences in the MLP can break decoding: a .vtok file with entropy
coding is meant to be decoded where vtok computes the same floats (same build of torch and CPU
family); raw packing has no such caveat.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vtok.files import atomic_write, atomic_write_text

# (d_row, d_col) of the neighbours a grid token is predicted from; every one lies in an
# earlier wave (2 * d_row + d_col < 0), so the waves of equal 2 * row + col can be coded at once
# (twelve neighbours fitted the 400-crop trial worse than these six: 15.8 % vs 19.3 % saved)
GRID_NEIGHBOURS = ((0, -1), (0, -2), (-1, -1), (-1, 0), (-1, 1), (-2, 0))
_ROWS_ABOVE, _COLS_AROUND = 2, 2


@dataclass
class PriorConfig:
    codebook_size: int
    layout: str  # "grid" or "sequence"
    tokenizer_id: str  # the tokenizer whose tokens this prior models
    max_len: int = 1  # sequence: the most tokens (position embedding)
    context: int = 4  # sequence: previous tokens seen
    embed_dim: int = 32
    hidden: int = 256

    def __post_init__(self) -> None:
        if self.layout not in ("grid", "sequence"):
            raise ValueError(f"PriorConfig.layout must be 'grid' or 'sequence', "
                             f"got {self.layout!r}")
        for name in ("codebook_size", "max_len", "context", "embed_dim", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PriorConfig.{name} must be an integer >= 1, got {value!r}")


class TokenPrior(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.slots = len(GRID_NEIGHBOURS) if c.layout == "grid" else c.context
        # one table per neighbour slot; symbol K is "outside the image"
        self.embed = nn.Embedding(self.slots * (c.codebook_size + 1), c.embed_dim)
        self.position = nn.Embedding(c.max_len, c.embed_dim) if c.layout == "sequence" else None
        inputs = c.embed_dim * (self.slots + (1 if self.position is not None else 0))
        self.mlp = nn.Sequential(nn.Linear(inputs, c.hidden), nn.GELU(),
                                 nn.Linear(c.hidden, c.hidden), nn.GELU(),
                                 nn.Linear(c.hidden, c.codebook_size))

    # -- contexts ----------------------------------------------------------------------------
    def contexts(self, indices: Tensor) -> Tensor:
        """`[B, *shape]` tokens -> `[B, *shape, slots]` neighbour symbols (K = outside)."""
        k = self.config.codebook_size
        if self.config.layout == "grid":
            b, h, w = indices.shape
            r, c = _ROWS_ABOVE, _COLS_AROUND
            padded = F.pad(indices, (c, c, r, 0), value=k)
            return torch.stack([padded[:, r + di : r + di + h, c + dj : c + dj + w]
                                for di, dj in GRID_NEIGHBOURS], -1)
        padded = F.pad(indices, (self.slots, 0), value=k)
        n = indices.shape[1]
        return torch.stack([padded[:, self.slots - d : self.slots - d + n]
                            for d in range(1, self.slots + 1)], -1)

    def logits(self, context: Tensor, positions: Tensor | None = None) -> Tensor:
        """`[M, slots]` neighbour symbols (and `[M]` positions for sequences) -> `[M, K]`."""
        offsets = torch.arange(self.slots, device=context.device) * (self.config.codebook_size + 1)
        x = self.embed(context + offsets).flatten(1)
        if self.position is not None:
            x = torch.cat([x, self.position(positions)], 1)
        return self.mlp(x)

    def forward(self, indices: Tensor) -> Tensor:
        """Teacher-forced logits `[B, *shape, K]` for every token (training)."""
        ctx = self.contexts(indices)
        flat = ctx.reshape(-1, self.slots)
        positions = None
        if self.position is not None:
            positions = torch.arange(indices.shape[1], device=indices.device)
            positions = positions.expand(indices.shape[0], -1).reshape(-1)
        return self.logits(flat, positions).reshape(*indices.shape, -1)

    def bits(self, indices: Tensor) -> Tensor:
        """Ideal code length in bits of each image's tokens under the prior: `[B]`."""
        logp = F.log_softmax(self.forward(indices).float(), -1)
        nll = -logp.gather(-1, indices[..., None])[..., 0]
        return nll.flatten(1).sum(1) / math.log(2)

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: str | Path, stem: str = "prior") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / f"{stem}.safetensors", lambda tmp: save_file(state, tmp))
        atomic_write_text(directory / f"{stem}.json",
                          json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, stem: str = "prior") -> TokenPrior:
        directory = Path(directory)
        try:
            values = json.loads((directory / f"{stem}.json").read_text())
            prior = cls(PriorConfig(**values))
            prior.load_state_dict(load_file(directory / f"{stem}.safetensors"))
        except (OSError, json.JSONDecodeError, TypeError, RuntimeError, SafetensorError) as err:
            raise ValueError(f"{directory}: no readable token prior ({err})") from None
        return prior.eval()


def waves(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Flat positions in coding order, grouped into waves whose members are independent."""
    if len(shape) == 1:
        return [np.array([i]) for i in range(shape[0])]
    h, w = shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    wave = (2 * rows + cols).reshape(-1)
    order = np.argsort(wave, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(wave[order])) + 1)


class _Board:
    """The tokens of one image with a margin of "outside" symbols, so that the neighbours of
    any position are plain lookups (cost per wave: its own positions only)."""

    def __init__(self, shape: tuple[int, ...], slots: int, outside: int) -> None:
        self.shape = shape
        if len(shape) == 2:
            self.cells = np.full((shape[0] + _ROWS_ABOVE, shape[1] + 2 * _COLS_AROUND), outside,
                                 dtype=np.int64)
            self.offsets = np.array(GRID_NEIGHBOURS)
        else:
            self.cells = np.full(shape[0] + slots, outside, dtype=np.int64)
            self.slots = slots

    def put(self, positions: np.ndarray, values: np.ndarray) -> None:
        if len(self.shape) == 2:
            rows, cols = np.divmod(positions, self.shape[1])
            self.cells[rows + _ROWS_ABOVE, cols + _COLS_AROUND] = values
        else:
            self.cells[positions + self.slots] = values

    def get(self) -> np.ndarray:
        if len(self.shape) == 2:
            return self.cells[_ROWS_ABOVE:, _COLS_AROUND:-_COLS_AROUND].copy()
        return self.cells[self.slots :].copy()

    def context(self, positions: np.ndarray) -> np.ndarray:
        """`[M, slots]` neighbour symbols of flat `positions`."""
        if len(self.shape) == 2:
            rows, cols = np.divmod(positions, self.shape[1])
            return self.cells[rows[:, None] + _ROWS_ABOVE + self.offsets[:, 0],
                              cols[:, None] + _COLS_AROUND + self.offsets[:, 1]]
        back = np.arange(1, self.slots + 1)
        return self.cells[positions[:, None] + self.slots - back]


class EntropyCoder:
    """Range coding (constriction) of one image's tokens under a TokenPrior."""

    name = "entropy"

    def __init__(self, prior: TokenPrior) -> None:
        self.prior = prior.eval()
        self.family = constriction.stream.model.Categorical(perfect=False)

    def _probabilities(self, board: _Board, positions: np.ndarray) -> np.ndarray:
        """Probabilities `[M, K]` (float64) of the tokens at flat `positions`, from the
        neighbours already on the board (earlier waves only)."""
        ctx = torch.from_numpy(board.context(positions))
        pos = torch.from_numpy(positions) if self.prior.position is not None else None
        with torch.no_grad():
            logits = self.prior.logits(ctx, pos).double().numpy()
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def _board(self, shape: tuple[int, ...]) -> _Board:
        c = self.prior.config
        if len(shape) != (2 if c.layout == "grid" else 1):
            raise ValueError(f"a {c.layout} prior cannot code tokens of shape {shape}")
        if c.layout == "sequence" and shape[0] > c.max_len:
            raise ValueError(f"{shape[0]} tokens exceed the prior's {c.max_len}")
        return _Board(tuple(shape), self.prior.slots, c.codebook_size)

    def encode(self, indices: np.ndarray) -> bytes:
        indices = np.asarray(indices, dtype=np.int64)
        board = self._board(indices.shape)
        flat = indices.reshape(-1)
        board.put(np.arange(flat.size), flat)  # only earlier waves are ever read
        encoder = constriction.stream.queue.RangeEncoder()
        for positions in waves(indices.shape):
            probs = self._probabilities(board, positions)
            encoder.encode(flat[positions].astype(np.int32), self.family, probs)
        return encoder.get_compressed().tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
        board = self._board(shape)
        if len(payload) % 4:
            raise ValueError(f"an entropy-coded payload is whole 32-bit words, "
                             f"got {len(payload)} bytes")
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, np.uint32).copy())
        try:
            for positions in waves(shape):
                probs = self._probabilities(board, positions)
                board.put(positions, np.asarray(decoder.decode(self.family, probs)))
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"the entropy-coded payload is corrupt ({err})") from None
        return board.get()


def train_prior(tokens: Tensor, config: PriorConfig, steps: int = 2000, batch_size: int = 16,
                lr: float = 2e-3, seed: int = 0, progress: bool = False) -> TokenPrior:
    """Fit a TokenPrior to `[N, *shape]` token tensors by maximum likelihood (AdamW, cosine)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    prior = TokenPrior(config).train()
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))))
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="train prior", disable=not progress):
        batch = tokens[torch.randint(len(tokens), (batch_size,), generator=gen)]
        loss = prior.bits(batch).mean() / batch[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return prior.eval()
