import math

import pytest
import torch

from vtok.eval import flicker, psnr, raw_bits, ssim
from vtok.models import create_tokenizer


def test_psnr_known_values():
    x = torch.full((2, 3, 4, 4), 100 / 255)
    y = x.clone()
    y[0] += 1 / 255  # every 8-bit value off by one: mse 1
    y[1] += 10 / 255  # mse 100
    got = psnr(x, y)
    assert got[0].item() == pytest.approx(20 * math.log10(255))
    assert got[1].item() == pytest.approx(20 * math.log10(255) - 20)
    assert psnr(x, x).isinf().all()


def test_psnr_rounds_to_8_bit_first():
    x = torch.full((1, 3, 2, 2), 0.5)
    assert psnr(x, x + 0.001).isinf().all()  # both round to 128


def test_psnr_refuses_shape_mismatch():
    with pytest.raises(ValueError, match="psnr needs equal shapes"):
        psnr(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))


def test_raw_bits_counts_tokens_times_log2_codebook():
    model = create_tokenizer("test-conv2d")  # x2 grid, 16 codes
    tokens = model.encode(torch.rand(1, 3, 8, 8))
    assert raw_bits(tokens, model.codebook_size) == 16 * 4
    titok = create_tokenizer("test-titok")
    tokens = titok.encode(torch.rand(1, 3, 32, 32), num_tokens=5)
    assert raw_bits(tokens, titok.codebook_size) == 5 * 4
    rvq = create_tokenizer("test-conv2d", quantizer="rvq",
                           quantizer_options={"num_quantizers": 3, "codebook_size": 8})
    tokens = rvq.encode(torch.rand(1, 3, 4, 4))
    assert raw_bits(tokens, rvq.codebook_size) == 4 * 3 * 3


def test_flicker_known_values():
    source = torch.rand(4, 3, 8, 8) * 0.5 + 0.25
    assert flicker(source, source).eq(0).all()
    steady = source + 10 / 255  # the same error in every frame is no flicker
    assert flicker(source, steady).eq(0).all()
    assert psnr(source, steady).sub(20 * math.log10(255 / 10)).abs().max() < 1e-9
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1)
    popping = source + sign * 3 / 255  # +3, -3, +3, -3: each transition changes the error by 6
    assert flicker(source, popping).tolist() == [6.0, 6.0, 6.0]
    ramp = source + torch.arange(4.0).view(4, 1, 1, 1) * 2 / 255  # error grows 2 a frame
    assert flicker(source, ramp).tolist() == [2.0, 2.0, 2.0]


def test_flicker_refuses_single_frames_and_shape_mismatch():
    with pytest.raises(ValueError, match="at least 2 frames"):
        flicker(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="flicker needs equal shapes"):
        flicker(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))


def test_ssim_known_values():
    pytest.importorskip("skimage")
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    x = ((torch.sin(x / 5) * torch.cos(y / 7) + 1) / 2).expand(2, 3, 32, 32)
    assert ssim(x, x).tolist() == [1.0, 1.0]
    noisy = (x + torch.randn_like(x) * 0.1).clamp(0, 1)
    worse = (x + torch.randn_like(x) * 0.3).clamp(0, 1)
    assert (ssim(x, worse) < ssim(x, noisy)).all() and (ssim(x, noisy) < 1).all()
    flat = torch.full((1, 3, 16, 16), 0.5)
    # constant images: SSIM = (2*mu_x*mu_y + C1) / (mu_x^2 + mu_y^2 + C1), the structure term 1
    mu_x, mu_y, c1 = 128.0, 153.0, (0.01 * 255) ** 2
    expected = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    assert ssim(flat, torch.full_like(flat, 0.6)).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
