"""Codebook state stays bit-identical across 2 DDP ranks fed different data (gloo, CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    load = lambda name: torch.load(out / name, weights_only=True)
    return {kind: [load(f"{kind}_rank{r}.pt") for r in (0, 1)] for kind in ("synced", "unsynced")}


@pytest.mark.ddp
def test_codebooks_are_bit_identical_across_ranks(states):
    rank0, rank1 = states["synced"]
    assert rank0.keys() == rank1.keys()
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert different == []
    assert rank0["restarts"] > 0  # restarts ran, so their sync was exercised
    codebooks = [k for k in rank0 if k.endswith("codebook")]
    assert len(codebooks) == 7  # vq_ema, vq_cosine, rvq x2, gvq x2, vq_learned


@pytest.mark.ddp
def test_without_sync_the_ranks_drift_apart(states):
    rank0, rank1 = states["unsynced"]
    codebooks = [k for k in rank0 if k.endswith("codebook")]
    assert all(not torch.equal(rank0[k], rank1[k]) for k in codebooks)
