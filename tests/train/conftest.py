import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """A few small synthetic photos (smooth gradients plus noise) and one corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    for i in range(4):
        base = np.stack([xx * (i + 1) % 1, yy, (xx + yy) / 2], -1)
        img = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return root


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """Three small lossless videos (12 frames of 40x36 at 10 fps: a pattern moving right)."""
    pytest.importorskip("av")
    from tests.data.test_video import write_clip

    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:40] / 40.0
    for v in range(3):
        frames = []
        for t in range(12):
            base = np.stack([(xx - 0.04 * t * (v + 1)) % 1, yy, (xx + yy) * (v + 1) / 2 % 1], -1)
            noisy = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
            frames.append((noisy * 255).astype(np.uint8))
        write_clip(root / f"{v}.mkv", frames)
    return root
