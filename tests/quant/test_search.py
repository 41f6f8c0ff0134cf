import pytest
import torch

from vtok.quant import nearest_code
from vtok.quant.search import BLOCK


@pytest.mark.parametrize("k,d", [(7, 3), (256, 8), (300, 5), (1000, 32), (4 * BLOCK + 1, 2)])
def test_nearest_code_matches_float64_brute_force(k, d):
    g = torch.Generator().manual_seed(k)
    x, codes = torch.randn(500, d, generator=g), torch.randn(k, d, generator=g)
    got = nearest_code(x, codes)
    dist = torch.cdist(x.double(), codes.double())
    best = dist.gather(1, got[:, None]).squeeze(1)
    # same code, or one whose float64 distance ties to within fp32 rounding
    assert torch.allclose(best, dist.min(1).values, rtol=1e-5, atol=1e-6)
    assert (got == dist.argmin(1)).float().mean() > 0.99


def test_ties_resolve_to_the_lowest_index_like_argmin():
    codes = torch.randn(600, 4)
    codes[400] = codes[10]  # exact duplicate in a later block
    codes[11] = codes[10]  # exact duplicate in the same block
    x = codes[[10, 400, 11, 5]].clone()
    assert nearest_code(x, codes).tolist() == [10, 10, 10, 5]


def test_dot_metric_picks_the_largest_inner_product():
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(300, 6, generator=g), dim=1)
    codes = torch.nn.functional.normalize(torch.randn(700, 6, generator=g), dim=1)
    got = nearest_code(x, codes, metric="dot")
    sims = x.double() @ codes.double().T
    assert torch.allclose(sims.gather(1, got[:, None]).squeeze(1), sims.max(1).values, atol=1e-6)


def test_chunking_does_not_change_the_answer(monkeypatch):
    g = torch.Generator().manual_seed(2)
    x, codes = torch.randn(1000, 8, generator=g), torch.randn(1024, 8, generator=g)
    whole = nearest_code(x, codes)
    monkeypatch.setitem(__import__("vtok.quant.search").quant.search.CHUNK_BYTES, "cpu", 4096 * 7)
    assert torch.equal(nearest_code(x, codes), whole)
