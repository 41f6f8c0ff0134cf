"""Tokenizer ids stored beside the weights: written by save_pretrained, read without torch by
`vtok.models.shipped`, checked when a model is loaded."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from vtok.models import create_tokenizer, list_pretrained, load
from vtok.models.shipped import shipped_name


@pytest.mark.parametrize("name", [p["name"] for p in list_pretrained()])
def test_shipped_folders_store_the_id_of_their_weights(name):
    entry = {p["name"]: p for p in list_pretrained()}[name]
    assert entry["tokenizer_id"] == load(name).tokenizer_id
    assert shipped_name(entry["tokenizer_id"]) == name
    assert shipped_name("0" * 16) is None


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_save_pretrained_stores_the_id_that_loading_recomputes(tmp_path, dtype):
    model = create_tokenizer("test-titok")
    model.save_pretrained(tmp_path, dtype=dtype)
    stored = json.loads((tmp_path / "config.json").read_text())["tokenizer_id"]
    assert stored == load(tmp_path).tokenizer_id
    if dtype is None:
        assert stored == model.tokenizer_id


def test_loading_refuses_weights_that_differ_from_the_stored_id(tmp_path):
    model = create_tokenizer("test-conv2d")
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1
    save_file(state, weights)
    stored = json.loads((tmp_path / "config.json").read_text())["tokenizer_id"]
    with pytest.raises(ValueError, match=f"config.json says tokenizer {stored} but its config "
                                         f"and weights hash to [0-9a-f]{{16}}"):
        load(tmp_path)


def test_folders_saved_without_an_id_still_load(tmp_path):
    model = create_tokenizer("test-conv2d")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["tokenizer_id"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load(tmp_path).tokenizer_id == model.tokenizer_id


def test_loading_through_the_base_module_alone_finds_every_architecture(tmp_path):
    create_tokenizer("test-titok").save_pretrained(tmp_path)
    script = ("import sys\nfrom vtok.models.base import Tokenizer\n"
              "print(type(Tokenizer.from_pretrained(sys.argv[1])).__name__)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "TiTokTokenizer"
