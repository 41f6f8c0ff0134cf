import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vtok.train import checkpoint as ckpt
from vtok.train.checkpoint import STATE, TENSORS, CheckpointError


def _save(directory, step, keep=5):
    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return ckpt.save_checkpoint(directory, step, {"model": model.state_dict()}, {"opt": opt},
                                {"note": "x", "betas": (0.9, 0.99)}, keep=keep)


def _strip_checksums(path):
    meta = json.loads((path / STATE).read_text())
    del meta[ckpt.TENSORS_SUM], meta[ckpt.STATE_SUM]
    (path / STATE).write_text(json.dumps(meta))


def _flip_bytes(path, start, count=8):
    data = bytearray(path.read_bytes())
    start %= len(data)
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    path.write_bytes(bytes(data))


def _rename_a_tensor(path):
    tensors = load_file(str(path / TENSORS))
    tensors["model.renamed"] = tensors.pop("model.weight")
    save_file(tensors, str(path / TENSORS))


def _edit_state(path):
    meta = json.loads((path / STATE).read_text())
    meta["optimizers"]["opt"][0]["lr"] = 1.0
    (path / STATE).write_text(json.dumps(meta))


CORRUPTIONS = {
    "weights truncated": (lambda p: (p / TENSORS).write_bytes((p / TENSORS).read_bytes()[:50]),
                          "state.safetensors does not match the checksum"),
    "weights overwritten": (lambda p: _flip_bytes(p / TENSORS, -8),
                            "state.safetensors does not match the checksum"),
    "weights renamed": (_rename_a_tensor, "state.safetensors does not match the checksum"),
    "weights missing": (lambda p: (p / TENSORS).unlink(), "no state.safetensors"),
    "state cut short": (lambda p: (p / STATE).write_text((p / STATE).read_text()[:40]),
                        "state.json is not readable JSON"),
    "state garbage": (lambda p: (p / STATE).write_bytes(b"\x80\xff\x00garbage"),
                      "state.json is not readable JSON"),
    "state empty": (lambda p: (p / STATE).write_text(""), "state.json is not readable JSON"),
    "state a list": (lambda p: (p / STATE).write_text("[1, 2]"), "holds a list, not an object"),
    "state edited": (_edit_state, "state.json does not match its checksum"),
    "state missing": (lambda p: (p / STATE).unlink(), "no state.json"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_damaged_checkpoint_is_refused_naming_it(tmp_path, kind):
    path = _save(tmp_path, 4)
    damage, message = CORRUPTIONS[kind]
    damage(path)
    with pytest.raises(CheckpointError, match=message) as err:
        ckpt.load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / TENSORS).write_bytes((p / TENSORS).read_bytes()[:50]),
     "not a readable safetensors file"),
    (lambda p: _flip_bytes(p / TENSORS, 0), "not a readable safetensors file"),
    (lambda p: (p / STATE).write_text(json.dumps({"step": 3, "optimizers": {}})),
     "gives step 3, the folder name 4"),
    (lambda p: (p / STATE).write_text(json.dumps({"step": 4})), "no optimizer settings"),
])
def test_checkpoints_without_checksums_are_still_parsed_and_checked(tmp_path, damage, message):
    path = _save(tmp_path, 4)
    _strip_checksums(path)
    tensors, meta = ckpt.load_checkpoint(path)  # an intact one made before the checksums
    assert meta["step"] == 4 and "model.weight" in tensors
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_checkpoint(path)


def test_the_state_records_checksums_and_round_trips(tmp_path):
    path = _save(tmp_path, 2)
    meta = json.loads((path / STATE).read_text())
    assert meta[ckpt.TENSORS_SUM] == ckpt.file_sha256(path / TENSORS)
    tensors, loaded = ckpt.load_checkpoint(path)
    assert loaded["betas"] == [0.9, 0.99] and loaded["note"] == "x"
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt.restore_optimizer(opt, "opt", tensors, loaded)
    assert opt.param_groups[0]["lr"] == 1e-3


def test_load_newest_falls_back_with_a_warning_and_says_when_none_is_usable(tmp_path):
    for step in (2, 4, 6):
        _save(tmp_path, step)
    _flip_bytes(tmp_path / "step-0000006" / TENSORS, -8)
    (tmp_path / "step-0000004" / STATE).write_text("{")
    with pytest.warns(UserWarning) as caught:
        assert ckpt.load_newest(tmp_path, lambda path, t, m: path.name) == "step-0000002"
    shown = [str(w.message) for w in caught]
    assert any("step-0000006: state.safetensors does not match" in m for m in shown)
    assert any("step-0000004: state.json is not readable JSON" in m for m in shown)

    def refuse(path, tensors, meta):
        raise CheckpointError(path, "does not fit this model")

    with pytest.warns(UserWarning), pytest.raises(ValueError) as err:
        ckpt.load_newest(tmp_path, refuse)
    text = str(err.value)
    assert text.startswith(f"{tmp_path.parent}: no usable checkpoint in {tmp_path}")
    assert "step-0000006: state.safetensors" in text and "step-0000002: does not fit" in text
    with pytest.raises(ValueError, match="no checkpoint"):
        ckpt.load_newest(tmp_path / "empty", refuse)


def test_restore_optimizer_refuses_state_that_does_not_fit(tmp_path):
    tensors, meta = ckpt.load_checkpoint(_save(tmp_path, 2))
    wide = torch.nn.Linear(5, 2)
    with pytest.raises(ValueError, match=r"opt.state.0.exp_avg(_sq)? has shape \(2, 3\)"):
        ckpt.restore_optimizer(torch.optim.AdamW(wide.parameters()), "opt", tensors, meta)
    with pytest.raises(ValueError, match="optimizer dopt: no parameter groups"):
        ckpt.restore_optimizer(torch.optim.AdamW(wide.parameters()), "dopt", tensors, meta)
    with pytest.raises(ValueError, match="no CPU random generator state"):
        ckpt.restore_rng({"cpu": torch.zeros(3, dtype=torch.uint8)})


def test_saving_replaces_damaged_newer_checkpoints_and_keeps_the_newest(tmp_path):
    for step in (2, 4, 6):
        _save(tmp_path, step)
    (tmp_path / "step-0000006" / STATE).write_text("{")
    # a run resumed from step 2 (the newer ones damaged) writes step 4 again
    _save(tmp_path, 4, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000004", "step-0000002"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"


_RANK_WORKER = """
import sys, warnings
from pathlib import Path
import torch.distributed as dist
import torch
from vtok.train import checkpoint as ckpt
from vtok.train.checkpoint import CheckpointError
from vtok.train.distributed import Context, RankGroup

rank, folder = int(sys.argv[1]), Path(sys.argv[2])
dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank,
                        world_size=2)

def use(path, tensors, meta):
    if rank == 1 and path.name == "step-0000006":  # only rank 1 cannot use the newest
        raise CheckpointError(path, "unreadable on this rank")
    return path.name

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    chosen = ckpt.load_newest(folder / "ckpt", use, warn=True,
                              ranks=RankGroup(Context(rank, 2, torch.device("cpu"))))
(folder / f"rank{rank}.txt").write_text(chosen + "\\n" + "\\n".join(str(w.message)
                                                                  for w in caught))
dist.destroy_process_group()
"""


def test_ranks_resume_from_the_same_checkpoint_when_one_rank_cannot_use_the_newest(tmp_path):
    import subprocess
    import sys

    for step in (4, 6):
        _save(tmp_path / "ckpt", step)
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_WORKER, str(rank), str(tmp_path)])
             for rank in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rank0 = (tmp_path / "rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "rank1.txt").read_text().splitlines()
    assert rank0[0] == rank1[0] == "step-0000004"
    assert any("step-0000006: another rank could not use it" in line for line in rank0)
    assert any("step-0000006: unreadable on this rank" in line for line in rank1)
