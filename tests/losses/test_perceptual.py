import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from vtok.losses.lpips_weights import read_numpy_pickle
from vtok.losses.perceptual import LPIPS


@pytest.fixture(scope="module")
def alex():
    return LPIPS("alex")


def _astronaut_256():
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((256, 256), Image.BICUBIC)


def _tensor(im):
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255


def _blur(x, sigma):
    k = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-k**2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(x, (0, 0, 6, 6), mode="reflect"), k.transpose(-1, -2), groups=3)


def test_an_image_against_itself_is_zero_and_blur_raises_the_distance(alex):
    x = _tensor(_astronaut_256())
    assert alex(x, x).item() == 0.0
    distances = [alex(x, _blur(x, s)).item() for s in (0.5, 1.0, 2.0, 3.0)]
    assert distances == sorted(distances) and distances[0] > 0.001


def test_known_values_for_jpeg_on_astronaut(alex):
    # reference values measured with the lpips v0.1 AlexNet model (shared/DATA.md)
    im = _astronaut_256()
    x = _tensor(im)
    got = []
    for quality in (90, 50, 10):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        got.append(alex(x, _tensor(Image.open(buf))).item())
    assert got == pytest.approx([0.005, 0.027, 0.157], abs=0.0015)


def test_batches_give_per_image_distances_and_gradients(alex):
    x = torch.rand(3, 3, 64, 64, requires_grad=True)
    y = torch.rand(3, 3, 64, 64)
    d = alex(x, y)
    assert d.shape == (3,)
    assert torch.allclose(d[1], alex(x[1:2], y[1:2])[0], atol=1e-6)
    d.sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in alex.parameters())


def test_vgg_variant_loads_and_orders_distortions():
    vgg = LPIPS("vgg")
    x = _tensor(_astronaut_256())[:, :, :128, :128]
    assert vgg(x, x).item() == 0.0
    assert vgg(x, _blur(x, 0.7)).item() < vgg(x, _blur(x, 2.0)).item()


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"convs.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not LPIPS-alex weights"):
        LPIPS("alex", weights=path)
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        LPIPS("alex", weights=tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="net must be one of alex, vgg"):
        LPIPS("squeeze")


def test_the_unpickler_accepts_numpy_arrays_only():
    good = pickle.dumps({"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}})
    assert read_numpy_pickle(good)["a"]["kernel"].tolist() == [[0, 1, 2], [3, 4, 5]]
    evil = pickle.dumps({"x": print})
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        read_numpy_pickle(evil)
