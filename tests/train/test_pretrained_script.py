"""scripts/train_pretrained.py keeps a shipped token prior only when the tokens cannot change."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from vtok import create_tokenizer, load

SCRIPT = Path(__file__).parents[2] / "scripts" / "train_pretrained.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_pretrained", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipped(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    dest = tmp_path / "shipped"
    create_tokenizer("test-conv2d").save_pretrained(dest)
    prior = {"codebook_size": 16, "tokenizer_id": load(dest).tokenizer_id}
    (dest / "prior.json").write_text(json.dumps(prior, indent=2) + "\n")
    (dest / "prior.safetensors").write_bytes(b"weights")
    (dest / "TRAINING.md").write_text("# old\n\nstages\n\n## Token prior\n\nMade by X.\n")
    return dest


def _changed(source: Path, out: Path, part: str) -> Path:
    model = load(source)
    with torch.no_grad():
        next(getattr(model, part).parameters()).add_(0.1)
    model.save_pretrained(out)
    return out


def test_a_new_decoder_keeps_the_prior_under_the_new_id(tmp_path):
    dest = _shipped(tmp_path)
    new = _changed(dest, tmp_path / "new", "decoder")
    files = _script().kept_prior(dest, new)
    assert files["prior.safetensors"] == b"weights"
    assert json.loads(files["prior.json"])["tokenizer_id"] == load(new).tokenizer_id
    assert load(new).tokenizer_id != load(dest).tokenizer_id
    assert files["TRAINING.md"].decode() == "\n## Token prior\n\nMade by X.\n"


def test_a_new_encoder_drops_the_prior(tmp_path, capsys):
    dest = _shipped(tmp_path)
    assert _script().kept_prior(dest, _changed(dest, tmp_path / "new", "encoder")) == {}
    assert "retrain its prior" in capsys.readouterr().out


def test_each_recipe_ends_in_the_shipped_tokenizers_shape():
    from vtok.models.presets import PRESETS

    for name, stages in _script().RECIPES.items():
        last = stages[-1]
        made = create_tokenizer(last.preset, **last.model)
        assert made.config == load(name).config, name
    conv_stages = _script().RECIPES["conv2d-f8"]
    grown = [i for i, s in enumerate(conv_stages) if s.grow_codebook]
    assert grown == [3, 4]  # 128 -> 192 -> 256 codes, each from the stage before
    assert all(conv_stages[i].init == conv_stages[i - 1].out + "/model" for i in grown)
    assert PRESETS.get("conv2d-f8-cpu")().quantizer_options == {"codebook_size": 256}
