"""Contract tests looped over every registered quantizer and two input layouts."""

import math

import pytest
import torch

from tests.quant.cases import (
    SHAPES,
    VARIANTS,
    all_registered,
    build,
    covered_names,
    expected_bits,
    expected_index_shape,
)

CASES = [(v, s) for v in VARIANTS for s in SHAPES]


def test_every_registered_quantizer_is_covered():
    assert covered_names() == all_registered()


def _trained(variant, shape_name, steps=2):
    q = build(variant, shape_name).train()
    for step in range(steps):
        q(torch.randn(SHAPES[shape_name], generator=torch.Generator().manual_seed(step)))
    return q


@pytest.mark.parametrize("variant,shape_name", CASES)
def test_decode_of_indices_equals_z_q_exactly_in_eval(variant, shape_name):
    q = _trained(variant, shape_name).eval()
    z = torch.randn(SHAPES[shape_name], generator=torch.Generator().manual_seed(9))
    out = q(z)
    assert out.z_q.shape == z.shape
    assert torch.equal(q.decode(out.indices), out.z_q)


@pytest.mark.parametrize("variant,shape_name", CASES)
def test_gradients_reach_the_input(variant, shape_name):
    q = _trained(variant, shape_name)
    z = torch.randn(SHAPES[shape_name], requires_grad=True)
    out = q(z)
    (out.z_q * torch.randn_like(out.z_q)).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("variant,shape_name", CASES)
def test_indices_shape_range_bits_loss_and_metrics(variant, shape_name):
    q = _trained(variant, shape_name).eval()
    z = torch.randn(SHAPES[shape_name])
    out = q(z)
    assert out.indices.dtype == torch.long
    assert tuple(out.indices.shape) == expected_index_shape(q, z.shape)
    assert out.indices.min() >= 0 and out.indices.max() < q.codebook_size
    assert q.bits_per_token == pytest.approx(expected_bits(q))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(isinstance(v, float) for v in out.metrics.values())
    assert 0 < out.metrics["usage"] <= 1
    assert 1 <= out.metrics["perplexity"] <= q.codebook_size


@pytest.mark.parametrize("variant,shape_name", CASES)
def test_bf16_autocast_gives_the_fp32_indices(variant, shape_name):
    q = _trained(variant, shape_name).eval()
    z = torch.randn(SHAPES[shape_name])
    reference = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_out = q(z)
    assert torch.equal(autocast_out.indices, reference.indices)
    assert torch.equal(autocast_out.z_q, reference.z_q)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_input_is_quantized_in_fp32_and_returned_as_bf16(variant):
    q = _trained(variant, "grid").eval()
    z = torch.randn(SHAPES["grid"]).bfloat16()
    out = q(z)
    assert out.z_q.dtype == torch.bfloat16
    assert torch.equal(out.indices, q(z.float()).indices)


def test_known_bits_per_token():
    assert build("vq", "seq").bits_per_token == 5.0
    assert build("rvq", "seq").bits_per_token == 12.0
    assert build("lfq", "seq").bits_per_token == 8.0
    assert build("gvq", "seq").bits_per_token == 8.0
    assert build("fsq", "seq").bits_per_token == pytest.approx(math.log2(1000))
