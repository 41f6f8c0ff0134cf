import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from vtok.cli import main
from vtok.train import TrainConfig, train
from vtok.train import loop as loop_module
from vtok.train.checkpoint import latest_checkpoint, load_checkpoint
from vtok.train.loop import lr_factor


def _config(photo_dir, out, **changes):
    base = dict(preset="test-conv2d", data=str(photo_dir), out=str(out), steps=100,
                batch_size=2, crop_size=32, warmup=10, gan_start=30, log_every=10,
                sample_every=50, checkpoint_every=1000, progress=False)
    return TrainConfig(**{**base, **changes})


@pytest.mark.parametrize("preset", ["test-conv2d", "test-titok"])
def test_resume_continues_exactly(photo_dir, tmp_path, preset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt photo is reported, checked elsewhere
        straight = train(_config(photo_dir, tmp_path / "a", preset=preset))
        train(_config(photo_dir, tmp_path / "b", preset=preset, stop_at=50))
        assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-0000050"
        assert not (tmp_path / "b" / "model").exists()  # not finished yet
        resumed = train(_config(photo_dir, tmp_path / "b", preset=preset), resume=True)
    assert straight["steps_done"] == resumed["steps_done"] == 100
    a, _ = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert a.keys() == b.keys()
    assert any(k.startswith("disc.") for k in a) and any(k.startswith("dopt.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    lines = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("100,")


def test_a_finished_run_exports_a_loadable_model_and_logs(photo_dir, tmp_path):
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = train(_config(photo_dir, tmp_path / "r", steps=20, sample_every=10))
    assert list(summary["skipped_images"]) == [str(photo_dir / "broken.jpg")]
    from vtok import load

    model = load(tmp_path / "r" / "model")
    x = torch.rand(1, 3, 32, 32)
    assert model.decode(model.encode(x)).shape == x.shape
    assert sorted(p.name for p in (tmp_path / "r" / "samples").iterdir()) == [
        "step-0000010.png", "step-0000020.png"]
    header = (tmp_path / "r" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"l1", "lpips", "psnr", "usage", "perplexity", "dead_fraction", "lr"} <= set(header)
    assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))


def test_init_starts_from_a_tokenizer_directory_and_refuses_misfits(photo_dir, tmp_path):
    from vtok import create_tokenizer, load

    source = create_tokenizer("test-conv2d")
    with torch.no_grad():
        for param in source.parameters():
            param.add_(torch.randn_like(param))  # far from any fresh initialization
    source.save_pretrained(tmp_path / "source")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(photo_dir, tmp_path / "tuned", steps=2, lr=0.0, gan_weight=0.0,
                      init=str(tmp_path / "source")))
    tuned = load(tmp_path / "tuned" / "model")
    # lr 0: the parameters are exactly the initial ones (only EMA codebook buffers may move)
    for (name, a), b in zip(source.named_parameters(), tuned.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="holds a 'conv2d' tokenizer, but preset makes a 'titok'"):
        train(_config(photo_dir, tmp_path / "t", preset="test-titok", steps=2,
                      init=str(tmp_path / "source")))
    with pytest.raises(ValueError, match="weights do not fit"):
        train(_config(photo_dir, tmp_path / "w", steps=2, model={"channels": 16},
                      init=str(tmp_path / "source")))
    with pytest.raises(ValueError, match="neither a tokenizer directory nor a shipped"):
        train(_config(photo_dir, tmp_path / "m", steps=2, init=str(tmp_path / "missing")))


def test_train_only_the_decoder_keeps_every_token(photo_dir, tmp_path):
    from vtok import create_tokenizer, load

    torch.manual_seed(1)
    source = create_tokenizer("test-conv2d")
    source.save_pretrained(tmp_path / "source")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(photo_dir, tmp_path / "tuned", steps=20, gan_start=5,
                      init=str(tmp_path / "source"), train_only=["decoder"]))
    tuned = load(tmp_path / "tuned" / "model")
    before, after = source.state_dict(), tuned.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"decoder"}  # encoder, codebook and its statistics untouched
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(source.encode(x).indices, tuned.encode(x).indices)
    with pytest.raises(ValueError, match="has no part 'decodr'; its parts: quantizer, encoder"):
        train(_config(photo_dir, tmp_path / "bad", steps=2, train_only=["decodr"]))


def test_grow_codebook_fine_tunes_into_a_larger_vq_codebook(photo_dir, tmp_path):
    from vtok import create_tokenizer, load

    torch.manual_seed(2)
    source = create_tokenizer("test-conv2d")
    source.quantizer.initialized.fill_(True)  # as if trained: k-means would not run again
    source.save_pretrained(tmp_path / "source")
    bigger = {"quantizer_options": {"codebook_size": 24}}
    grown = create_tokenizer("test-conv2d", **bigger)
    loop_module.init_from(grown, tmp_path / "source", grow=True)
    old, new = source.state_dict(), grown.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old if not k.startswith("quantizer."))
    assert torch.equal(new["quantizer.codebook"][:16], old["quantizer.codebook"])
    assert torch.equal(new["quantizer.ema_count"].sum(), old["quantizer.ema_count"].sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(photo_dir, tmp_path / "grown", steps=3, gan_weight=0.0, model=bigger,
                      grow_codebook=True, init=str(tmp_path / "source")))
    trained = load(tmp_path / "grown" / "model")
    assert trained.codebook_size == 24
    x = torch.rand(4, 3, 32, 32)
    assert trained.decode(trained.encode(x)).shape == x.shape
    with pytest.raises(ValueError, match="has 16 codes, the model 24: set grow_codebook"):
        train(_config(photo_dir, tmp_path / "plain", steps=2, model=bigger,
                      init=str(tmp_path / "source")))
    with pytest.raises(ValueError, match="grows to between 17 and 32 codes, not 40"):
        train(_config(photo_dir, tmp_path / "far", steps=2, grow_codebook=True,
                      model={"quantizer_options": {"codebook_size": 40}},
                      init=str(tmp_path / "source")))
    with pytest.raises(ValueError,
                       match=r"grown: weights do not fit this conv2d tokenizer \(missing"):
        train(_config(photo_dir, tmp_path / "wide", steps=2, grow_codebook=True,
                      model={**bigger, "channels": 16}, init=str(tmp_path / "source")))
    with pytest.raises(ValueError, match="only a 'vq' codebook grows"):
        train(_config(photo_dir, tmp_path / "fsq", steps=2, grow_codebook=True,
                      model={"quantizer": "fsq", "quantizer_options": {"levels": [5, 5]}},
                      init=str(tmp_path / "source")))


def test_non_finite_steps_are_skipped_and_reported(photo_dir, tmp_path, monkeypatch):
    real_create = loop_module.create_tokenizer
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        model = real_create(*args, **kwargs)
        forward = model.forward

        def maybe_nan(images):
            out = forward(images)
            calls["n"] += 1
            if calls["n"] == 3:
                out["recon"] = out["recon"] * float("nan")
            return out

        model.forward = maybe_nan
        return model

    monkeypatch.setattr(loop_module, "create_tokenizer", poisoned)
    with pytest.warns(UserWarning, match="step 3: non-finite loss"):
        summary = train(_config(photo_dir, tmp_path / "n", steps=6, gan_start=100))
    assert summary["skipped_steps"] == 1
    from vtok import load

    weights = load(tmp_path / "n" / "model").state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())


def test_runs_are_not_overwritten_and_resume_checks_the_config(photo_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(photo_dir, tmp_path / "x", steps=4))
        with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
            train(_config(photo_dir, tmp_path / "x", steps=4))
        with pytest.raises(ValueError, match="cannot resume with a different lr"):
            train(_config(photo_dir, tmp_path / "x", steps=8, lr=1.0), resume=True)
        with pytest.raises(ValueError, match="nothing to resume"):
            train(_config(photo_dir, tmp_path / "empty", steps=4), resume=True)


@pytest.mark.parametrize("changes,message", [
    ({"steps": 0}, r"TrainConfig.steps must be an integer in \[1, 1000000000\], got 0"),
    ({"lr": -1.0}, r"TrainConfig.lr must be a finite number in \[0, 1\], got -1.0"),
    ({"ema_decay": 1.0}, r"TrainConfig.ema_decay must be a finite number in \[0, 1\)"),
    ({"stop_at": 500}, r"TrainConfig.stop_at must be an integer in \[1, steps=100\]"),
    ({"lpips_net": "squeeze"}, "TrainConfig.lpips_net must be 'alex' or 'vgg'"),
    ({"init": ""}, "TrainConfig.init must be a path or shipped name"),
    ({"train_only": "decoder"}, "TrainConfig.train_only must be a non-empty list"),
    ({"grow_codebook": True}, "TrainConfig.grow_codebook needs init"),
    ({"grow_codebook": 1, "init": "x"}, "TrainConfig.grow_codebook must be true or false"),
])
def test_bad_training_config_names_the_field(photo_dir, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _config(photo_dir, tmp_path, **changes)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    c = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(10, c) == pytest.approx(1.0) and lr_factor(100, c) == pytest.approx(0.1)
    values = [lr_factor(s, c) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)


def test_cli_reports_bad_options(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--learning-rate", "1"]) == 2
    assert "unrecognized arguments: --learning-rate 1" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--model.colour", "1", "--preset",
                 "test-conv2d"]) == 2
    assert "unrecognized arguments: --model.colour 1" in capsys.readouterr().err


@pytest.mark.ddp
def test_torchrun_two_processes_on_cpu(photo_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vtok", "train", "--preset", "test-titok", "--data", str(photo_dir),
           "--steps", "6", "--out", str(tmp_path / "ddp"), "--batch-size", "2",
           "--crop-size", "32", "--gan-start", "3", "--log-every", "2", "--progress", "false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert '"world_size": 2' in (tmp_path / "ddp" / "config.json").read_text()
    assert (tmp_path / "ddp" / "model" / "model.safetensors").exists()
    assert len((tmp_path / "ddp" / "log.csv").read_text().splitlines()) == 4
    state, _ = load_checkpoint(latest_checkpoint(tmp_path / "ddp" / "checkpoints"))
    assert "rng.0.cpu" in state and "rng.1.cpu" in state
