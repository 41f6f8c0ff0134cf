"""The published tokenizers reproduce their reference implementations: reduced random-weight
instances made by running LlamaGen's, taming-transformers' and TiTok's own code (fixtures/*/
README.md says which calls made which tensor), loaded from the release container and from a
bare safetensors file. Indices must be identical and every float tensor within 1e-4."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtok.models.convert import KEYMAPS, _levels, tokenizer_from_release

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = 1e-4
# source: (fixture folder, release container, bare safetensors file, fields the tensors cannot
# tell: the reduced TiTok's 2 heads; see fixtures/titok/README.md)
CASES = {
    "llamagen": ("llamagen_vq", "checkpoint.pt", "weights.safetensors", {}),
    "taming": ("taming_vqgan", "checkpoint.ckpt", "weights.safetensors", {}),
    # the release container is the Hugging Face folder; its model.safetensors, read on its
    # own, is the bare file (byte-identical to the fixture's weights.safetensors)
    "titok": ("titok", "hf_checkpoint", "hf_checkpoint/model.safetensors",
              {"heads": 2, "decoder_heads": 2}),
}
PATHS = [(source, kind) for source in CASES for kind in ("container", "safetensors")]


def load_case(source: str, kind: str):
    folder, container, bare, overrides = CASES[source]
    path = FIXTURES / folder / (container if kind == "container" else bare)
    model, dropped, _ = tokenizer_from_release(source, path, overrides=overrides)
    return model, dropped


def fixture(source: str, name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / CASES[source][0] / f"{name}.safetensors")


@torch.no_grad()
def reference_steps(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """vtok's counterpart of every tensor in expected.safetensors, computed the same way."""
    z = model.pre_quant(x)
    out = model.quantize_latent(z)
    from_codes = model.latent_from_indices(out.indices)
    got = {"z_prequant": z, "quant": out.z_q, "indices": out.indices,
           "quant_from_codes": from_codes, "emb_loss": out.loss.reshape(1)}
    if hasattr(model, "decoder_logits"):
        got["decoder_logits"] = model.decoder_logits(from_codes)
        got["pixel_quantized_states"] = model.pixel_states(got["decoder_logits"])
    got["recon"] = model.decode_latent(from_codes)
    got["recon_forward"] = model.decode_latent(out.z_q)
    return got


def differences(source: str, kind: str) -> dict[str, float | bool]:
    """Max abs difference per float tensor, equality for the indices."""
    model, _ = load_case(source, kind)
    expected = fixture(source, "expected")
    got = reference_steps(model, fixture(source, "inputs")["image"])
    result = {}
    for name, want in expected.items():
        have = got[name].reshape(want.shape)
        if name == "indices":
            result[name] = torch.equal(have, want)
        else:
            result[name] = (have - want).abs().max().item()
    return result


@pytest.mark.parametrize("source,kind", PATHS)
def test_every_reference_tensor_is_reproduced(source, kind):
    diffs = differences(source, kind)
    assert diffs.pop("indices") is True
    expected = set(fixture(source, "expected")) - {"indices"}
    assert set(diffs) == expected  # every tensor the fixture holds was compared
    assert all(d <= TOLERANCE for d in diffs.values()), diffs


def test_the_fixtures_hold_every_tensor_the_issue_names():
    for source in CASES:
        names = set(fixture(source, "expected"))
        assert {"z_prequant", "quant", "indices", "recon"} <= names, source


@pytest.mark.parametrize("source", CASES)
def test_the_tokenizer_interface_gives_the_same_tokens_and_pixels(source):
    """From [0, 1] images, as every vtok command calls it: the reference's indices in its
    order (row-major grid; TiTok's sequence), and its reconstruction mapped to [0, 1]."""
    model, _ = load_case(source, "container")
    pixels = fixture(source, "inputs")["image_uint8_nhwc"].permute(0, 3, 1, 2).float() / 255
    expected = fixture(source, "expected")
    tokens = model.encode(pixels)
    b = pixels.shape[0]
    assert torch.equal(tokens.indices, expected["indices"].reshape(b, *tokens.token_shape))
    recon = expected["recon"]
    if source != "titok":
        recon = (recon + 1) / 2  # LlamaGen and taming work in [-1, 1]
    assert (model.decode(tokens) - recon.clamp(0, 1)).abs().max() <= TOLERANCE


def test_a_transposed_token_grid_would_be_caught():
    """The layout check is not vacuous: decoding the grid transposed moves pixels by far
    more than the tolerance (the fixture README measured 2.69)."""
    model, _ = load_case("llamagen", "container")
    expected = fixture("llamagen", "expected")
    grid = expected["indices"].reshape(2, 4, 4).transpose(1, 2)
    with torch.no_grad():
        recon = model.decode_latent(model.latent_from_indices(grid))
    assert (recon - expected["recon"]).abs().max() > 1.0


@pytest.mark.parametrize("source", CASES)
def test_key_names_map_both_ways_for_every_reference_tensor(source):
    model, dropped = load_case(source, "container")
    keys = json.loads((FIXTURES / CASES[source][0] / "state_dict_keys.json").read_text())
    keymap, levels = KEYMAPS[source], _levels(model.config)
    own = model.state_dict()
    for key, info in keys.items():
        if key in dropped:
            continue
        ours = keymap.to_vtok(key, levels)
        assert ours in own, (key, ours)
        assert list(own[ours].shape) == info["shape"], key
        assert keymap.to_release(ours, levels) == key
    assert len(keys) - len(dropped) == sum(1 for k in own if not k.startswith("quantizer.")) + 1


@pytest.mark.parametrize("source", CASES)
def test_a_converted_model_takes_a_training_step(source):
    model, _ = load_case(source, "container")
    model.train()
    size = 64 if source == "titok" else 48  # TiTok codes its native size only
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out["recon"].shape == x.shape
    loss = (out["recon"] - x).abs().mean() + out["quant_loss"]
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("source,size", [("llamagen", (37, 50)), ("taming", (20, 70))])
def test_conv_tokenizers_code_any_size(source, size):
    model, _ = load_case(source, "container")
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    tokens = model.encode(x)
    assert tokens.token_shape == (-(-size[0] // 16), -(-size[1] // 16))
    assert model.decode(tokens).shape == x.shape


def test_titok_refuses_other_sizes_and_token_counts_with_the_reason():
    model, _ = load_case("titok", "container")
    with pytest.raises(ValueError, match="codes 64x64 images only .* resize or crop to 64x64"):
        model.encode(torch.rand(1, 3, 64, 80))
    with pytest.raises(ValueError, match="always gives 32 tokens"):
        model.encode(torch.rand(1, 3, 64, 64), num_tokens=8)


if __name__ == "__main__":  # python -m tests.models.published.test_fixtures prints the table
    for source, kind in PATHS:
        diffs = differences(source, kind)
        print(f"{source:9s} {kind:12s} indices {'identical' if diffs.pop('indices') else 'DIFFER'}")
        for name, d in diffs.items():
            print(f"    {name:24s} {d:.2e}")
