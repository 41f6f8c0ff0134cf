import subprocess
import sys

import pytest

import vtok
from vtok.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"vtok {vtok.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: vtok" in capsys.readouterr().out


def test_list_names_every_quantizer(capsys):
    assert main(["list", "quantizers"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["bsq", "fsq", "gvq", "lfq", "msrvq", "rvq", "vq"]


def test_unknown_command_exits_non_zero(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["frobnicate"])
    assert stop.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_console_script_help_runs():
    done = subprocess.run([sys.executable, "-m", "vtok", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "list" in done.stdout


def test_list_presets_and_pretrained(capsys):
    assert main(["list", "presets"]) == 0
    out = capsys.readouterr().out
    assert "conv2d-f8-cpu" in out and "titok-s-128" in out and "test-titok" in out
    assert main(["list", "pretrained"]) == 0
    assert "conv2d-f8      conv2d  1024 per 256x256 image (x8 grid)" in capsys.readouterr().out


def test_commands_name_vtok_data_prepare_when_the_cache_is_empty(tmp_path, capsys,
                                                                 no_fetching):
    import numpy as np
    from PIL import Image

    from vtok.models import create_tokenizer

    empty = tmp_path / "empty"
    create_tokenizer("test-titok").save_pretrained(tmp_path / "titok")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-t", str(tmp_path / "titok"),
                 "--target-lpips", "0.5", "-o", str(tmp_path / "a.vtok"),
                 "--cache", str(empty)]) == 1
    err = capsys.readouterr().err
    assert f"vtok encode: LPIPS weights not found in {empty / 'weights'}" in err
    assert f"run `vtok data prepare --lpips --cache {empty}`" in err
    assert main(["train", "--preset", "test-conv2d", "--steps", "1", "--lpips-weight", "0",
                 "--out", str(tmp_path / "run"), "--cache", str(empty)]) == 1
    err = capsys.readouterr().err
    assert f"vtok train: default photos not found in {empty / 'photos' / 'train'}" in err
    assert f"run `vtok data prepare --photos --cache {empty}`" in err
    assert main(["train", "--preset", "test-conv2d", "--steps", "1", "--data", str(tmp_path),
                 "--out", str(tmp_path / "run2"), "--cache", str(empty)]) == 1
    assert "vtok train: LPIPS weights not found" in capsys.readouterr().err
    assert not empty.exists()
