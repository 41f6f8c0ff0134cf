"""Residual, multi-scale and grouped quantizers built from inner quantizers."""

import pytest
import torch

from vtok.quant import create_quantizer

VQ8, VQ32 = {"codebook_size": 8}, {"codebook_size": 32}


@pytest.mark.parametrize("name,inner", [("vq", {"codebook_size": 16}), ("fsq", {"levels": [5, 3]})])
def test_rvq_with_one_level_equals_its_inner_quantizer(name, inner):
    torch.manual_seed(0)
    rvq = create_quantizer("rvq", dim=2, num_quantizers=1, quantizer=name,
                           quantizer_options=inner)
    single = create_quantizer(name, dim=2, **inner)
    single.load_state_dict(rvq.levels[0].state_dict())
    for mode in ("train", "eval"):
        getattr(rvq, mode)(), getattr(single, mode)()
        z = torch.randn(4, 10, 2)
        a, b = rvq(z), single(z)
        assert torch.equal(a.z_q, b.z_q)
        assert torch.equal(a.indices[..., 0], b.indices)
        assert torch.equal(a.loss, b.loss)


def test_rvq_levels_reduce_the_error_in_turn():
    torch.manual_seed(0)
    rvq = create_quantizer("rvq", dim=4, num_quantizers=4, quantizer_options=VQ32).train()
    z = torch.randn(2048, 4)
    for _ in range(5):
        rvq(z)
    rvq.eval()
    errors = [(rvq(z, num_levels=n).z_q - z).pow(2).mean().item() for n in range(1, 5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]


def test_rvq_fewer_levels_mark_dropped_indices_and_decode_them_as_zero():
    rvq = create_quantizer("rvq", dim=4, num_quantizers=3, quantizer_options=VQ8).eval()
    z = torch.randn(5, 4)
    out = rvq(z, num_levels=2)
    assert (out.indices[:, 2] == -1).all() and (out.indices[:, :2] >= 0).all()
    assert torch.equal(rvq.decode(out.indices), out.z_q)
    assert out.metrics["levels_used"] == 2.0


def test_rvq_quantize_dropout_varies_levels_while_training():
    torch.manual_seed(0)
    rvq = create_quantizer("rvq", dim=4, num_quantizers=4, quantizer_options=VQ8,
                           quantize_dropout=1.0).train()
    used = {rvq(torch.randn(16, 4)).metrics["levels_used"] for _ in range(40)}
    assert used == {1.0, 2.0, 3.0, 4.0}
    assert rvq.eval()(torch.randn(16, 4)).metrics["levels_used"] == 4.0


def test_rvq_shared_codebook_has_one_inner_quantizer():
    rvq = create_quantizer("rvq", dim=4, num_quantizers=5, quantizer_options=VQ8,
                           shared_codebook=True)
    assert len(rvq.levels) == 1 and rvq.num_codebooks == 5


def test_msrvq_token_layout_and_coarse_to_fine_error():
    torch.manual_seed(0)
    q = create_quantizer("msrvq", dim=4, quantizer_options={"codebook_size": 64},
                         scales=[1, 2, (4, 4)])
    z = torch.randn(3, 4, 4, 4)
    for _ in range(3):
        q.train()(z)
    out = q.eval()(z)
    assert out.indices.shape == (3, 1 + 4 + 16) and q.num_tokens == 21
    assert torch.equal(q.decode(out.indices), out.z_q)
    assert (out.z_q - z).pow(2).mean() < z.pow(2).mean()


def test_msrvq_one_dimensional_scales():
    q = create_quantizer("msrvq", dim=2, quantizer_options=VQ8, scales=[(1,), (3,), (6,)])
    out = q.eval()(torch.randn(2, 5, 6, 2))
    assert out.indices.shape == (2, 5, 10)
    assert torch.equal(q.decode(out.indices), out.z_q)


def test_gvq_groups_quantize_their_own_channels():
    g = create_quantizer("gvq", dim=6, groups=3, quantizer="vq",
                         quantizer_options={"codebook_size": 4, "kmeans_init": False}).eval()
    z = torch.randn(7, 6)
    out = g(z)
    for i, part in enumerate(z.split(2, -1)):
        alone = g.quantizers[i](part)
        assert torch.equal(out.indices[:, i], alone.indices)
        assert torch.equal(out.z_q[:, 2 * i : 2 * i + 2], alone.z_q)
    assert g.codebook_size == 4 and g.bits_per_token == 6.0


def test_gvq_disentanglement_is_the_mean_squared_cosine_between_groups():
    parts = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[3.0, 3.0]])]
    # pairs: (a,b) cos 0, (a,c) cos^2 0.5, (b,c) cos^2 0.5
    reg = create_quantizer("gvq", dim=6, groups=3, quantizer_options={"codebook_size": 4}
                           ).disentanglement(parts)
    assert reg.item() == pytest.approx(1 / 3)
    g = create_quantizer("gvq", dim=4, groups=2, quantizer_options=VQ8, disentangle_weight=1.0)
    out = g.train()(torch.randn(32, 4))
    assert "disentanglement" in out.metrics


@pytest.mark.parametrize("name,outer", [
    ("rvq", {"num_quantizers": 3}), ("msrvq", {"scales": [1, 2]}), ("gvq", {"groups": 2})])
def test_nested_options_and_the_older_flat_form_build_the_same_quantizer(name, outer):
    inner = {"codebook_size": 8, "distance": "cosine"}
    torch.manual_seed(0)
    nested = create_quantizer(name, dim=4, **outer, quantizer="vq", quantizer_options=inner)
    torch.manual_seed(0)
    flat = create_quantizer(name, dim=4, **outer, quantizer="vq", **inner)
    assert nested.state_dict().keys() == flat.state_dict().keys()
    assert all(torch.equal(v, flat.state_dict()[k]) for k, v in nested.state_dict().items())
    inners = [m for m in nested.modules() if type(m).__name__ == "VectorQuantizer"]
    assert inners and all(m.codebook_size == 8 and m.distance == "cosine" for m in inners)
    z = torch.randn(2, 2, 2, 4)
    assert torch.equal(nested.eval()(z).z_q, flat.eval()(z).z_q)


def test_a_tokenizer_takes_a_nested_quantizer_in_the_same_form():
    from vtok.models import create_tokenizer

    tok = create_tokenizer("test-conv2d", quantizer="rvq", quantizer_options={
        "num_quantizers": 2, "quantizer": "fsq", "quantizer_options": {"levels": [5, 5, 5, 5]}})
    assert tok.quantizer.num_codebooks == 2 and tok.codebook_size == 625
    tokens = tok.encode(torch.rand(1, 3, 8, 8))
    assert tokens.indices.shape == (1, 4, 4, 2)  # a x2 grid, two indices per token
    assert tok.decode(tokens).shape == (1, 3, 8, 8)
