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
