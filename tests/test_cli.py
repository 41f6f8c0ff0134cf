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
