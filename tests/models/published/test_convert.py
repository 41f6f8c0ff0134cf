"""`vtok convert`: release checkpoints -> vtok tokenizer folders, whole or not at all, with one
clear message for each bad input."""

import dataclasses
import zipfile

import pytest
import torch
from safetensors.torch import load_file

import vtok
from vtok.cli import main
from vtok.codec import RawCoder, from_vtok, read_vtok, to_vtok, write_vtok
from vtok.models import Tokenizer

from .test_fixtures import CASES, FIXTURES, TOLERANCE, fixture, reference_steps

HEADS = ["--set", "heads=2", "--set", "decoder_heads=2"]


def args(source: str, kind: str = "container") -> list[str]:
    folder, container, bare, overrides = CASES[source]
    path = FIXTURES / folder / (container if kind == "container" else bare)
    return ["--from", source, str(path)] + (HEADS if overrides else [])


@pytest.mark.parametrize("source", CASES)
def test_convert_writes_a_folder_that_vtok_load_reproduces_the_reference_with(
        source, tmp_path, capsys):
    out = tmp_path / source
    assert main(["convert", *args(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == [source]  # no temp folder left behind
    if source == "llamagen":  # usage counts from training are not part of the tokenizer
        assert "dropped 1 tensor(s) that are not part of the tokenizer: " \
               "quantize.codebook_used" in printed
    tok = vtok.load(out)
    assert isinstance(tok, Tokenizer) and tok.architecture in printed
    expected = fixture(source, "expected")
    got = reference_steps(tok, fixture(source, "inputs")["image"])
    assert torch.equal(got["indices"].reshape(expected["indices"].shape), expected["indices"])
    for name in ("z_prequant", "quant", "recon"):
        assert (got[name] - expected[name]).abs().max() <= TOLERANCE, name


@pytest.mark.parametrize("source", CASES)
def test_converted_tokens_round_trip_through_a_vtok_file(source, tmp_path):
    out = tmp_path / "tok"
    assert main(["convert", *args(source), "--out", str(out)]) == 0
    tok = vtok.load(out)
    pixels = fixture(source, "inputs")["image_uint8_nhwc"].permute(0, 3, 1, 2).float() / 255
    tokens = tok.encode(pixels)
    coder = RawCoder(tok.codebook_size)
    path = write_vtok(tmp_path / "a.vtok", to_vtok([tokens], tok.codebook_size, coder))
    back = from_vtok(read_vtok(path), coder, tok)
    indices = torch.cat([t.indices for t in back])
    assert torch.equal(indices, tokens.indices)
    assert all((t.image_size, t.token_shape, t.tokenizer_id) == (
        tokens.image_size, tokens.token_shape, tokens.tokenizer_id) for t in back)
    # decoded as the same batch, the file's tokens give the same pixels bit for bit
    assert torch.equal(tok.decode(dataclasses.replace(tokens, indices=indices)),
                       tok.decode(tokens))


def test_lightning_loss_tensors_are_dropped_and_named(tmp_path, capsys):
    state = load_file(FIXTURES / "taming_vqgan" / "weights.safetensors")
    state.update({f"loss.discriminator.main.{i}.weight": torch.zeros(2) for i in range(10)})
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, ckpt)
    assert main(["convert", "--from", "taming", str(ckpt), "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "dropped 10 tensor(s) that are not part of the tokenizer: " \
           "loss.discriminator.main.0.weight" in printed and "and 2 more" in printed


def test_a_preset_checks_the_checkpoint_against_the_published_configuration(tmp_path, capsys):
    code = main(["convert", *args("llamagen"), "--preset", "llamagen-vq-16",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "x").exists()
    assert "checkpoint.pt: its tensors do not fit a llamagen-vq tokenizer of channels 128" in err
    assert "wrong shape ['decoder.conv_blocks.0.attn.0.k.bias (32,), expected (512,)'" in err


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


def test_another_architectures_checkpoint_is_refused_with_the_right_source(tmp_path, capsys):
    err = _error(capsys, ["convert", "--from", "llamagen",
                          str(FIXTURES / "taming_vqgan" / "checkpoint.ckpt"),
                          "--out", str(tmp_path / "x")])
    assert "checkpoint.ckpt: not a llamagen checkpoint" in err
    assert "it looks like a taming checkpoint: use --from taming" in err
    assert not (tmp_path / "x").exists()


def test_missing_and_unexpected_tensors_are_named(tmp_path, capsys):
    state = load_file(FIXTURES / "llamagen_vq" / "weights.safetensors")
    del state["decoder.conv_out.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save({"model": state}, path)
    err = _error(capsys, ["convert", "--from", "llamagen", str(path), "--out", str(tmp_path / "x")])
    assert "w.pt: its tensors do not fit a llamagen-vq tokenizer" in err
    assert "missing ['decoder.conv_out.bias'] (1); unexpected ['decoder.extra.weight'] (1)" in err


def test_corrupt_files_are_refused_naming_the_file(tmp_path, capsys):
    good = FIXTURES / "llamagen_vq" / "checkpoint.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: 100_000])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    for path, message in ((truncated, "not a readable PyTorch checkpoint"),
                          (garbage, "not a readable PyTorch checkpoint"),
                          (bad_safetensors, "not a readable safetensors file"),
                          (tmp_path / "absent.pt", "no such file")):
        err = _error(capsys, ["convert", "--from", "llamagen", str(path),
                              "--out", str(tmp_path / "x")])
        assert f"vtok convert: {path}: {message}" in err, err
    assert not (tmp_path / "x").exists()
    assert zipfile.is_zipfile(good)  # the fixture itself is a real torch zip checkpoint


class NotATensor:  # a class torch.load(weights_only=True) has no business constructing
    def __init__(self):
        self.payload = "anything"


def test_a_pickle_that_weights_only_refuses_is_refused_with_the_reason(tmp_path, capsys):
    state = load_file(FIXTURES / "llamagen_vq" / "weights.safetensors")
    path = tmp_path / "with_object.pt"
    torch.save({"model": state, "args": NotATensor()}, path)
    err = _error(capsys, ["convert", "--from", "llamagen", str(path),
                          "--out", str(tmp_path / "x")])
    assert f"{path}: refused: it holds a Python object" in err
    assert "NotATensor" in err and "weights_only=True" in err
    assert "re-save just its state dict" in err  # what to do about it
    assert not (tmp_path / "x").exists()


def test_an_existing_folder_is_kept_unless_forced(tmp_path, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    err = _error(capsys, ["convert", *args("taming"), "--out", str(out)])
    assert "already exists; pass --force" in err and (out / "mine.txt").exists()
    assert main(["convert", *args("taming"), "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


def test_titok_needs_its_heads_when_the_size_name_is_not_a_released_one(tmp_path, capsys):
    err = _error(capsys, ["convert", "--from", "titok", str(FIXTURES / "titok" / "hf_checkpoint"),
                          "--out", str(tmp_path / "x")])
    assert "hf_checkpoint: cannot tell the attention heads of a width-64 encoder (model size " \
           "'tiny'" in err and "--set heads=N" in err
