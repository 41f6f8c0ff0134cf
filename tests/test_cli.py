import json
import subprocess
import sys

import pytest

import vtok
from vtok.cli import main
from vtok.models.shipped import tokenizer_dir


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


def test_every_subcommand_builds_its_options(capsys):
    from vtok.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as stop:
            main([name, "--help"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: vtok {name}")
        if name in ("demo", "encode", "reduce-bench", "train"):
            assert "--cache DIR" in out, name


def test_help_list_and_info_do_not_import_torch(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-t", "conv2d-f8", "-o",
                 str(tmp_path / "a.vtok")]) == 0
    script = (
        "import sys\n"
        "from vtok.cli import main\n"
        "for argv in (['--help'], ['list', 'quantizers'], ['list', 'presets'],\n"
        "             ['list', 'pretrained'], ['info', sys.argv[1]]):\n"
        "    try:\n"
        "        assert main(argv) == 0\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'safetensors', 'PIL', 'jsonargparse',\n"
        "                           'yaml') if m in sys.modules)\n"
        "print('heavy:', heavy)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.vtok")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
    stored = json.loads((tokenizer_dir("conv2d-f8") / "config.json").read_text())
    assert f"tokenizer {stored['tokenizer_id']} (conv2d-f8)" in done.stdout  # the stored id
    assert "titok-flex     titok" in done.stdout and "vq       Nearest-code" in done.stdout


def test_list_shows_what_the_live_registries_hold():
    from vtok.cli.list_cmd import first_line, registered
    from vtok.models.presets import PRESETS
    from vtok.quant import QUANTIZERS

    for kind, registry in (("quantizers", QUANTIZERS), ("presets", PRESETS)):
        found = registered(kind)
        assert list(found) == registry.names()
        assert {n: first_line(d) for n, d in found.items()} == {
            n: first_line(registry.get(n).__doc__) for n in registry.names()}


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
