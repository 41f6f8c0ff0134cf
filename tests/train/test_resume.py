"""Resuming after damage: a damaged newest checkpoint, a moved run folder, a killed process."""

import csv
import json
import re
import shutil
import warnings

import pytest
import torch

from vtok.cli import main
from vtok.train import TrainConfig, train
from vtok.train.checkpoint import STATE, TENSORS, latest_checkpoint, load_checkpoint

# a checkpoint after every step, the GAN (and its optimizer) in use from the second
BASE = dict(preset="test-conv2d", steps=4, batch_size=2, crop_size=32, warmup=1, gan_start=1,
            log_every=1, sample_every=1000, checkpoint_every=1, keep_checkpoints=3,
            progress=False)


def _config(photo_dir, out, **changes):
    return TrainConfig(**{**BASE, "data": str(photo_dir), "out": str(out), **changes})


@pytest.fixture(scope="module")
def runs(photo_dir, tmp_path_factory):
    """`straight`: 4 uninterrupted steps; `stopped`: the same run stopped after step 3."""
    root = tmp_path_factory.mktemp("runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt photo
        train(_config(photo_dir, root / "straight"))
        train(_config(photo_dir, root / "stopped", stop_at=3))
    return root


def _resume(photo_dir, run):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="skipping unreadable image")
        return train(_config(photo_dir, run), resume=True)


def _rows(run):
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.reader(f))
    drop = rows[0].index("seconds")
    return [row[:drop] + row[drop + 1:] for row in rows]


def _assert_same_as_straight(run, straight):
    a, _ = load_checkpoint(latest_checkpoint(straight / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _rows(run) == _rows(straight)  # every step once, with the same values
    assert [r[0] for r in _rows(run)[1:]] == ["1", "2", "3", "4"]
    assert (run / "model" / "model.safetensors").exists()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path):
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(64)  # zeros over the last tensor bytes
    path.write_bytes(bytes(data))


def _legacy_wrong_keys(path):
    """A checkpoint from before the checksums whose tensors have the wrong names."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / TENSORS))
    save_file({k.replace("model.", "modle.", 1): v for k, v in tensors.items()},
              str(path / TENSORS))
    meta = json.loads((path / STATE).read_text())
    del meta["tensors_sha256"], meta["state_sha256"]
    (path / STATE).write_text(json.dumps(meta))


DAMAGE = {
    "truncated weights": (lambda p: _truncate(p / TENSORS), "does not match the checksum"),
    "garbage in the weights": (lambda p: _garbage(p / TENSORS), "does not match the checksum"),
    "wrong tensor names": (_legacy_wrong_keys, "its model tensors do not fit"),
    "bad JSON": (lambda p: _truncate(p / STATE), "state.json is not readable JSON"),
    "edited JSON": (lambda p: (p / STATE).write_text(
        (p / STATE).read_text().replace('"skipped_steps": 0', '"skipped_steps": 3')),
        "state.json does not match its checksum"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_resume_falls_back_past_a_damaged_checkpoint(photo_dir, runs, tmp_path, kind):
    run = tmp_path / "run"
    shutil.copytree(runs / "stopped", run)
    damage, reason = DAMAGE[kind]
    damage(run / "checkpoints" / "step-0000003")
    pattern = re.escape(str(run / "checkpoints" / "step-0000003")) + f": .*{reason}"
    with pytest.warns(UserWarning, match=pattern + ".*trying an older checkpoint"):
        summary = _resume(photo_dir, run)
    assert summary["steps_done"] == 4
    # resumed from step 2 exactly: the same weights, optimizer states and log as no damage
    _assert_same_as_straight(run, runs / "straight")
    for path in (run / "checkpoints").iterdir():  # the damaged one was written again
        load_checkpoint(path)


def test_resume_says_clearly_when_no_checkpoint_is_usable(photo_dir, runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs / "stopped", run)
    _truncate(run / "checkpoints" / "step-0000003" / TENSORS)
    (run / "checkpoints" / "step-0000002" / STATE).write_text("{}")
    _legacy_wrong_keys(run / "checkpoints" / "step-0000001")
    with pytest.warns(UserWarning), pytest.raises(ValueError) as err:
        _resume(photo_dir, run)
    assert re.match(re.escape(f"{run}: no usable checkpoint in {run / 'checkpoints'}"),
                    str(err.value))
    assert "step-0000003: state.safetensors does not match" in str(err.value)
    assert "step-0000002: state.json gives step None" in str(err.value)
    assert "step-0000001: its model tensors do not fit (missing" in str(err.value)
    args = ["train", "--preset", "test-conv2d", "--data", str(photo_dir), "--out", str(run),
            "--resume", "--steps", "4"]
    for key, value in BASE.items():
        if key not in ("preset", "steps"):
            args += [f"--{key.replace('_', '-')}", json.dumps(value)]
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run}: no usable checkpoint" in err and "Traceback" not in err
    assert not (run / "model").exists()


def test_a_moved_run_folder_resumes_exactly(photo_dir, runs, tmp_path):
    shutil.copytree(runs / "stopped", tmp_path / "old")
    moved = tmp_path / "elsewhere" / "new"
    moved.parent.mkdir()
    shutil.move(tmp_path / "old", moved)
    _resume(photo_dir, moved)
    _assert_same_as_straight(moved, runs / "straight")
    assert json.loads((moved / "config.json").read_text())["train"]["out"] == str(moved)
    with pytest.raises(ValueError, match="cannot resume with a different lr"):
        train(_config(photo_dir, moved, lr=1e-3), resume=True)


def test_log_has_each_step_once_after_a_kill_and_resume(photo_dir, runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "stopped", run)
    # killed (kill -9) after logging step 3 but before checkpointing it, in the middle of
    # writing the row of step 4
    shutil.rmtree(run / "checkpoints" / "step-0000003")
    with open(run / "log.csv", "a") as f:
        f.write("4,0.31")
    assert [r[0] for r in _rows(run)[1:]] == ["1", "2", "3", "4"]
    _resume(photo_dir, run)
    _assert_same_as_straight(run, runs / "straight")
