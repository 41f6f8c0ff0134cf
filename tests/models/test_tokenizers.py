"""Contract tests looped over every tokenizer preset (tiny ones fully, big ones one step)."""

import json

import pytest
import torch

import vtok
from vtok.models import (
    PRESETS,
    ConvTokenizer,
    TiTokTokenizer,
    Tokenizer,
    Tokens,
    create_tokenizer,
    load,
    preset_config,
)

TINY = [n for n in PRESETS.names() if n.startswith("test-")]


def _images(b=2, h=32, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_there_are_tiny_presets_for_every_architecture():
    assert {type(create_tokenizer(n)).architecture for n in TINY} == {"conv2d", "conv3d",
                                                                        "titok"}


# over 2 GB to build and step on a CPU: its size is checked on the meta device in test_conv3d
HEAVY = {"magvit2"}
# the released configurations (70M to 641M weights; TiTok's at 256x256 only): their
# architectures take a training step at the fixtures' size in tests/models/published
HEAVY |= {n for n in PRESETS.names() if n.startswith(("llamagen-", "taming-", "titok-published"))}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in PRESETS.names()])
def test_every_preset_builds_and_trains_one_step_without_nan(name):
    torch.manual_seed(0)
    model = create_tokenizer(name).train()
    side = 32 if model.architecture != "titok-published" else model.config.image_size  # fixed
    x = _images(1 if not name.startswith("test-") else 2, side, side)
    out = model(x)
    assert out["recon"].shape == x.shape
    assert {"recon", "quant_loss", "metrics", "indices"} <= set(out)
    loss = (out["recon"] - x).abs().mean() + out["quant_loss"]
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [(32, 32), (29, 45), (17, 8)])
def test_encode_decode_keeps_odd_sizes(name, size):
    model = create_tokenizer(name)
    x = _images(2, *size)
    tokens = model.encode(x)
    assert tokens.image_size == size and tokens.indices.shape[0] == 2
    y = model.decode(tokens)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", TINY)
def test_same_tokens_at_batch_1_and_batch_8(name):
    model = create_tokenizer(name)
    x = _images(8, 32, 32, seed=3)
    batched = model.encode(x).indices
    singles = torch.cat([model.encode(x[i : i + 1]).indices for i in range(8)])
    assert torch.equal(batched, singles)


@pytest.mark.parametrize("name", TINY)
def test_save_and_load_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = create_tokenizer(name)
    model.train()(_images())  # k-means init and one EMA step change the buffers
    model.eval()
    model.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json",
                                                                   "model.safetensors"]
    again = load(tmp_path / "tok")
    assert type(again) is type(model) and again.tokenizer_id == model.tokenizer_id
    x = _images(seed=5)
    a, b = model.encode(x), again.encode(x)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(model.decode(a), again.decode(b))


def test_tokenizer_id_changes_with_the_weights():
    model = create_tokenizer("test-conv2d")
    first = model.tokenizer_id
    assert first == model.tokenizer_id and len(first) == 16
    with torch.no_grad():
        model.decoder.layers[0].bias.add_(1)
    model.train().eval()
    assert model.tokenizer_id != first


def test_tokenizer_id_follows_optimizer_steps_in_training_mode():
    torch.manual_seed(0)
    model = create_tokenizer("test-conv2d").train()
    first = model.encode(_images()).tokenizer_id
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(_images())
    ((out["recon"] - _images()).abs().mean() + out["quant_loss"]).backward()
    opt.step()
    assert model.encode(_images()).tokenizer_id != first


def test_decoding_with_another_tokenizer_is_refused():
    a, b = create_tokenizer("test-conv2d"), create_tokenizer("test-conv2d", channels=4)
    tokens = a.encode(_images())
    with pytest.raises(ValueError, match=f"made by tokenizer {a.tokenizer_id}, "
                                         f"this is tokenizer {b.tokenizer_id}"):
        b.decode(tokens)


def test_titok_variable_length_tokens():
    model = create_tokenizer("test-titok")
    x = _images()
    full = model.encode(x)
    assert full.indices.shape == (2, 8) and full.num_tokens == 8
    for k in (1, 3, 8):
        part = model.encode(x, num_tokens=k)
        assert part.indices.shape == (2, k) and part.token_shape == (k,)
        assert torch.equal(part.indices, full.indices[:, :k])  # prefixes of one sequence
        assert model.decode(part).shape == x.shape
    with pytest.raises(ValueError, match=r"num_tokens must be an integer in \[1, 8\], got 9"):
        model.encode(x, num_tokens=9)


def test_titok_nested_dropout_trains_on_random_prefixes():
    torch.manual_seed(0)
    model = create_tokenizer("test-titok", nested_dropout=1.0).train()
    counts = {model(_images())["num_tokens"] for _ in range(30)}
    assert len(counts) > 3 and max(counts) <= 8


def test_conv_titok_decodes_its_grid_logits_through_the_conv_decoder():
    model = create_tokenizer("test-titok-conv")
    teacher = create_tokenizer("test-conv2d")
    model.pixel_decoder.load_state_dict(teacher.decoder.state_dict())
    codes = teacher.quantizer.decode(torch.arange(16))
    model.grid_codebook.data.copy_(codes)
    tokens = model.encode(_images(2, 29, 45))
    logits = model.decode_grid(model.quantizer.decode(tokens.indices), model._grid((29, 45)))
    assert logits.shape == (2, 16, 16, 24)  # 16 codes over a grid of 4x6 patches of 4x4 cells
    # hard decoding is the teacher's decoder on the likeliest codes; soft mixes the codes
    hard = create_tokenizer("test-titok-conv", grid_decode="hard")
    hard.load_state_dict(model.state_dict())
    expected = teacher._to_pixels(codes[logits.argmax(1)], (29, 45)).clamp(0, 1)
    got = hard.decode(Tokens(tokens.indices, tokens.token_shape, (29, 45), hard.tokenizer_id,
                             tokens.num_tokens))
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(model.decode(tokens), got, atol=1e-3)


def test_quadtree_regions_nest_and_cover_every_patch():
    from vtok.models.titok import quadtree_regions

    member = quadtree_regions(128, (8, 8), native=8)
    sizes = member.sum(1)
    # levels 1, 4, 16, 64 regions (whole image down to single patches), then again from the top
    assert sizes[:85].tolist() == [64] + [16] * 4 + [4] * 16 + [1] * 64
    assert sizes[85:].tolist() == [64] + [16] * 4 + [4] * 16 + [1] * 22
    for level in (slice(1, 5), slice(5, 21), slice(21, 85)):
        assert torch.equal(member[level].sum(0), torch.ones(64))  # a partition of the grid
    assert torch.equal(member[1].view(8, 8)[:4, :4], torch.ones(4, 4))  # top-left quadrant
    assert member[1].sum() == member[1].view(8, 8)[:4, :4].sum()
    odd = quadtree_regions(8, (3, 5), native=2)  # another image size: still a partition
    assert torch.equal(odd[1:5].sum(0), torch.ones(15))


def test_quadtree_tokens_reach_the_patches_of_their_region():
    torch.manual_seed(0)
    model = create_tokenizer("test-titok-conv", token_regions="quadtree")
    tokens = model.quantizer.decode(model.encode(_images(1, 32, 32)).indices)
    tokens.requires_grad_(True)
    logits = model.decode_grid(tokens[:, :2], (4, 4))  # the whole image and its top-left
    assert logits.shape == (1, 16, 16, 16)
    # before any training, token 2 reaches the top-left patches directly (and others only
    # through attention): its gradient from them is the larger one
    grads = []
    for rows in (slice(0, 8), slice(8, 16)):
        tokens.grad = None
        logits[..., rows, :8].abs().sum().backward(retain_graph=True)
        grads.append(tokens.grad[0, 1].abs().sum().item())
    assert grads[0] > grads[1]


def test_float16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    model = create_tokenizer("test-titok-conv")
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    full, half = (tmp_path / d / "model.safetensors" for d in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = _images()
    assert torch.allclose(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)),
                          atol=0.02)
    again = load(tmp_path / "half")
    assert again.tokenizer_id == loaded.tokenizer_id  # the id is that of the stored weights


def test_encode_leaves_the_model_state_alone():
    model = create_tokenizer("test-conv2d").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(_images())
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loading_another_architecture_is_refused(tmp_path):
    create_tokenizer("test-titok").save_pretrained(tmp_path / "titok")
    with pytest.raises(ValueError, match="holds a 'titok' tokenizer, not 'conv2d'"):
        ConvTokenizer.from_pretrained(tmp_path / "titok")
    assert isinstance(Tokenizer.from_pretrained(tmp_path / "titok"), TiTokTokenizer)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    create_tokenizer("test-conv2d", channels=4).save_pretrained(tmp_path / "small")
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    config["config"]["channels"] = 8
    (tmp_path / "small" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights do not fit this conv2d tokenizer"):
        load(tmp_path / "small")


def test_only_safetensors_are_read(tmp_path):
    model = create_tokenizer("test-conv2d")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no weights file"):
        load(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load(tmp_path / "m")


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError,
                       match=r"ConvTokenizerConfig.channels must be an integer in \[1, 512\]"):
        create_tokenizer("test-conv2d", channels=0)
    with pytest.raises(ValueError, match="pixel_codec must be one of"):
        create_tokenizer("test-titok", pixel_codec="vae")
    with pytest.raises(ValueError, match=r"patch_size \(6\) must be a multiple of the conv"):
        create_tokenizer("test-titok-conv", patch_size=6, image_size=36,
                         conv_channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="preset 'test-titok' has no field colour"):
        preset_config("test-titok", colour=3)
    with pytest.raises(ValueError, match="must be a multiple of patch_size"):
        create_tokenizer("test-titok", image_size=30)
    with pytest.raises(ValueError, match="unknown tokenizer preset 'nope'"):
        create_tokenizer("nope")
    with pytest.raises(ValueError, match="neither a tokenizer directory nor a shipped tokenizer"):
        load("no-such-model")


def test_bad_images_are_refused():
    model = create_tokenizer("test-conv2d")
    with pytest.raises(ValueError, match=r"images must be a float tensor \[B, 3, H, W\]"):
        model.encode(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="images must be floating point"):
        model.encode(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_top_level_api():
    assert vtok.create_tokenizer("test-titok").codebook_size == 16
    assert isinstance(vtok.list_pretrained(), list)


def test_the_interface_says_whether_the_token_count_is_variable():
    grid, seq = create_tokenizer("test-conv2d"), create_tokenizer("test-titok")
    assert (grid.variable_length, grid.max_tokens) == (False, None)
    assert (seq.variable_length, seq.max_tokens) == (True, seq.config.num_latent_tokens)
    image = torch.rand(1, 3, 32, 32)
    assert seq.encode(image, num_tokens=3).num_tokens == 3
    assert grid.encode(image).num_tokens == grid.encode(image).indices[0].numel()
