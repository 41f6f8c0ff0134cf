"""Writes the golden entropy-coding fixtures in this folder (run once; the test only reads):

    python tests/codec/golden/make.py

prior.json + prior.safetensors: a small integer grid prior (16 codes) fitted to run-length
grids; tokens.npy: three 8x8 grids; entropy-v2.vtok: them entropy-coded under that prior.
Rewriting them changes the bytes the golden test pins, so do it only with a format change.
"""

from pathlib import Path

import numpy as np
import torch

from vtok.codec import to_vtok
from vtok.codec.entropy import EntropyCoder
from vtok.codec.intprior import quantize_prior
from vtok.codec.prior import PriorConfig, train_prior
from vtok.models.base import Tokens

HERE = Path(__file__).parent
TOKENIZER_ID = "00000000000000aa"


def smooth_grids(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.repeat(rng.integers(0, 16, (n, 8, 2)), 4, axis=2)
    flips = rng.random(grids.shape) < 0.05
    grids[flips] = rng.integers(0, 16, flips.sum())
    return grids


def main() -> None:
    train = torch.from_numpy(smooth_grids(256, 0))
    config = PriorConfig(16, "grid", TOKENIZER_ID, embed_dim=16, hidden=64)
    prior = quantize_prior(train_prior(train, config, steps=300, batch_size=32, lr=5e-3), train)
    prior.save(HERE)
    tokens = smooth_grids(3, 1)
    np.save(HERE / "tokens.npy", tokens)
    batch = Tokens(torch.from_numpy(tokens), (8, 8), (64, 64), TOKENIZER_ID, 64)
    vfile = to_vtok([batch], 16, EntropyCoder(prior), names=["a", "b", "c"])
    (HERE / "entropy-v2.vtok").write_bytes(vfile.to_bytes())


if __name__ == "__main__":
    main()
