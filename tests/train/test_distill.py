import csv
import warnings

import pytest
import torch

from vtok.models import create_tokenizer, load
from vtok.train.checkpoint import latest_checkpoint, load_checkpoint
from vtok.train.distill import DistillConfig, distill, latest_student, prefix_length


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(0)
    return create_tokenizer("test-conv2d").save_pretrained(tmp_path_factory.mktemp("teacher"))


def _config(photo_dir, teacher_dir, out, **changes):
    base = dict(teacher=str(teacher_dir), preset="test-titok-conv", data=str(photo_dir),
                val_data=str(photo_dir), out=str(out), steps=8, batch_size=4, crops=16,
                crop_size=32, warmup=2, log_every=2, save_every=4, progress=False)
    return DistillConfig(**{**base, **changes})


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt photo is reported, checked elsewhere
        return function(*args, **kwargs)


def test_student_learns_the_teachers_codes_and_keeps_its_conv_pair(photo_dir, teacher_dir,
                                                                   tmp_path):
    config = _config(photo_dir, teacher_dir, tmp_path, steps=80, lr=2e-3, full_tokens=1.0,
                     log_every=10, save_every=40)
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = distill(config)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["loss"]) < 0.7 * float(rows[0]["loss"])
    assert float(rows[-1]["accuracy"]) > float(rows[0]["accuracy"]) + 0.1
    assert summary["steps_done"] == 80 and 0 <= summary["val_acc_8"] <= 1

    teacher, student = load(teacher_dir), load(tmp_path / "model")
    assert student.architecture == "titok"
    for mine, theirs in ((student.pixel_encoder, teacher.encoder),
                         (student.pixel_decoder, teacher.decoder)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name
    assert torch.equal(student.grid_codebook, teacher.quantizer.decode(torch.arange(16)))
    x = torch.rand(2, 3, 32, 32)
    assert student.decode(student.encode(x, num_tokens=3)).shape == x.shape


def test_teacher_codes_are_cached_per_teacher_and_crops(photo_dir, teacher_dir, tmp_path):
    from safetensors.torch import load_file

    _quiet(distill, _config(photo_dir, teacher_dir, tmp_path, steps=1))
    cache = tmp_path / "teacher-codes.safetensors"
    first = load_file(str(cache))
    assert first["grids"].shape == (16, 4, 16, 16) and first["codes"].shape == (16, 16, 16)
    _quiet(distill, _config(photo_dir, teacher_dir, tmp_path, steps=1, seed=1))
    again = load_file(str(cache))  # another seed: other crops, so the cache was remade
    assert not torch.equal(again["grids"], first["grids"])


def test_resume_continues_exactly(photo_dir, teacher_dir, tmp_path):
    _quiet(distill, _config(photo_dir, teacher_dir, tmp_path / "a"))
    _quiet(distill, _config(photo_dir, teacher_dir, tmp_path / "b", stop_at=4))
    assert not (tmp_path / "b" / "model").exists()  # not finished yet
    assert latest_student(tmp_path / "b").architecture == "titok"  # its last checkpoint
    summary = _quiet(distill, _config(photo_dir, teacher_dir, tmp_path / "b"), resume=True)
    assert summary["steps_done"] == 8
    a, _ = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    with pytest.raises(ValueError, match="made with another DistillConfig"):
        _quiet(distill, _config(photo_dir, teacher_dir, tmp_path / "b", lr=1e-3), resume=True)


def test_continuous_steps_pass_latents_unquantized_then_seed_the_codes(photo_dir, teacher_dir,
                                                                       tmp_path):
    config = _config(photo_dir, teacher_dir, tmp_path, continuous_steps=4, log_every=1)
    _quiet(distill, config)
    with open(tmp_path / "log.csv") as f:
        usage = [float(row["usage"]) for row in csv.DictReader(f)]
    assert usage[:4] == [0.0] * 4 and all(u > 0 for u in usage[4:])
    student = load(tmp_path / "model")
    assert bool(student.quantizer.initialized)  # k-means ran on the step-5 latents
    with pytest.raises(ValueError, match=r"continuous_steps must be an integer in \[0, steps=8\)"):
        DistillConfig(steps=8, continuous_steps=8)


def test_prefixes_are_log_uniform_with_some_full_steps():
    config = DistillConfig(full_tokens=0.25)
    ks = [prefix_length(step, config, 128) for step in range(4000)]
    assert min(ks) == 1 and max(ks) == 128
    full = sum(k == 128 for k in ks) / len(ks)
    short = sum(k <= 11 for k in ks) / len(ks)  # about half of the prefixes (11 ~ sqrt(129))
    assert 0.22 < full < 0.28
    assert 0.33 < short < 0.42  # half of the 75 % that are prefixes


def test_teacher_and_student_must_fit(photo_dir, teacher_dir, tmp_path):
    titok = create_tokenizer("test-titok").save_pretrained(tmp_path / "titok")
    with pytest.raises(ValueError, match="teacher must be a conv2d tokenizer, not 'titok'"):
        distill(_config(photo_dir, titok, tmp_path / "a"))
    with pytest.raises(ValueError, match="'test-titok' is not a titok with pixel_codec='conv'"):
        distill(_config(photo_dir, teacher_dir, tmp_path / "b", preset="test-titok"))
    with pytest.raises(ValueError, match=r"predicts \(8, 4\) grid codes but the teacher has"):
        distill(_config(photo_dir, teacher_dir, tmp_path / "c", model={"grid_codes": 8}))
    with pytest.raises(ValueError, match="conv pair does not fit"):
        distill(_config(photo_dir, teacher_dir, tmp_path / "d", model={"conv_channels": 4}))


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="DistillConfig.crops must be an integer >= 1"):
        DistillConfig(crops=0)
    with pytest.raises(ValueError, match=r"DistillConfig.full_tokens must be a number in"):
        DistillConfig(full_tokens=1.5)
    with pytest.raises(ValueError, match=r"DistillConfig.stop_at must be in \[1, steps=10\]"):
        DistillConfig(steps=10, stop_at=11)
