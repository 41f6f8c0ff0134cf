"""Training a tokenizer of clips (conv3d) on tiny videos: losses and weights, exact resume,
torchrun, the CLI, bad files and options, and one step of every video preset."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from vtok import create_tokenizer, load
from vtok.cli import main
from vtok.losses.gan import LeCam, PatchDiscriminator, PatchDiscriminator3d
from vtok.losses.perceptual import LPIPS
from vtok.losses.total import LossWeights, critic_loss, generator_loss
from vtok.models.conv3d import Conv3dTokenizer
from vtok.models.presets import PRESETS
from vtok.train import TrainConfig, train
from vtok.train.checkpoint import latest_checkpoint, load_checkpoint, module_state
from vtok.train.config import ConfigError

pytest.importorskip("av")

# 5-frame 32x32 clips: the smallest the test-conv3d tokenizer (x4 in time) and LPIPS take
BASE = dict(preset="test-conv3d", steps=4, batch_size=1, crop_size=32, clip_frames=5,
            warmup=1, gan_start=1, disc_channels=16, disc_layers=2, log_every=1,
            sample_every=2, checkpoint_every=1000, progress=False)


def _config(clip_dir, out, **changes):
    return TrainConfig(**{**BASE, "data": str(clip_dir), "out": str(out), **changes})


def _rows(run):
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        del row["seconds"]
    return rows


def _final(run):
    return load_checkpoint(latest_checkpoint(run / "checkpoints"))[0]


def test_training_on_clips_changes_the_weights_with_finite_losses(clip_dir, tmp_path):
    run = tmp_path / "run"
    summary = train(_config(clip_dir, run, steps=3, val_data=str(clip_dir)))
    assert summary["steps_done"] == 3 and summary["skipped_steps"] == 0
    assert summary["skipped_videos"] == {}
    rows = _rows(run)
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    for name in ("l1", "lpips", "quant", "gan_g", "gan_d", "psnr"):
        assert all(math.isfinite(float(r[name])) for r in rows), name
    assert float(rows[-1]["gan_d"]) > 0  # the per-frame critic trained from step 2
    # scored on the first 5 frames of each video at steps 2 and 3 (the last), NaN otherwise
    assert [math.isnan(float(r["val_l1"])) for r in rows] == [True, False, False]
    assert 0 < float(rows[-1]["val_lpips"]) < 1 and float(rows[-1]["val_psnr"]) > 5
    torch.manual_seed(0)  # the run's initial weights
    start = create_tokenizer("test-conv3d").state_dict()
    trained = module_state(_final(run), "model")
    moved = [k for k in start if k.endswith("weight") and not torch.equal(start[k], trained[k])]
    assert len(moved) > 0.9 * sum(k.endswith("weight") for k in start)
    model = load(run / "model")
    clip = torch.rand(1, 5, 3, 32, 32)
    assert model.decode(model.encode(clip)).shape == clip.shape
    assert (run / "samples" / "step-0000002.png").exists()  # the first clip's frames


def test_resume_on_clips_continues_exactly(clip_dir, tmp_path):
    # one-frame steps, random LPIPS frames (the RNG), the 3D critic and EMA all in play
    changes = dict(image_every=3, lpips_frames=2, disc_kind="3d",
                   val_data=str(clip_dir / "0.mkv"))
    train(_config(clip_dir, tmp_path / "straight", **changes))
    train(_config(clip_dir, tmp_path / "resumed", stop_at=2, **changes))
    assert not (tmp_path / "resumed" / "model").exists()
    summary = train(_config(clip_dir, tmp_path / "resumed", **changes), resume=True)
    assert summary["steps_done"] == 4
    a, b = _final(tmp_path / "straight"), _final(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert any(k.startswith("disc.") for k in a) and any(k.startswith("ema.") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "straight")


@pytest.mark.ddp
def test_torchrun_two_processes_on_clips(clip_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vtok", "train", "--preset", "test-conv3d", "--data", str(clip_dir),
           "--steps", "4", "--out", str(tmp_path / "ddp"), "--batch-size", "1",
           "--crop-size", "32", "--clip-frames", "5", "--image-every", "2",
           "--gan-start", "2", "--disc-kind", "3d", "--log-every", "2", "--progress", "false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["clip_frames"] == 5
    assert (tmp_path / "ddp" / "model" / "model.safetensors").exists()
    rows = _rows(tmp_path / "ddp")
    assert [r["step"] for r in rows] == ["2", "4"]
    assert all(math.isfinite(float(r["l1"])) for r in rows)
    state = _final(tmp_path / "ddp")
    assert "rng.0.cpu" in state and "rng.1.cpu" in state


def test_cli_trains_on_a_video_folder_and_skips_a_corrupt_video(clip_dir, tmp_path, capsys):
    data = tmp_path / "videos"
    shutil.copytree(clip_dir, data)
    whole = (data / "2.mkv").read_bytes()
    (data / "2.mkv").write_bytes(whole[: len(whole) // 2])  # breaks off halfway
    (data / "junk.mp4").write_bytes(b"\x00not a video" * 50)
    args = ["train", "--preset", "test-conv3d", "--data", str(data), "--out",
            str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--crop-size", "32",
            "--clip-frames", "5", "--frame-stride", "2", "--gan-start", "1",
            "--progress", "false"]
    with pytest.warns(UserWarning) as caught:
        assert main(args) == 0
    out = capsys.readouterr().out
    messages = " ".join(str(w.message) for w in caught)
    assert str(data / "2.mkv") in messages and str(data / "junk.mp4") in messages
    assert f"skipped 2 unreadable videos or images: {data / '2.mkv'}" in out
    assert json.loads(out.splitlines()[-1])["steps_done"] == 2
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_a_clip_length_the_tokenizer_would_pad_is_refused(clip_dir, tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        _config(clip_dir, tmp_path, clip_frames=6)
    assert err.value.field == "clip_frames"
    assert str(err.value) == ("TrainConfig.clip_frames must be a length preset 'test-conv3d' "
                              "codes without padding (1, 5, 9, 13, 17, ...), got 6")
    # another time grouping, another list
    with pytest.raises(ConfigError, match=r"\(1, 3, 5, 7, 9, \.\.\.\), got 4"):
        _config(clip_dir, tmp_path, clip_frames=4, model={"time_downsample": 2})
    assert main(["train", "--preset", "test-conv3d", "--out", str(tmp_path / "r"),
                 "--crop-size", "32", "--clip-frames", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtok train: option --clip-frames: TrainConfig.clip_frames must be")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="disc_kind '3d' scores clips, but preset "
                                          "'test-conv2d' codes still images"):
        _config(clip_dir, tmp_path, preset="test-conv2d", disc_kind="3d")
    with pytest.raises(ConfigError, match="disc_kind must be '2d' or '3d', got 'video'"):
        _config(clip_dir, tmp_path, disc_kind="video")


def test_default_clips_missing_name_the_prepare_command(tmp_path, capsys):
    args = ["train", "--preset", "test-conv3d", "--out", str(tmp_path / "r"), "--crop-size",
            "32", "--clip-frames", "5", "--lpips-weight", "0", "--cache", str(tmp_path / "c")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "default clips not found" in err and "vtok data prepare --clips --cache" in err


def test_print_config_shows_the_video_fields(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--preset", "test-conv3d", "--out", "r", "--crop-size", "32",
              "--clip-frames", "9", "--disc-kind", "3d", "--print_config"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    for line in ("clip_frames: 9", "frame_stride: 1", "image_every: 0", "lpips_frames: 0",
                 "disc_kind: 3d", "val_data: null", "preset: test-conv3d"):
        assert line in printed.splitlines(), line


def _video_presets():
    names = []
    for name in PRESETS.names():
        with torch.device("meta"):  # no memory, no random numbers
            model = create_tokenizer(name)
        if model.codes_clips:
            names.append((name, sum(p.numel() for p in model.parameters())))
    return names


VIDEO_PRESETS = _video_presets()
WHOLE_RUN_LIMIT = 20_000_000  # weights: larger presets step without the run's files


def test_the_video_presets_are_the_conv3d_ones():
    assert {name for name, _ in VIDEO_PRESETS} == {
        "test-conv3d", "conv3d-f8t4-cpu", "cosmos-dv4x8x8", "magvit2"}


@pytest.mark.parametrize("name,size", [  # magvit2 (3 GB) is slow, as in test_tokenizers.py
    pytest.param(n, s, marks=pytest.mark.slow) if n == "magvit2" else (n, s)
    for n, s in VIDEO_PRESETS], ids=[n for n, _ in VIDEO_PRESETS])
def test_every_video_preset_takes_a_training_step_without_nan(name, size, clip_dir, tmp_path):
    """The small presets: one step of the whole loop (5-frame 32x32 clips, the 3D critic
    and the generator updated). The GPU-scale ones (0.1-0.3 G weights, 1-4 GB of checkpoint
    a run would write, minutes of CPU for a 5-frame clip): the loop's losses on the smallest
    input they and LPIPS take, one 32x32 frame (a one-frame clip), the generator against the
    default per-frame critic and a plain SGD step (AdamW's state would add 1-2 GB), then both
    critics' updates."""
    if size <= WHOLE_RUN_LIMIT:
        run = tmp_path / "run"
        train(_config(clip_dir, run, preset=name, steps=1, gan_start=0, disc_kind="3d"))
        (row,) = _rows(run)
        assert all(math.isfinite(float(row[k])) for k in ("l1", "lpips", "quant", "gan_g"))
        state = _final(run)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        return
    torch.manual_seed(0)
    model = create_tokenizer(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.rand(1, 1, 3, 32, 32)
    weights = LossWeights(l1=1.0, lpips=1.0, gan=0.1, lecam=0.001)
    critics = [PatchDiscriminator(16, 2), PatchDiscriminator3d(16, 2)]
    total, terms, recon = generator_loss(x, model(x), weights, LPIPS(), critics[0], True,
                                         model.last_layer())
    assert torch.isfinite(total), terms
    total.backward()
    assert torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for disc in critics:
        d_loss, _ = critic_loss(disc, LeCam(), x, recon, weights)
        d_loss.backward()
        assert torch.isfinite(d_loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in disc.parameters())


def test_images_mixed_in_train_as_one_frame_clips(clip_dir, photo_dir, tmp_path):
    data = tmp_path / "mixed"
    shutil.copytree(clip_dir, data)
    shutil.copy(photo_dir / "0.png", data / "still.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(_config(data, tmp_path / "left-out", steps=1, gan_weight=0.0))
    assert any("1 images in the data left out: set image_every" in str(w.message)
               for w in caught)
    seen = []
    real_forward = Conv3dTokenizer.forward

    def spy(self, images):
        seen.append(tuple(images.shape))
        return real_forward(self, images)

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("error")  # the images are used: nothing to warn about
        patch.setattr(Conv3dTokenizer, "forward", spy)
        train(_config(data, tmp_path / "mixed-run", steps=4, batch_size=2, image_every=2,
                      gan_weight=0.0))
    assert seen == [(2, 5, 3, 32, 32), (2, 1, 3, 32, 32)] * 2
    with pytest.raises(ValueError, match="holds images only: no video to cut clips of 5"):
        train(_config(photo_dir, tmp_path / "photos", steps=1))


def test_a_video_run_starts_from_an_inflated_image_tokenizer(clip_dir, photo_dir, tmp_path):
    """init = a conv2d folder: its weights inflated (and its codebook grown) into the conv3d
    model, which then codes a still as the image tokenizer does; photo_motion mixes in photos
    seen through a camera move."""
    from vtok.data.video_datasets import clip_items
    from vtok.train.data import TrainingClips
    from vtok.train.loop import init_from

    image = create_tokenizer("test-conv2d").eval()
    image.quantizer.initialized.fill_(True)  # as if trained: only a trained codebook grows
    image.save_pretrained(tmp_path / "image")
    shape = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, latent_dim=4,
                 quantizer="vq", time_downsample=2)
    video = create_tokenizer("test-conv3d", **shape, quantizer_options={"codebook_size": 16})
    init_from(video, tmp_path / "image")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(video.eval().encode(x).indices[:, 0], image.encode(x).indices)
    grown = create_tokenizer("test-conv3d", **shape, quantizer_options={"codebook_size": 24})
    init_from(grown, tmp_path / "image", grow=True)
    assert torch.equal(grown.quantizer.codebook[:16], image.quantizer.codebook)

    config = _config(clip_dir, tmp_path / "run", steps=2, gan_weight=0.0, clip_frames=3,
                     init=str(tmp_path / "image"), grow_codebook=True, photo_motion=0.5,
                     motion_data=str(photo_dir),
                     model={**shape, "quantizer_options": {"codebook_size": 24}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photo_dir's corrupt file is skipped with a warning
        summary = train(config)
        data = TrainingClips(clip_items(clip_dir), config, per_step=1)
        moving = [data.moving_photo(n) for n in range(200)]
        assert 70 <= sum(moving) <= 130  # about half the clips are moving photos
        assert data[moving.index(True)].shape == (3, 3, 32, 32)
        assert all(data.motion[n].shape == (3, 3, 32, 32) for n in range(5))
    assert any(name.endswith("broken.jpg") for name in data.skipped)  # and counted
    assert summary["steps_done"] == 2 and (tmp_path / "run" / "model" / "config.json").exists()
