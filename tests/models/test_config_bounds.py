"""Tokenizer configs are checked (types, bounds, estimated size) before anything is built, and
every way a tokenizer folder can be broken is one ValueError naming the folder."""

import dataclasses
import json
import shutil

import pytest
import torch

from vtok.models import (
    PRESETS,
    ConvTokenizer,
    ConvTokenizerConfig,
    TiTokConfig,
    Tokenizer,
    create_tokenizer,
    load,
    preset_config,
)
from vtok.models import base as models_base
from vtok.models.limits import MAX_CODEBOOK_SIZE, MAX_PARAMETERS


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    create_tokenizer("test-conv2d").save_pretrained(root / "conv")
    create_tokenizer("test-titok").save_pretrained(root / "titok")
    return root


def _config_with(**fields):
    return lambda c: {**c, "config": {**c["config"], **fields}}


def _quantizer_options(options):
    return lambda c: {**c, "config": {**c["config"], "quantizer_options": options}}


# (case, source folder, how config.json is changed: a function of the parsed JSON or raw bytes,
#  what the message says after the folder)
MALFORMED = [
    ("not json", "conv", b"{", "not valid JSON"),
    ("not utf-8", "conv", b"\xff\xfe{}", "not valid JSON"),
    ("deeply nested", "conv", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ("a list", "conv", b"[]", "must hold a JSON object, got list"),
    ("no config", "conv", lambda c: {"architecture": "conv2d"}, '"config" must be an object'),
    ("config is a list", "conv", lambda c: {**c, "config": []}, '"config" must be an object'),
    ("config is null", "conv", lambda c: {**c, "config": None}, '"config" must be an object'),
    ("architecture is a number", "conv", lambda c: {**c, "architecture": 5},
     '"architecture" must be a name'),
    ("unknown architecture", "conv", lambda c: {**c, "architecture": "vit9"},
     "unknown tokenizer architecture 'vit9'"),
    ("unknown field", "conv", _config_with(colour=3), "has no field colour"),
    ("channels as text", "conv", _config_with(channels="64"),
     r"channels must be an integer in \[1, 512\], got '64'"),
    ("channels as bool", "conv", _config_with(channels=True),
     r"channels must be an integer in \[1, 512\], got True"),
    ("channels huge", "conv", _config_with(channels=2000),
     r"channels must be an integer in \[1, 512\], got 2000"),
    ("channels float", "conv", _config_with(channels=8.0), r"channels must be an integer"),
    ("latent_dim zero", "conv", _config_with(latent_dim=0), r"latent_dim must be an integer"),
    ("latent_dim huge", "conv", _config_with(latent_dim=10**9), r"latent_dim must be an integer"),
    ("channel_mult text", "conv", _config_with(channel_mult="1248"),
     r"channel_mult must be a list of 1 to 6 integers"),
    ("channel_mult empty", "conv", _config_with(channel_mult=[]),
     r"channel_mult must be a list of 1 to 6 integers"),
    ("channel_mult too long", "conv", _config_with(channel_mult=[1] * 7),
     r"channel_mult must be a list of 1 to 6 integers"),
    ("channel_mult float", "conv", _config_with(channel_mult=[1, 2.5]),
     r"channel_mult must be an integer in \[1, 16\] \(each of \(1, 2.5\)\), got 2.5"),
    ("channel_mult bool", "conv", _config_with(channel_mult=[1, True]), r"got True"),
    ("too wide", "conv", _config_with(channels=512, channel_mult=[1, 8]),
     "reaches 4096 channels, over the limit of 2048"),
    ("num_res_blocks null", "conv", _config_with(num_res_blocks=None), "num_res_blocks must be"),
    ("attention as text", "conv", _config_with(attention="yes"),
     "attention must be true or false, got 'yes'"),
    ("quantizer not a name", "conv", _config_with(quantizer=["vq"]), "quantizer must be a string"),
    ("unknown quantizer", "conv", _config_with(quantizer="pq"), "unknown quantizer 'pq'"),
    ("options a list", "conv", _quantizer_options([]), "quantizer_options must be a dict"),
    ("quantizer refuses an option", "conv", _quantizer_options({"codebook_size": 16, "x": 1}),
     "quantizer 'vq' has no option x"),
    ("quantizer refuses a value", "conv", _quantizer_options({"codebook_size": 1}),
     r"codebook_size must be an integer in \[2, 262144\], got 1"),
    ("quantizer refuses a choice", "conv",
     _quantizer_options({"codebook_size": 16, "distance": "l1"}), "distance must be one of"),
    ("codebook huge", "conv", _quantizer_options({"codebook_size": 1 << 30}),
     r"quantizer_options.codebook_size must be an integer in \[2, 262144\]"),
    ("nested codebook huge", "conv", lambda c: {**c, "config": {
        **c["config"], "quantizer": "rvq", "quantizer_options": {
            "num_quantizers": 2, "quantizer_options": {"codebook_size": 1 << 30}}}},
     r"quantizer_options.quantizer_options.codebook_size must be an integer"),
    ("weights do not fit", "conv", _config_with(channels=16),
     "weights do not fit this conv2d tokenizer"),
    ("titok heads", "titok", _config_with(heads=3), r"width \(32\) must be a multiple of 4 and"),
    ("titok dropout text", "titok", _config_with(nested_dropout="0.5"),
     "nested_dropout must be a number"),
    ("titok tokens huge", "titok", _config_with(num_latent_tokens=10**6),
     r"num_latent_tokens must be an integer in \[1, 4096\]"),
    ("titok patches", "titok", _config_with(image_size=4096, patch_size=8),
     "gives 262144 patches, over the limit of 4096"),
    ("titok too big", "titok", _config_with(width=2048, depth=48, heads=16),
     "parameters, over the limit of 1500M"),
    ("titok codec", "titok", _config_with(pixel_codec=None), "pixel_codec must be a string"),
]


@pytest.mark.parametrize("case,source,change,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_config_is_a_value_error_naming_the_folder(saved, tmp_path, case, source,
                                                              change, message):
    folder = tmp_path / "bad tokenizer"
    shutil.copytree(saved / source, folder)
    path = folder / "config.json"
    data = change if isinstance(change, bytes) else json.dumps(change(json.loads(
        path.read_text()))).encode()
    path.write_bytes(data)
    for loader in (load, Tokenizer.from_pretrained):
        with pytest.raises(ValueError, match=message) as caught:
            loader(folder)
        assert str(folder) in str(caught.value)


@pytest.mark.parametrize("breakage", ["no folder", "empty folder", "config is a folder",
                                      "no weights", "weights garbage", "config too large"])
def test_a_broken_folder_is_a_value_error_naming_it(saved, tmp_path, breakage):
    folder = tmp_path / "tok"
    if breakage != "no folder":
        shutil.copytree(saved / "conv", folder)
    if breakage == "empty folder":
        shutil.rmtree(folder)
        folder.mkdir()
    elif breakage == "config is a folder":
        (folder / "config.json").unlink()
        (folder / "config.json").mkdir()
    elif breakage == "no weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "weights garbage":
        (folder / "model.safetensors").write_bytes(b"\x10" * 64)
    elif breakage == "config too large":
        (folder / "config.json").write_text(" " * (2 << 20) + "{}")
    with pytest.raises(ValueError) as caught:
        Tokenizer.from_pretrained(folder)
    assert str(folder) in str(caught.value)


def test_huge_channels_are_refused_by_the_config_check_before_anything_is_built(
        saved, tmp_path, monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(ConvTokenizer, "__init__", built)
    monkeypatch.setattr(models_base, "load_file", built)
    folder = tmp_path / "huge"
    shutil.copytree(saved / "conv", folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["channels"] = 10**6
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{folder}: ConvTokenizerConfig.channels must be an "
                                         r"integer in \[1, 512\], got 1000000"):
        load(folder)
    with pytest.raises(ValueError, match="channels must be an integer in"):
        ConvTokenizerConfig(channels=10**6)


def test_the_parameter_budget_refuses_combinations_of_allowed_values():
    with pytest.raises(ValueError, match="ConvTokenizerConfig would hold about .*M parameters, "
                                         "over the limit of 1500M"):
        ConvTokenizerConfig(channels=512, channel_mult=(1, 2, 4, 4), num_res_blocks=8)


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_fits_the_bounds_and_its_estimate_is_close(name):
    config = preset_config(name)  # checked on construction
    with torch.device("meta"):  # build without allocating, to count the real weights
        model = create_tokenizer(name)
    real = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("quantizer."))
    assert 0.9 * real <= config.parameter_estimate() <= 1.1 * real
    # room above the published scales (the largest, TiTok-L-32, holds 641M)
    assert config.parameter_estimate() < MAX_PARAMETERS / 2


def test_every_int_field_has_a_bound_and_lists_become_tuples():
    from vtok.models.titok_published import PublishedTiTokConfig
    from vtok.models.vqgan import LlamaGenVQConfig, TamingVQGANConfig

    for cls in (ConvTokenizerConfig, TiTokConfig, LlamaGenVQConfig, TamingVQGANConfig,
                PublishedTiTokConfig):
        for f in dataclasses.fields(cls):
            if str(f.type) in ("int", "tuple[int, ...]"):
                assert f.name in cls.LIMITS, f"{cls.__name__}.{f.name} has no bound"
    config = ConvTokenizerConfig(channel_mult=[1, 2], quantizer_options={"codebook_size": 16})
    assert config.channel_mult == (1, 2)
    assert ConvTokenizerConfig(quantizer_options={"codebook_size": MAX_CODEBOOK_SIZE})
    assert ConvTokenizerConfig(quantizer="lfq", latent_dim=20, quantizer_options={})
