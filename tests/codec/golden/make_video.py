"""Writes the golden video entropy-coding fixtures in video/ (run once; the test only reads):

    python tests/codec/golden/make_video.py

video/prior.json + prior.safetensors: a small integer grid3d prior (16 codes) fitted to
latent frames that mostly repeat the previous one; video/tokens.npy: three (3, 4, 5) token
arrays; video/entropy-grid3d.vtok: them entropy-coded under that prior, as clips of 9 frames at
25 fps. Rewriting them changes the bytes the golden test pins, so do it only with a format
change.
"""

from pathlib import Path

import numpy as np
import torch

from vtok.codec import to_vtok
from vtok.codec.entropy import EntropyCoder
from vtok.codec.intprior import quantize_prior
from vtok.codec.prior import PriorConfig, train_prior
from vtok.models.base import Tokens

HERE = Path(__file__).parent / "video"
TOKENIZER_ID = "00000000000000bb"


def mostly_static(n: int, seed: int, shape=(3, 4, 5), k: int = 16) -> np.ndarray:
    """Token clips whose first latent frame is runs of two and whose later frames repeat the
    previous one except for 10 % of the tokens."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    first = np.repeat(rng.integers(0, k, (n, h, (w + 1) // 2)), 2, axis=2)[:, :, :w]
    frames = [first]
    for _ in range(1, t):
        nxt = frames[-1].copy()
        moved = rng.random(nxt.shape) < 0.1
        nxt[moved] = rng.integers(0, k, moved.sum())
        frames.append(nxt)
    return np.stack(frames, 1)


def main() -> None:
    train = torch.from_numpy(mostly_static(128, 0))
    config = PriorConfig(16, "grid3d", TOKENIZER_ID, embed_dim=8, hidden=32)
    prior = quantize_prior(train_prior(train, config, steps=150, batch_size=16, lr=1e-2), train)
    prior.save(HERE)
    tokens = mostly_static(3, 1)
    np.save(HERE / "tokens.npy", tokens)
    batch = Tokens(torch.from_numpy(tokens), (3, 4, 5), (16, 20), TOKENIZER_ID, 60, frames=9,
                   fps=(25, 1))
    vfile = to_vtok([batch], 16, EntropyCoder(prior), names=["a", "b", "c"])
    (HERE / "entropy-grid3d.vtok").write_bytes(vfile.to_bytes())


if __name__ == "__main__":
    main()
