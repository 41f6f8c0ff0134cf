"""Known values for the lookup-free families: FSQ grids and LFQ/BSQ sign codes."""

import itertools
import math

import pytest
import torch

from vtok.quant import create_quantizer
from vtok.quant.lfq import binary_entropy_terms


def test_fsq_decodes_every_index_to_its_exact_grid_point():
    q = create_quantizer("fsq", levels=[3, 4])
    grid = q.decode(torch.arange(12))
    expected = [[a, b] for b in (-1.0, -0.5, 0.0, 0.5) for a in (-1.0, 0.0, 1.0)]
    assert grid.tolist() == expected  # channel 0 is the least significant digit


def test_fsq_extremes_and_centre():
    q = create_quantizer("fsq", levels=[3, 4])
    out = q(torch.tensor([[10.0, 10.0], [-10.0, -10.0], [0.0, 0.0]]))
    assert out.z_q.tolist() == [[1.0, 0.5], [-1.0, -1.0], [0.0, 0.0]]
    assert out.indices.tolist() == [11, 0, 7]


@pytest.mark.parametrize("levels", [[2], [2, 3], [8, 5, 5, 5], [7, 6, 4]])
def test_fsq_reaches_every_code_and_no_other(levels):
    q = create_quantizer("fsq", levels=levels)
    z = torch.linspace(-6, 6, 4001)[:, None].expand(-1, len(levels))
    z = torch.stack([z[torch.randperm(z.shape[0]), i] for i in range(len(levels))], 1)
    out = q(torch.cat([z, torch.randn(20000, len(levels)) * 3]))
    assert out.indices.min() == 0 and out.indices.max() == q.codebook_size - 1
    per_channel = [sorted(set(out.z_q[:, i].tolist())) for i in range(len(levels))]
    assert [len(v) for v in per_channel] == levels


def test_lfq_sign_patterns_map_to_exact_integers_and_back():
    q = create_quantizer("lfq", dim=3, codebook_scale=0.5)
    z = torch.tensor([[0.3, -2.0, 1.0], [-1.0, -1.0, -1.0], [4.0, 0.1, 0.2], [0.0, 1.0, -1.0]])
    out = q(z)
    assert out.indices.tolist() == [0b101, 0b000, 0b111, 0b010]  # channel 0 is the top bit
    assert out.z_q.tolist() == [[0.5, -0.5, 0.5], [-0.5, -0.5, -0.5],
                                [0.5, 0.5, 0.5], [-0.5, 0.5, -0.5]]
    every = torch.arange(8)
    assert torch.equal(q(q.decode(every)).indices, every)


def test_bsq_codes_lie_on_the_sphere_and_round_trip():
    q = create_quantizer("bsq", dim=5)
    every = torch.arange(32)
    codes = q.decode(every)
    assert torch.allclose(codes.norm(dim=1), torch.ones(32))
    assert torch.equal(q(codes * 3.0).indices, every)
    s = torch.tensor(1 / math.sqrt(5)).item()  # in float32
    assert q.decode(torch.tensor([0b10000])).tolist() == [[s, -s, -s, -s, -s]]


def test_wide_sign_codes_use_int64_indices():
    q = create_quantizer("lfq", dim=40)
    z = torch.ones(1, 40)
    assert q(z).indices.item() == 2**40 - 1


def _exact_entropies(logits):
    """Brute force over all 2**D codes of p(c|x) = prod_i sigmoid(+-l_i)."""
    d = logits.shape[1]
    codes = torch.tensor(list(itertools.product([0, 1], repeat=d)), dtype=torch.float64)
    log_p = (codes * torch.nn.functional.logsigmoid(logits.double())[:, None]
             + (1 - codes) * torch.nn.functional.logsigmoid(-logits.double())[:, None]).sum(-1)
    p = log_p.exp()
    per_sample = -(p * log_p).sum(1).mean()
    avg = p.mean(0)
    return per_sample, -(avg * avg.log()).sum()


def test_factorized_entropy_is_exact_per_sample_and_bounds_the_codebook_entropy():
    logits = torch.randn(50, 6) * 3
    per_sample, codebook = binary_entropy_terms(logits)
    exact_sample, exact_codebook = _exact_entropies(logits)
    assert per_sample.item() == pytest.approx(exact_sample.item(), rel=1e-5)
    assert codebook.item() >= exact_codebook.item() - 1e-5
    # one sample: the batch average is itself a product distribution, so the two agree
    _, one = binary_entropy_terms(logits[:1])
    assert one.item() == pytest.approx(_exact_entropies(logits[:1])[1].item(), rel=1e-4)


def test_lfq_entropy_loss_spreads_codes():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 6)
    q = create_quantizer("lfq", dim=6, entropy_loss_weight=1.0, inv_temperature=10.0).train()
    opt = torch.optim.Adam(encoder.parameters(), lr=0.05)
    x = torch.randn(512, 8)
    start = q.eval()(encoder(x)).metrics["usage"]
    q.train()
    for _ in range(100):
        out = q(encoder(x))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert "sample_entropy" in out.metrics and "codebook_entropy" in out.metrics
    assert q.eval()(encoder(x)).metrics["usage"] > max(start, 0.8)
