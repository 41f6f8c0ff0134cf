"""Inflating a conv2d image tokenizer into a causal conv3d video tokenizer: the inflated model
codes each frame exactly as the image model does, and weights that do not fit are named."""

import pytest
import torch

from vtok import create_tokenizer
from vtok.models.inflate import image_key, inflated_state

# test-conv2d's shape as a conv3d model: one downsampling stage, x2 in space and in time
SHAPE = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, latent_dim=4, quantizer="vq",
             quantizer_options={"codebook_size": 16}, time_downsample=2)


def _pair(factorized):
    torch.manual_seed(0)
    image = create_tokenizer("test-conv2d").eval()
    with torch.no_grad():  # random but not trivial: biases and norms away from 0 and 1
        for p in image.parameters():
            p.add_(0.1 * torch.randn_like(p))
    video = create_tokenizer("test-conv3d", **SHAPE, factorized=factorized).eval()
    video.load_checked(inflated_state(image.state_dict(), video.state_dict()), "inflated")
    return image, video


@pytest.mark.parametrize("factorized", [True, False])
def test_an_inflated_model_codes_a_still_as_the_image_model(factorized):
    image, video = _pair(factorized)
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        a, b = image.encode(x), video.encode(x)
        assert torch.equal(a.indices, b.indices[:, 0])
        assert torch.allclose(image.decode(a), video.decode(b), atol=1e-5)


def test_an_inflated_model_codes_each_group_of_frames_by_its_last_frame():
    image, video = _pair(True)
    clip = torch.rand(1, 5, 3, 16, 16)  # frames 0 | 1 2 | 3 4 with x2 in time
    video.stick = 0.0  # nearest codes, as the image model picks them
    with torch.no_grad():
        tokens = video.encode(clip)
        assert tokens.indices.shape == (1, 3, 8, 8)
        for j, frame in enumerate((0, 2, 4)):
            assert torch.equal(tokens.indices[:, j], image.encode(clip[:, frame]).indices)
        out = video.decode(tokens)
        assert out.shape == clip.shape
        for t, j in enumerate((0, 1, 1, 2, 2)):  # each frame shows its group's last frame
            still = image.decode(image.encode(clip[:, (0, 2, 4)[j]]))
            assert torch.allclose(out[:, t], still, atol=1e-5)


def test_time_convs_start_as_the_identity_and_kernels_on_the_newest_tap():
    image, video = _pair(True)
    state = video.state_dict()
    time_keys = [k for k in state if image_key(k) is None]
    assert time_keys and all(".time.conv." in k for k in time_keys)
    weight = state["encoder.layers.1.conv1.time.conv.weight"]
    assert torch.equal(weight[:, :, -1, 0, 0], torch.eye(weight.shape[0]))
    assert not weight[:, :, :-1].any()
    first = state["encoder.layers.0.conv.weight"]  # full 3x3x3 conv at the input
    assert torch.equal(first[:, :, -1], image.state_dict()["encoder.layers.0.weight"])
    assert not first[:, :, :-1].any()


def test_weights_that_do_not_fit_are_named():
    image = create_tokenizer("test-conv2d")
    wider = create_tokenizer("test-conv3d", **{**SHAPE, "channels": 16})
    with pytest.raises(ValueError, match=r"cannot inflate .*encoder\.layers\.0\.conv\.weight: "
                                         r"\(16, 3, 3, 3, 3\) cannot hold .* more\)"):
        inflated_state(image.state_dict(), wider.state_dict())
    fsq = create_tokenizer("test-conv3d", **{**SHAPE, "quantizer": "fsq",
                                            "quantizer_options": {"levels": [5, 5, 5, 5]}})
    with pytest.raises(ValueError, match="no place for: quantizer"):
        inflated_state(image.state_dict(), fsq.state_dict())
