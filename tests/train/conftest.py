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
