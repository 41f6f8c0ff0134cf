"""Every training option is checked (type and range) before any work."""

import math
import re

import pytest

from vtok.cli import main
from vtok.cli.train_cmd import parse_overrides, parse_value
from vtok.train import TrainConfig
from vtok.train.config import ConfigError


@pytest.mark.parametrize("args,option,value,allowed", [
    (["--lr", "Infinity"], "--lr", "'Infinity'", "a finite number"),
    (["--lr", "nan"], "--lr", "'nan'", "a finite number"),
    (["--lr", "true"], "--lr", "'true'", "a finite number"),
    (["--lr", "5"], "--lr", "got 5", "a finite number in [0, 1]"),
    (["--bf16", "yes"], "--bf16", "'yes'", "true or false"),
    (["--progress", "1"], "--progress", "'1'", "true or false"),
    (["--batch-size", "1.5"], "--batch-size", "'1.5'", "an integer"),
    (["--batch-size", "true"], "--batch-size", "'true'", "an integer"),
    (["--crop-size", "4"], "--crop-size", "got 4", "a multiple of 2 in [32, 2048]"),
    (["--crop-size", "20000"], "--crop-size", "got 20000", "an integer in [1, 2048]"),
    (["--disc-layers", "9"], "--disc-layers", "got 9", "an integer in [1, 8]"),
    (["--disc-layers", "4", "--crop-size", "32"], "--disc-layers", "got 4",
     "in [1, 3] for 32x32 crops"),
    (["--stop-at", "9", "--steps", "8"], "--stop-at", "got 9", "an integer in [1, steps=8]"),
    (["--model.channels", "100000"], "--model.channels", "got 100000",
     "an integer in [1, 512]"),
    (["--model.attention", "1"], "--model.attention", "'1'", "true or false"),
    (["--model.channel_mult", "1,2,99"], "--model.channel_mult", "[1, 2, 99]",
     "integers in [1, 16]"),
    (["--model.quantizer_options", '{"codebook_size": 1000000}'], "--model.*",
     "'codebook_size': 1000000", "an integer in [2, 262144], got 1000000"),
    (["--model.latent_dim", "30", "--model.quantizer", "lfq", "--model.quantizer_options",
      "{}"], "--model.*", "'latent_dim': 30", "more than 262,144"),
    (["--model.quantizer_options", '{"bogus": 1}'], "--model.*", "'bogus': 1",
     "has no option bogus"),
    (["--preset", "nope"], "--preset", "'nope'", "unknown tokenizer preset"),
])
def test_a_bad_option_exits_2_naming_option_value_and_allowed(tmp_path, capsys, args, option,
                                                                value, allowed):
    out = tmp_path / "run"
    assert main(["train", "--preset", "test-conv2d", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vtok train: option " + option), err
    assert value in err and allowed in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before any work


def test_good_options_parse_to_their_types():
    train, model = parse_overrides(
        ["--lr", "1e-4", "--min-scale=.5", "--warmup", "3", "--bf16", "false", "--stop-at",
         "null", "--train-only", "decoder", "--lpips-net", "vgg", "--model.channels", "16",
         "--model.channel_mult", "1,2", "--model.quantizer_options", '{"codebook_size": 8}'],
        "test-conv2d")
    assert train == {"lr": 1e-4, "min_scale": 0.5, "warmup": 3, "bf16": False, "stop_at": None,
                     "train_only": ["decoder"], "lpips_net": "vgg"}
    assert model == {"channels": 16, "channel_mult": [1, 2],
                     "quantizer_options": {"codebook_size": 8}}
    config = TrainConfig(preset="test-conv2d", crop_size=32, model=model, **train)
    assert config.lr == 1e-4 and isinstance(TrainConfig(lr=1).lr, float)


@pytest.mark.parametrize("kind,text", [
    ("int", "1.5"), ("int", "true"), ("int", "1e3"), ("float", "true"), ("float", "-inf"),
    ("float", "Infinity"), ("bool", "1"), ("bool", "yes"), ("bool", "null"),
    ("bool | None", "yes"), ("tuple[int, ...]", "4"), ("dict[str, Any]", "[1]"),
])
def test_strict_value_parsing(kind, text):
    with pytest.raises(ValueError, match=f"option --x must be .*, got {re.escape(repr(text))}"):
        parse_value("--x", text, kind)


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
