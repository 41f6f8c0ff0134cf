"""A small learned prior over a tokenizer's tokens (the float model that trains).

The prior predicts each token from tokens already coded (`vtok.codec.context`): for a grid, six
causal neighbours (left, two left, up-left, up, up-right, two up); for a sequence, the previous
`context` tokens and the position (ordered 1D tokens differ by position); for the latent frames
of a video ("grid3d"), the same six neighbours, the previous latent frame's 3x3 neighbourhood
and whether each neighbour changed since the previous frame. A neighbour outside the image is a
padding symbol. An MLP over the context's embeddings gives the logits; a grid3d prior's MLP
also gives one bonus per previous-frame slot, added to the logit of that slot's token (a copy
from the previous frame, as in pointer networks, so a static token is cheap whatever its code).

This float model is the one that trains; files are coded with its integer conversion
(`vtok.codec.intprior`), which computes the same probabilities on every machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vtok.codec.context import (
    COLS_AROUND,
    GRID_NEIGHBOURS,
    LAYOUTS,
    ROWS_ABOVE,
    copy_slots,
    slot_sizes,
    video_contexts,
)
from vtok.files import atomic_write, atomic_write_text

__all__ = ["COLS_AROUND", "GRID_NEIGHBOURS", "ROWS_ABOVE", "PriorConfig", "TokenPrior",
           "train_prior"]


@dataclass
class PriorConfig:
    codebook_size: int
    layout: str  # "grid", "sequence" or "grid3d"
    tokenizer_id: str  # the tokenizer whose tokens this prior models
    max_len: int = 1  # sequence: the most tokens (position embedding)
    context: int = 4  # sequence: previous tokens seen
    embed_dim: int = 32
    hidden: int = 256

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"PriorConfig.layout must be one of "
                             f"{', '.join(map(repr, LAYOUTS))}, got {self.layout!r}")
        for name in ("codebook_size", "max_len", "context", "embed_dim", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PriorConfig.{name} must be an integer >= 1, got {value!r}")


class TokenPrior(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = c = config
        sizes = slot_sizes(c.layout, c.codebook_size, c.context)
        self.slots = len(sizes)
        self.copies = copy_slots(c.layout)
        # one table per slot, one after the other; symbol K is "outside the image"
        self.embed = nn.Embedding(sum(sizes), c.embed_dim)
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0),
                             persistent=False)
        self.position = nn.Embedding(c.max_len, c.embed_dim) if c.layout == "sequence" else None
        inputs = c.embed_dim * (self.slots + (1 if self.position is not None else 0))
        self.mlp = nn.Sequential(nn.Linear(inputs, c.hidden), nn.GELU(),
                                 nn.Linear(c.hidden, c.hidden), nn.GELU(),
                                 nn.Linear(c.hidden, c.codebook_size + len(self.copies)))

    # -- contexts ----------------------------------------------------------------------------
    def contexts(self, indices: Tensor) -> Tensor:
        """`[B, *shape]` tokens -> `[B, *shape, slots]` neighbour symbols (K = outside)."""
        k = self.config.codebook_size
        if self.config.layout == "grid3d":
            return torch.from_numpy(video_contexts(indices.cpu().numpy(), k)).to(indices.device)
        if self.config.layout == "grid":
            b, h, w = indices.shape
            r, c = ROWS_ABOVE, COLS_AROUND
            padded = F.pad(indices, (c, c, r, 0), value=k)
            return torch.stack([padded[:, r + di : r + di + h, c + dj : c + dj + w]
                                for di, dj in GRID_NEIGHBOURS], -1)
        padded = F.pad(indices, (self.slots, 0), value=k)
        n = indices.shape[1]
        return torch.stack([padded[:, self.slots - d : self.slots - d + n]
                            for d in range(1, self.slots + 1)], -1)

    def inputs(self, context: Tensor, positions: Tensor | None = None) -> Tensor:
        """The MLP's input: the slots' embeddings (and the position's), concatenated."""
        x = self.embed(context + self.offsets).flatten(1)
        if self.position is not None:
            x = torch.cat([x, self.position(positions)], 1)
        return x

    def logits(self, context: Tensor, positions: Tensor | None = None) -> Tensor:
        """`[M, slots]` context symbols (and `[M]` positions for sequences) -> `[M, K]`."""
        return add_copies(self.mlp(self.inputs(context, positions)), context, self.copies,
                          self.config.codebook_size)

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


def add_copies(out: Tensor, context: Tensor, copies: range, k: int) -> Tensor:
    """`[M, K + C]` outputs -> `[M, K]` logits: output K + i is added to the logit of the token
    in context slot `copies[i]` (nothing when that slot is outside)."""
    if not copies:
        return out
    logits, bonus = out[:, :k], out[:, k:]
    source = context[:, copies.start : copies.stop]
    inside = source < k
    return logits.scatter_add(1, source.clamp(max=k - 1), bonus * inside)


def train_prior(tokens: Tensor, config: PriorConfig, steps: int = 2000, batch_size: int = 16,
                lr: float = 2e-3, seed: int = 0, progress: bool = False) -> TokenPrior:
    """Fit a TokenPrior to `[N, *shape]` token tensors by maximum likelihood (AdamW, cosine)."""
    from tqdm import tqdm

    from vtok.train.core import lr_factor

    torch.manual_seed(seed)
    prior = TokenPrior(config).train()
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)  # a ramp over the first 5 % of a cosine spanning the run
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, warm, overlap=True))
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="train prior", disable=not progress):
        batch = tokens[torch.randint(len(tokens), (batch_size,), generator=gen)]
        loss = prior.bits(batch).mean() / batch[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return prior.eval()
