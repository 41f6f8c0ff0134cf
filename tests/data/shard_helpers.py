"""Shared by the `vtok tokenize` tests: tiny datasets and reading token folders back."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtok.models import create_tokenizer


def save_tokenizer(folder: Path, preset: str = "test-conv2d") -> Path:
    torch.manual_seed(0)
    create_tokenizer(preset).save_pretrained(folder)
    return folder


def make_images(root: Path, names, size=(20, 24), seed=0) -> list[Path]:
    """Small smooth RGB images (a random 3x3 field upscaled) at root/NAME."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, name in enumerate(names):
        h, w = size[0] + i % 3, size[1] + i % 2
        field = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        image = Image.fromarray(field).resize((w, h), Image.BICUBIC)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(path)
    return paths


def read_rows(out: Path) -> list[dict]:
    """Every row of the folder's shards (as the manifest lists them), sorted."""
    import pyarrow.parquet as pq

    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        if shard["file"]:
            rows += pq.read_table(out / shard["file"]).to_pylist()
    return sorted(rows, key=lambda r: (r["key"], r["view"], r["flip"]))


def shard_files(out: Path) -> list[str]:
    """The file names in the folder, temp files included (there should be none)."""
    return sorted(p.name for p in out.iterdir() if p.is_file())
