"""Proportional attention bias and the single CLS attention row."""

import torch
import torch.nn.functional as F

from vtok.reduce import cls_attention, create_reducer, proportional_attention_bias

from .cases import padded_batch


def test_bias_is_log_size_and_minus_inf_on_padding():
    x, mask = padded_batch()
    plan = create_reducer("tome", keep=0.5, protected=2)(x, mask)
    bias = plan.attention_bias()
    assert bias.shape == (3, 1, 1, plan.num_outputs)
    real = plan.mask
    torch.testing.assert_close(bias[:, 0, 0][real], plan.sizes[real].log())
    assert torch.isneginf(bias[:, 0, 0][~real]).all()
    assert (plan.sizes[real] >= 1).all() and (~real).any()
    low = proportional_attention_bias(plan.sizes, plan.mask, torch.bfloat16)
    assert low.dtype == torch.bfloat16


def test_attention_over_merged_duplicates_equals_attention_over_the_duplicates():
    # tokens: a a b b c d (heads share them); ToMe with r=2 merges the two exact pairs
    g = torch.Generator().manual_seed(0)
    a, b, c, d = torch.randn(4, 8, generator=g, dtype=torch.float64)
    x = torch.stack([a, a, b, b, c, d])[None]
    plan = create_reducer("tome", r=2)(x)
    assert plan.sizes.tolist() == [[2.0, 2.0, 1.0, 1.0]]
    merged = plan.apply(x)
    q = torch.randn(1, 2, 5, 8, generator=g, dtype=torch.float64)  # [B, H, queries, D]
    k_full, k_merged = x[:, None].expand(1, 2, 6, 8), merged[:, None].expand(1, 2, 4, 8)
    v_full = torch.randn(1, 6, 8, generator=g, dtype=torch.float64)
    v_full[:, 1], v_full[:, 3] = v_full[:, 0], v_full[:, 2]
    v_merged = plan.apply(v_full)
    full = F.scaled_dot_product_attention(q, k_full, v_full[:, None].expand(1, 2, 6, 8))
    reduced = F.scaled_dot_product_attention(
        q, k_merged, v_merged[:, None].expand(1, 2, 4, 8),
        attn_mask=plan.attention_bias(torch.float64),
    )
    torch.testing.assert_close(reduced, full, rtol=1e-12, atol=1e-12)
    # without the bias it differs: the bias is what makes them equal
    plain = F.scaled_dot_product_attention(q, k_merged, v_merged[:, None].expand(1, 2, 4, 8))
    assert not torch.allclose(plain, full)


def test_padded_keys_get_no_attention():
    x, mask = padded_batch(seed=1, dtype=torch.float64)
    plan = create_reducer("dpc_knn", keep=0.4, protected=2)(x, mask)
    y = plan.apply(x)[:, None]  # one head
    out = F.scaled_dot_product_attention(y, y, y, attn_mask=plan.attention_bias(torch.float64))
    for b in range(3):
        k = int(plan.num_kept[b])
        alone = y[b : b + 1, :, :k]
        bias = plan.sizes[b, :k].log().to(torch.float64)[None, None, None]
        want = F.scaled_dot_product_attention(alone, alone, alone, attn_mask=bias)
        torch.testing.assert_close(out[b : b + 1, :, :k], want)


def test_cls_attention_is_the_first_row_of_full_attention():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 3, 7, 4, generator=g), torch.randn(2, 3, 7, 4, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    sizes = torch.tensor([[1.0, 2, 1, 3, 1, 1, 1], [1, 1, 4, 1, 1, 0, 0]])
    row = cls_attention(q[:, :, 0], k, mask, sizes=sizes)
    logits = q @ k.transpose(-1, -2) / 2.0 + torch.where(mask, sizes.clamp(min=1e-9).log(),
                                                          float("-inf"))[:, None, None]
    full = logits.softmax(-1)[:, :, 0].mean(1)
    torch.testing.assert_close(row, full)
    torch.testing.assert_close(row.sum(1), torch.ones(2))
    assert (row[1, 5:] == 0).all()
    single = cls_attention(q[:, 0, 0], k[:, 0])  # [B, D] and [B, N, D]: one head
    torch.testing.assert_close(single, (q[:, 0] @ k[:, 0].transpose(1, 2) / 2.0).softmax(-1)[:, 0])
