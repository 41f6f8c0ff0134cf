"""Every training option is checked (type and range) before any work; --config and
--print_config."""

import math

import pytest
import yaml

from vtok.cli import main
from vtok.cli.train_cmd import read_options
from vtok.train import TrainConfig
from vtok.train.config import ConfigError


@pytest.mark.parametrize("args,option,value,allowed", [
    (["--lr", "Infinity"], "--lr", "got Infinity", "expected float"),
    (["--lr", "nan"], "--lr", "got nan", "expected float"),
    (["--lr", ".inf"], "--lr", "got inf", "a finite number"),  # YAML's infinity is a float
    (["--lr", "true"], "--lr", "got True", "expected float"),
    (["--lr", "abc"], "--lr", "got abc", "expected float"),
    (["--lr", "5"], "--lr", "got 5", "a finite number in [0, 1]"),
    (["--bf16", "yes"], "--bf16", "'yes'", "true, false or null"),
    (["--progress", "1"], "--progress", "'1'", "true or false"),
    (["--batch-size", "1.5"], "--batch-size", "got 1.5", "expected int"),
    (["--steps", "1.5"], "--steps", "got 1.5", "expected int"),
    (["--batch-size", "true"], "--batch-size", "got True", "expected int"),
    (["--stop-at", "x"], "--stop-at", "got x", "expected int or null"),
    (["--crop-size", "4"], "--crop-size", "got 4", "a multiple of 2 in [32, 2048]"),
    (["--crop-size", "20000"], "--crop-size", "got 20000", "an integer in [1, 2048]"),
    (["--disc-layers", "9"], "--disc-layers", "got 9", "an integer in [1, 8]"),
    (["--disc-layers", "4", "--crop-size", "32"], "--disc-layers", "got 4",
     "in [1, 3] for 32x32 crops"),
    (["--stop-at", "9", "--steps", "8"], "--stop-at", "got 9", "an integer in [1, steps=8]"),
    (["--model.channels", "100000"], "--model.channels", "got 100000",
     "an integer in [1, 512]"),
    (["--model.channels", "1e3"], "--model.channels", "got 1000.0", "expected int"),
    (["--model.attention", "1"], "--model.attention", "'1'", "true or false"),
    (["--model.channel_mult", "1", "2", "99"], "--model.channel_mult", "[1, 2, 99]",
     "integers in [1, 16]"),
    (["--model.channel_mult", "1,2"], "--model.channel_mult", "got 1,2", "expected int"),
    (["--model.quantizer_options", "[1]"], "--model.quantizer_options", "got [1]",
     "expected dict"),
    (["--model.quantizer_options", '{"codebook_size": 1000000}'], "--model.*",
     "'codebook_size': 1000000", "an integer in [2, 262144], got 1000000"),
    (["--model.latent_dim", "30", "--model.quantizer", "lfq", "--model.quantizer_options",
      "{}"], "--model.*", "'latent_dim': 30", "more than 262,144"),
    (["--model.quantizer_options", '{"bogus": 1}'], "--model.*", "'bogus': 1",
     "has no option bogus"),
    (["--preset", "nope"], "--preset", "'nope'", "unknown tokenizer preset"),
    (["--config", "no-such-file.yaml"], "--config", "no-such-file.yaml", "does not exist"),
])
def test_a_bad_option_exits_2_naming_option_value_and_allowed(tmp_path, capsys, args, option,
                                                                value, allowed):
    out = tmp_path / "run"
    assert main(["train", "--preset", "test-conv2d", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vtok train: option " + option + ":"), err
    assert value in err and allowed in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("args,message", [
    (["--learning-rate", "1"], "unrecognized arguments: --learning-rate 1"),
    (["--batch_size", "1"], "unrecognized arguments: --batch_size 1"),  # options use dashes
    (["--model.colour", "1"], "unrecognized arguments: --model.colour 1"),
    (["--model.width", "64"], "unrecognized arguments: --model.width 64"),  # titok's, not conv's
    (["--train-only"], "option --train-only: expected at least one argument"),
])
def test_unknown_options_exit_2_naming_them(tmp_path, capsys, args, message):
    assert main(["train", "--preset", "test-conv2d", "--out", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.strip() == f"vtok train: {message}"


def test_the_run_folder_is_required(capsys):
    assert main(["train", "--preset", "test-conv2d"]) == 2
    assert "vtok train: the following arguments are required: --out" in capsys.readouterr().err


def test_good_options_parse_to_their_types():
    config, resume = read_options(
        ["--preset", "test-conv2d", "--out", "r", "--crop-size", "32", "--lr", "1e-4",
         "--min-scale=.5", "--warmup", "3", "--bf16", "false", "--stop-at", "null",
         "--train-only", "decoder", "--lpips-net", "vgg", "--model.channels", "16",
         "--model.channel_mult", "1", "4", "--model.quantizer_options",
         '{"codebook_size": 8}', "--model.attention", "false", "--resume"])
    assert resume is True
    assert (config.lr, config.min_scale, config.warmup, config.bf16, config.stop_at,
            config.train_only, config.lpips_net) == (1e-4, 0.5, 3, False, None, ["decoder"],
                                                     "vgg")
    # only what differs from the preset (attention false is its own value), lists for tuples
    assert config.model == {"channels": 16, "channel_mult": [1, 4],
                            "quantizer_options": {"codebook_size": 8}}
    assert config == TrainConfig(preset="test-conv2d", out="r", crop_size=32, lr=1e-4,
                                 min_scale=0.5, warmup=3, bf16=False, train_only=["decoder"],
                                 lpips_net="vgg", model=config.model)
    assert isinstance(TrainConfig(lr=1).lr, float)


def test_model_options_are_the_chosen_presets(tmp_path):
    config, _ = read_options(["--preset", "test-titok", "--out", "r", "--model.depth", "2",
                              "--model.pixel_codec", "patches"])
    assert config.preset == "test-titok" and config.model == {"depth": 2}
    file = tmp_path / "preset.json"
    file.write_text('{"preset": "test-titok", "model": {"depth": 2}}')
    config, _ = read_options(["--preset", "test-conv2d", "--config", str(file), "--out", "r"])
    assert config.preset == "test-titok" and config.model == {"depth": 2}  # the later one


def _printed_config(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(["train", *argv, "--print_config"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_print_config_gives_a_config_file_that_reproduces_the_run(tmp_path, capsys):
    argv = ["--preset", "test-titok", "--out", str(tmp_path / "run"), "--crop-size", "32",
            "--lr", "1e-4", "--bf16", "true", "--train-only", "decoder", "quantizer",
            "--model.depth", "2", "--model.quantizer_options", "{codebook_size: 8}"]
    printed = _printed_config(capsys, argv)
    values = yaml.safe_load(printed)
    assert values["lr"] == 1e-4 and values["crop_size"] == 32 and values["resume"] is False
    assert values["model"]["depth"] == 2 and values["model"]["width"] == 32  # every field
    file = tmp_path / "run.yaml"
    file.write_text(printed)
    assert read_options(["--config", str(file)]) == read_options(argv)
    assert read_options(["--config", str(file)])[0].model == {
        "depth": 2, "quantizer_options": {"codebook_size": 8}}
    assert _printed_config(capsys, ["--config", str(file)]) == printed
    assert not (tmp_path / "run").exists()


def test_a_yaml_config_with_a_model_mapping_and_an_option_that_wins(tmp_path):
    file = tmp_path / "small.yaml"
    file.write_text("preset: test-conv2d\nout: runs/small\ncrop_size: 32\nlr: 0.001\n"
                    "progress: false\nmodel:\n  channels: 12\n  channel_mult: [1, 1]\n"
                    "  quantizer_options: {codebook_size: 32}\n")
    config, resume = read_options(["--config", str(file), "--lr", "5e-4",
                                   "--model.channels", "16"])
    assert (config.lr, config.crop_size, config.progress, config.out, resume) == (
        5e-4, 32, False, "runs/small", False)
    assert config.model == {"channels": 16, "channel_mult": [1, 1],
                            "quantizer_options": {"codebook_size": 32}}
    # an option before --config is overridden by the file
    assert read_options(["--lr", "5e-4", "--config", str(file)])[0].lr == 0.001


@pytest.mark.parametrize("text,message", [
    ("lr: true\n", "option --lr: expected float, got True"),
    ("model: {colour: 1}\n", "unknown option --model.colour"),
    ("progress: 3\n", "option --progress: expected true or false, got 3"),
])
def test_a_config_file_is_checked_like_the_command_line(tmp_path, capsys, text, message):
    file = tmp_path / "bad.yaml"
    file.write_text("preset: test-conv2d\n" + text)
    assert main(["train", "--config", str(file), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == f"vtok train: {message}"


@pytest.mark.parametrize("changes,field,message", [
    ({"progress": 1}, "progress", "TrainConfig.progress must be true or false, got 1"),
    ({"bf16": "yes"}, "bf16", "TrainConfig.bf16 must be true, false or null"),
    ({"crop_size": True}, "crop_size", "TrainConfig.crop_size must be an integer"),
    ({"lr": math.inf}, "lr", "TrainConfig.lr must be a finite number in [0, 1], got inf"),
    ({"gan_weight": math.nan}, "gan_weight", "TrainConfig.gan_weight must be a finite number"),
    ({"beta1": True}, "beta1", "TrainConfig.beta1 must be a finite number in [0, 1)"),
    ({"seed": -1}, "seed", "TrainConfig.seed must be an integer in [0, 2147483647]"),
    ({"skip_window": 0}, "skip_window", "TrainConfig.skip_window must be an integer in [1, "),
    ({"max_skipped_fraction": 2.0}, "max_skipped_fraction", "must be a finite number in [0, 1]"),
    ({"crop_size": 36, "preset": "test-titok"}, "crop_size", "a multiple of 8 in [32, 128]"),
    ({"model": {"depth": 1000}, "preset": "test-titok"}, "model.depth",
     "TrainConfig.model.depth must be an integer in [1, 48], got 1000"),
    ({"model": {"nested_dropout": math.nan}, "preset": "test-titok"}, "model.nested_dropout",
     "must be a finite number"),
    ({"model": {"width": 30}, "preset": "test-titok"}, "model",
     "the 'test-titok' model cannot be built"),
])
def test_the_config_refuses_bad_values_naming_the_field(changes, field, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{"preset": "test-conv2d", "crop_size": 32, **changes})
    assert err.value.field == field and message in str(err.value)


def test_models_whose_quantizer_computes_while_built_are_checked_too():
    fsq = {"quantizer": "fsq", "quantizer_options": {"levels": [5, 5]}}
    assert TrainConfig(preset="test-conv2d", crop_size=32, model=fsq).model == fsq
    with pytest.raises(ConfigError, match="num_quantizers must be an integer in \\[1, 64\\]"):
        TrainConfig(preset="test-conv2d", crop_size=32, model={
            "quantizer": "rvq", "quantizer_options": {"num_quantizers": 1000, "quantizer": "fsq",
                                                      "levels": [5, 5]}})
    with pytest.raises(ConfigError, match="over the limit of 1500M|more than 1,500,000,000"):
        TrainConfig(preset="test-conv2d", crop_size=32, model={
            **fsq, "channels": 512, "channel_mult": [4, 4, 4, 4], "num_res_blocks": 8})
