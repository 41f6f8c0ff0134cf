import pytest
import torch

from vtok.nn import AttentionBlock2d, ResBlock, TransformerBlock, group_norm


@pytest.mark.parametrize("channels,groups", [(4, 1), (8, 2), (16, 4), (24, 6), (128, 32),
                                             (512, 32), (6, 1)])
def test_group_norm_keeps_at_least_four_channels_per_group(channels, groups):
    assert group_norm(channels).num_groups == groups


def test_blocks_keep_shapes_and_pass_gradients():
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    y = AttentionBlock2d(16)(ResBlock(8, 16)(x))
    assert y.shape == (2, 16, 6, 5)
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    t = TransformerBlock(16, 4)(torch.randn(2, 7, 16))
    assert t.shape == (2, 7, 16)
    with pytest.raises(ValueError, match="heads must divide dim=16, got heads=3"):
        TransformerBlock(16, 3)


def test_sincos_table_known_values():
    from vtok.nn.transformer import sincos_2d

    table = sincos_2d(3, 8)
    assert table.shape == (1, 9, 8)
    assert torch.equal(table[0, 0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    # position 5 = row 1, column 2; the first frequency is 1
    assert torch.allclose(table[0, 5, [0, 2, 4, 6]],
                          torch.tensor([2.0, 2.0, 1.0, 1.0]).sin() * torch.tensor([1, 0, 1, 0])
                          + torch.tensor([2.0, 2.0, 1.0, 1.0]).cos() * torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        sincos_2d(2, 6)
