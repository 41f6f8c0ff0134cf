"""The causal video tokenizer (conv3d): causality, stills as one-frame clips, any size and
length, chunked coding equal to whole-clip coding, presets, saving, quantizers, interface."""

import dataclasses

import pytest
import torch

from vtok.codec import RawCoder, VtokFormatError, from_vtok, read_vtok, to_vtok, write_vtok
from vtok.models import Conv3dTokenizerConfig, create_tokenizer, load, preset_config
from vtok.models.limits import MAX_PARAMETERS


def _clip(b=1, frames=9, h=16, w=16, seed=0):
    return torch.rand(b, frames, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return create_tokenizer("test-conv3d").eval()


@torch.no_grad()
def test_no_token_or_frame_sees_a_later_frame(tok):
    x = _clip(frames=13)
    tokens, recon = tok.encode(x), tok.decode(tok.encode(x))
    latents = tok.encoder(tok._pixels_in(x, 0, 13))
    for t in (0, 4, 8):  # the last frame of latent frame t/4: then frame t+1 starts the next
        changed = x.clone()
        changed[:, t + 1] = torch.rand_like(x[:, 0])
        j = t // 4
        other = tok.encode(changed)
        assert torch.equal(other.indices[:, : j + 1], tokens.indices[:, : j + 1])
        assert torch.allclose(tok.decode(other)[:, : t + 1], recon[:, : t + 1], atol=1e-6)
        assert torch.allclose(tok(changed)["recon"][:, : t + 1], tok(x)["recon"][:, : t + 1],
                              atol=1e-6)  # the training path too
        moved = tok.encoder(tok._pixels_in(changed, 0, 13))
        assert torch.equal(moved[:, :, : j + 1], latents[:, :, : j + 1])
        assert not torch.allclose(moved[:, :, j + 1], latents[:, :, j + 1])  # not vacuous


@torch.no_grad()
def test_a_still_image_is_a_one_frame_clip(tok):
    image = _clip(2, 1)[:, 0]
    still, clip = tok.encode(image), tok.encode(image[:, None])
    assert still.token_shape == clip.token_shape == (1, 4, 4) and still.frames == 1
    assert torch.equal(still.indices, clip.indices)
    assert tok.decode(still).shape == image.shape  # one frame decodes as an image
    assert torch.equal(tok.decode(still), tok.decode(clip))
    assert tok(image)["recon"].shape == image.shape
    assert torch.allclose(tok(image[:, None])["recon"][:, 0], tok(image)["recon"])


@pytest.mark.parametrize("frames", [1, 2, 5, 7, 10])
@torch.no_grad()
def test_odd_sizes_and_lengths_round_trip(tok, frames):
    x = _clip(2, frames, 18, 30)
    tokens = tok.encode(x)
    t = 1 + -(-(frames - 1) // 4)
    assert tokens.token_shape == tok.token_shape((18, 30), frames=frames) == (t, 5, 8)
    assert tokens.indices.shape == (2, t, 5, 8) and tokens.frames == frames
    y = tok.decode(tokens)
    assert y.shape == (x.shape if frames > 1 else x[:, 0].shape)
    assert y.min() >= 0 and y.max() <= 1


@torch.no_grad()
def test_other_lengths_are_padded_with_their_last_frame(tok):
    x = _clip(frames=7)
    padded = torch.cat([x, x[:, -1:], x[:, -1:]], 1)  # 9 = 1 + 4*2 frames
    short, full = tok.encode(x), tok.encode(padded)
    assert torch.equal(short.indices, full.indices)
    assert torch.equal(tok.decode(short), tok.decode(full)[:, :7])  # trimmed to 7 frames


@pytest.mark.parametrize("chunk_frames", [16, 6])  # 16: the default; 6 is rounded down to 4
@torch.no_grad()
def test_chunked_coding_equals_whole_clip_coding(tok, chunk_frames):
    x = _clip(1, 25, 16, 12, seed=4)  # 17 + 8 frames in chunks of 16, 5 + 4 + ... in 4
    tok.chunk_frames = 10**6  # one chunk: the whole clip
    tokens = tok.encode(x)
    recon = tok.decode(tokens)
    tok.chunk_frames = chunk_frames  # 16 is the default
    try:
        chunked = tok.encode(x)
        assert torch.equal(chunked.indices, tokens.indices)
        assert torch.equal(chunked.indices, tok(x)["indices"])  # the training path's tokens
        assert (tok.decode(chunked) - recon).abs().max() <= 1e-5
    finally:
        tok.chunk_frames = 16


STATED = {"test-conv3d": 175_615, "conv3d-f8t4-cpu": 3_551_299,
          "cosmos-dv4x8x8": 116_323_323, "magvit2": 263_102_101}


def test_every_conv3d_preset_has_its_stated_size():
    for name in STATED:
        with torch.device("meta"):  # magvit2 would take 1 GB (3 GB stepped): counted, not run
            model = create_tokenizer(name)
        assert model.architecture == "conv3d"
        count = sum(p.numel() for p in model.parameters())
        assert count == STATED[name], (name, count)
        estimate = preset_config(name).parameter_estimate()
        assert 0.99 * count <= estimate <= 1.01 * count
        assert estimate < MAX_PARAMETERS / 4


@pytest.mark.parametrize("name", ["test-conv3d", "conv3d-f8t4-cpu"])
def test_one_optimizer_step_on_a_clip(name):
    torch.manual_seed(0)
    model = create_tokenizer(name).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = _clip(1, 5, 16, 16)
    out = model(x)
    assert out["recon"].shape == x.shape and out["indices"].shape[1] == 2
    loss = (out["recon"] - x).abs().mean() + out["quant_loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    before = model.last_layer().detach().clone()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before, model.last_layer())


def test_save_and_load_give_identical_tokens(tmp_path, tok):
    tok.save_pretrained(tmp_path / "tok")
    again = load(tmp_path / "tok")
    assert type(again) is type(tok) and again.tokenizer_id == tok.tokenizer_id
    x = _clip(frames=6, seed=2)
    a, b = tok.encode(x), again.encode(x)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(tok.decode(a), again.decode(b))


@pytest.mark.parametrize("quantizer,options,latent_dim,codes,depth", [
    ("fsq", {"levels": [8, 5, 5, 5]}, 4, 1000, 1),
    ("lfq", {}, 6, 64, 1),
    ("bsq", {}, 5, 32, 1),
    ("rvq", {"num_quantizers": 2, "codebook_size": 16}, 4, 16, 2),
])
@torch.no_grad()
def test_quantizers(quantizer, options, latent_dim, codes, depth):
    torch.manual_seed(0)
    model = create_tokenizer("test-conv3d", quantizer=quantizer, quantizer_options=options,
                             latent_dim=latent_dim).eval()
    assert (model.codebook_size, model.indices_per_token) == (codes, depth)
    x = _clip(frames=5)
    tokens = model.encode(x)
    assert tokens.token_shape == (2, 4, 4)
    assert tokens.indices.shape == ((1, 2, 4, 4) + ((depth,) if depth > 1 else ()))
    assert tokens.indices.min() >= 0 and tokens.indices.max() < codes
    assert model.decode(tokens).shape == x.shape


@torch.no_grad()
def test_the_interface_describes_the_tokens(tok):
    assert (tok.variable_length, tok.max_tokens, tok.indices_per_token) == (False, None, 1)
    for size, frames in [((16, 16), 1), ((18, 30), 2), ((8, 4), 5), ((20, 9), 6)]:
        tokens = tok.encode(_clip(1, frames, *size))
        assert tok.token_shape(size, frames=frames) == tokens.token_shape
        assert tokens.num_tokens == tokens.indices[0].numel()
        tok.check_tokens(size, tokens.token_shape, 1, 1000, frames=frames)
    with pytest.raises(ValueError, match=r"a clip of 9 16x16 frames gives tokens of shape "
                                         r"\(3, 4, 4\) with this tokenizer, not \(2, 4, 4\)"):
        tok.check_tokens((16, 16), (2, 4, 4), frames=9)
    with pytest.raises(ValueError, match="gives exactly 48 tokens"):
        tok.token_shape((16, 16), num_tokens=5, frames=9)
    with pytest.raises(ValueError, match="frames must be an integer >= 1"):
        tok.token_shape((16, 16), frames=0)
    for name in ("test-conv2d", "test-titok"):
        with pytest.raises(ValueError, match="codes still images .one frame., not clips of 3"):
            create_tokenizer(name).check_tokens((32, 32), (8,), frames=3)


@torch.no_grad()
def test_a_clip_travels_through_a_vtok_file(tmp_path, tok):
    tokens = tok.encode(_clip(1, 7))
    tokens.fps = (25, 1)
    write_vtok(tmp_path / "c.vtok", to_vtok([tokens], tok.codebook_size,
                                            RawCoder(tok.codebook_size)))
    vfile = read_vtok(tmp_path / "c.vtok")
    (back,) = from_vtok(vfile, RawCoder(tok.codebook_size), tok)  # checked with its frames
    assert (back.frames, back.fps, back.token_shape) == (7, (25, 1), (3, 4, 4))
    assert torch.equal(tok.decode(back), tok.decode(tokens))
    vfile.images[0].frames = 13  # 4 latent frames, not 3
    with pytest.raises(VtokFormatError, match="image 0: a clip of 13 16x16 frames"):
        from_vtok(vfile, RawCoder(tok.codebook_size), tok)


def test_bad_inputs_and_configs_are_refused(tok):
    with pytest.raises(ValueError, match=r"clips must be a float tensor \[B, T, 3, H, W\]"):
        tok.encode(torch.rand(1, 4, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\(or clips \[B, T, 3, H, W\]\)"):
        tok.encode(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"images must be a float tensor \[B, 3, H, W\]"):
        create_tokenizer("test-conv2d").encode(_clip())
    with pytest.raises(ValueError, match="time_downsample must be a power of 2 of at most 4"):
        create_tokenizer("test-conv3d", time_downsample=8)
    with pytest.raises(ValueError, match="time_downsample must be a power of 2"):
        create_tokenizer("test-conv3d", time_downsample=3)
    with pytest.raises(ValueError, match="msrvq's multi-scale tokens"):
        create_tokenizer("test-conv3d", quantizer="msrvq", quantizer_options={})
    for f in dataclasses.fields(Conv3dTokenizerConfig):
        if str(f.type) in ("int", "tuple[int, ...]"):
            assert f.name in Conv3dTokenizerConfig.LIMITS, f.name


@torch.no_grad()
def test_images_code_without_time_downsampling():
    model = create_tokenizer("test-conv3d", time_downsample=1).eval()
    tokens = model.encode(_clip(1, 3))
    assert tokens.token_shape == (3, 4, 4)
    assert model.decode(tokens).shape == (1, 3, 3, 16, 16)
