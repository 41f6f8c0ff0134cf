"""A run whose steps are mostly skipped (non-finite loss or gradient) fails without a model."""

import math
import warnings
from collections import deque

import pytest
import torch

from vtok.cli import main
from vtok.train import TrainConfig, train
from vtok.train import loop as loop_module
from vtok.train.checkpoint import list_checkpoints, load_checkpoint
from vtok.train.loop import TrainingFailed, _too_many_skipped

BASE = dict(preset="test-conv2d", steps=12, batch_size=2, crop_size=32, warmup=1,
            gan_weight=0.0, log_every=1, sample_every=1000, checkpoint_every=1000,
            skip_window=4, progress=False)


def _config(photo_dir, out, **changes):
    return TrainConfig(**{**BASE, "data": str(photo_dir), "out": str(out), **changes})


def _infinite_lr(monkeypatch):
    # what --lr Infinity did before options were checked: the first update makes every
    # weight non-finite, every later loss is NaN and its step skipped
    monkeypatch.setattr(loop_module, "lr_factor", lambda step, config: math.inf)


def test_an_infinite_lr_run_fails_and_writes_no_model(photo_dir, tmp_path, monkeypatch):
    _infinite_lr(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingFailed, match=r"stopped at step 4: 3 of the last 4 steps had "
                                                 r"a non-finite loss .* no model exported"):
            train(_config(photo_dir, tmp_path / "r"))
    assert not (tmp_path / "r" / "model").exists()
    assert not (tmp_path / "r" / "summary.json").exists()
    rows = (tmp_path / "r" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1"]  # the only step with values


def test_the_cli_exits_non_zero_on_a_failed_run(photo_dir, tmp_path, monkeypatch, capsys):
    _infinite_lr(monkeypatch)
    args = ["train", "--preset", "test-conv2d", "--data", str(photo_dir), "--out",
            str(tmp_path / "r"), "--steps", "12", "--crop-size", "32", "--batch-size", "2",
            "--gan-weight", "0", "--skip-window", "4", "--progress", "false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 1
    err = capsys.readouterr().err
    assert "vtok train: training failed:" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "model").exists()


def test_non_finite_weights_are_never_checkpointed(photo_dir, tmp_path, monkeypatch):
    _infinite_lr(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingFailed, match="at step 1 the model, ema weights hold "
                                                 "non-finite values; not saved"):
            train(_config(photo_dir, tmp_path / "r", checkpoint_every=1))
    assert list_checkpoints(tmp_path / "r" / "checkpoints") == []
    assert not (tmp_path / "r" / "model").exists()


def test_mostly_skipped_steps_stop_the_run_keeping_the_last_good_checkpoint(
        photo_dir, tmp_path, monkeypatch):
    real_create = loop_module.create_tokenizer
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        model = real_create(*args, **kwargs)
        forward = model.forward

        def nan_from_step_3(images):
            out = forward(images)
            calls["n"] += 1
            if calls["n"] >= 3:
                out["recon"] = out["recon"] * float("nan")
            return out

        model.forward = nan_from_step_3
        return model

    monkeypatch.setattr(loop_module, "create_tokenizer", poisoned)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingFailed, match=r"stopped at step 5: 3 of the last 4 .*"
                                                 r"last checkpoint kept: .*step-0000004"):
            train(_config(photo_dir, tmp_path / "r", checkpoint_every=2))
    assert not (tmp_path / "r" / "model").exists()
    kept = list_checkpoints(tmp_path / "r" / "checkpoints")
    assert [p.name for p in kept] == ["step-0000004", "step-0000002"]
    tensors, meta = load_checkpoint(kept[0])
    assert meta["skipped_steps"] == 2
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("flags,last,fails", [
    ([False, True, True, False], False, False),  # half of a full window: allowed
    ([True, True, True, False], False, True),
    ([True, True], False, False),  # window not full yet
    ([True, True], True, True),  # a short run ends mostly skipped
    ([False, True, False], True, False),
])
def test_the_skip_rule(flags, last, fails):
    config = TrainConfig(preset="test-conv2d", crop_size=32, skip_window=4)
    assert _too_many_skipped(deque(flags, maxlen=4), config, last) is fails
