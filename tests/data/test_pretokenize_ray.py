"""`vtok tokenize --engine ray` on a local Ray (two CPUs) writes the rows and manifest the
local engine writes."""

import json

import pytest

from tests.data.shard_helpers import make_images, read_rows, save_tokenizer, shard_files
from vtok.cli import main

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")


def test_ray_engine_equals_the_local_engine(tmp_path):
    conv = save_tokenizer(tmp_path / "conv")
    make_images(tmp_path / "in", [f"{c}/{i}.png" for c in "ab" for i in range(3)])
    (tmp_path / "in" / "b" / "bad.png").write_bytes(b"broken")
    args = ["tokenize", "-t", str(conv), "-i", str(tmp_path / "in"), "--size", "8",
            "--hflip", "--shard-size", "2"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main([*args, "-o", str(tmp_path / "ray"), "--engine", "ray",
                     "--workers", "2", "--threads", "1"]) == 0
    finally:
        ray.shutdown()
    assert read_rows(tmp_path / "ray") == read_rows(tmp_path / "local")
    local, remote = (json.loads((tmp_path / d / "manifest.json").read_text())
                     for d in ("local", "ray"))
    assert remote["shards"] == local["shards"] and remote["skipped"] == local["skipped"]
    assert remote["complete"] and len(remote["skipped"]) == 1
    assert shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")
