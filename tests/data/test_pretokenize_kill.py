"""Exactly once: `vtok tokenize` killed with SIGKILL at random moments, then run again, ends
with the rows of an uninterrupted run, none twice, and never leaves a partial shard."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vtok
from tests.data.shard_helpers import make_images, read_rows, save_tokenizer, shard_files
from vtok.cli import main

pq = pytest.importorskip("pyarrow.parquet")
SRC = Path(vtok.__file__).resolve().parents[1]


def _records(out: Path) -> int:
    progress = out / "_progress"
    return len(list(progress.glob("shard-*.json"))) if progress.is_dir() else 0


def _check_whole(out: Path) -> None:
    """Every shard in the folder reads whole, and no row is there twice."""
    seen = set()
    for path in sorted(out.glob("shard-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            ident = (row["key"], row["view"], row["flip"])
            assert ident not in seen, f"{ident} twice"
            seen.add(ident)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_9_at_random_moments_then_rerun(tmp_path):
    conv = save_tokenizer(tmp_path / "conv")
    make_images(tmp_path / "in", [f"{i:02d}.png" for i in range(15)])
    (tmp_path / "in" / "07b.png").write_bytes(b"broken")
    args = ["tokenize", "-t", str(conv), "-i", str(tmp_path / "in"), "--size", "8",
            "--hflip", "--shard-size", "2", "--batch-size", "1"]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vtok", *args, "-o", str(out)]
    rng = random.Random(17)
    shards, killed, target = 8, 0, 0
    for _ in range(4):
        target = min(shards - 1, target + rng.randint(0, 3))  # records to wait for
        job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while job.poll() is None and _records(out) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # anywhere: mid-batch, mid-write, mid-rename
        if job.poll() is not None:
            break
        job.send_signal(signal.SIGKILL)
        job.wait()
        killed += 1
        if out.exists():
            _check_whole(out)
    assert killed >= 2
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh = tmp_path / "fresh"
    assert main([*args, "-o", str(fresh)]) == 0
    assert read_rows(out) == read_rows(fresh)
    _check_whole(out)
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, fresh))
    assert ours["shards"] == theirs["shards"] and ours["skipped"] == theirs["skipped"]
    assert ours["complete"] and ours["items"] == 16 and ours["rows"] == 30
    assert shard_files(out) == shard_files(fresh)  # no temp file, no extra shard
