import math

import pytest
import torch

from vtok.eval import psnr, raw_bits
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
