"""`Conv3dTokenizer.stick`: tokens keep their previous latent frame's code when it is nearly as
close as the nearest, so still regions repeat codes; chunked coding still equals whole."""

import pytest
import torch

from vtok import create_tokenizer
from vtok.models.conv3d import DEFAULT_STICK

VQ = dict(quantizer="vq", quantizer_options={"codebook_size": 64})


def _clip():
    g = torch.Generator().manual_seed(0)
    still = torch.rand(1, 1, 3, 32, 32, generator=g)
    return (still + 0.2 * torch.randn(1, 9, 3, 32, 32, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    tok = create_tokenizer("test-conv3d", latent_dim=4, **VQ).eval()
    with torch.no_grad():  # codes among the latents, as trained ones are (not far-off noise)
        z = tok.encoder(tok._pixels_in(torch.rand(1, 9, 3, 32, 32), 0, 9))
        z = z.permute(0, 2, 3, 4, 1).reshape(-1, 4)
        tok.quantizer.codebook.copy_(z[torch.randperm(len(z))[:64]])
    return tok


def test_vq_video_tokenizers_stick_by_default_and_others_do_not(tok):
    assert tok.stick == DEFAULT_STICK == 0.5
    assert create_tokenizer("test-conv3d").stick == 0.0  # FSQ: nothing to keep
    with torch.no_grad():
        default = tok.encode(_clip()).indices
        tok.stick = 0.0
        try:
            nearest = tok.encode(_clip()).indices
        finally:
            tok.stick = DEFAULT_STICK
    assert not torch.equal(default, nearest)  # the default keeps codes: fewer changes
    assert (default[:, 1:] != default[:, :-1]).sum() < (nearest[:, 1:] != nearest[:, :-1]).sum()


def test_sticky_tokens_change_less_and_only_within_the_slack(tok):
    clip = _clip()
    with torch.no_grad():
        tok.stick = 0.0
        try:
            plain = tok.encode(clip).indices
            tok.stick = 0.5
            sticky = tok.encode(clip).indices
            z = tok.encoder(tok._pixels_in(clip, 0, 9)).permute(0, 2, 3, 4, 1)
        finally:
            tok.stick = DEFAULT_STICK
    assert torch.equal(sticky[:, 0], plain[:, 0])  # the first latent frame: nearest codes
    changes = [(t[:, 1:] != t[:, :-1]).sum().item() for t in (plain, sticky)]
    assert changes[1] < changes[0], changes
    codes = tok.quantizer.codes()
    d_plain = (z - codes[plain]).pow(2).sum(-1)
    d_sticky = (z - codes[sticky]).pow(2).sum(-1)
    assert (d_sticky <= 1.5 * d_plain + 1e-6).all()
    kept = sticky != plain
    assert kept.any() and torch.equal(sticky[:, 1:][kept[:, 1:]], sticky[:, :-1][kept[:, 1:]])


def test_sticky_chunked_coding_equals_whole(tok):
    clip = _clip()
    tok.stick = 1.0
    try:
        with torch.no_grad():
            whole = tok.encode(clip).indices
            tok.chunk_frames = 4
            chunked = tok.encode(clip).indices
    finally:
        tok.stick, tok.chunk_frames = DEFAULT_STICK, 16
    assert torch.equal(whole, chunked)


def test_stick_needs_a_vq_codebook():
    fsq = create_tokenizer("test-conv3d").eval()
    fsq.stick = 0.5
    with pytest.raises(ValueError, match="stick=0.5: needs a finite number > 0 and a VQ "
                                         "codebook; this tokenizer has a 'fsq' one"):
        fsq.encode(_clip())


def test_encode_refuses_stick_for_an_image_tokenizer(tmp_path, capsys):
    from PIL import Image

    from vtok.cli import main

    create_tokenizer("test-conv2d").save_pretrained(tmp_path / "tok")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    code = main(["encode", str(tmp_path / "a.png"), "-t", str(tmp_path / "tok"), "-o",
                 str(tmp_path / "a.vtok"), "--stick", "0.5"])
    assert code != 0 and not (tmp_path / "a.vtok").exists()
    assert "--stick needs a video tokenizer with a VQ codebook" in capsys.readouterr().err


def test_set_stick_checks_the_value_and_the_tokenizer(tok):
    from vtok.models.conv3d import set_stick

    image = create_tokenizer("test-conv2d")
    set_stick(image, 0.0)  # nothing to change, nothing wrong
    for value in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"--stick must be a finite number >= 0, got {value}"):
            set_stick(tok, value)
    with pytest.raises(ValueError, match="-s needs a video tokenizer with a VQ codebook; this is "
                                         "a conv2d tokenizer with a 'vq' one"):
        set_stick(image, 0.5, "-s")
    set_stick(tok, None)
    assert tok.stick == DEFAULT_STICK
    try:
        set_stick(tok, 2)
        assert tok.stick == 2.0
    finally:
        tok.stick = DEFAULT_STICK
