"""take_rows / add_rows: the flat-row forms of per-sample gather and scatter-add."""

import torch

from vtok.reduce.rows import add_rows, take_rows


def test_take_rows_is_a_per_sample_gather_and_reads_row_0_for_negatives():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 7, 2, 4, generator=g)  # any trailing shape
    index = torch.randint(-1, 7, (3, 5), generator=g)
    want = torch.stack([t[b, index[b].clamp(min=0)] for b in range(3)])
    assert torch.equal(take_rows(t, index), want)
    assert take_rows(t.to(torch.int64), index).dtype == torch.int64


def test_add_rows_sums_rows_into_their_slots():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    slot = torch.tensor([[0, 0, 2, 3, 3, 3], [1, 1, 1, 1, 0, 2]])
    out = add_rows(values, slot, 4)
    want = torch.zeros(2, 4, 3, dtype=torch.float64)
    for b in range(2):
        for n in range(6):
            want[b, slot[b, n]] += values[b, n]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    assert out[0, 1].abs().sum() == 0 and out[1, 3].abs().sum() == 0
