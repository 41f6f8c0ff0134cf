"""The critics: the 2D PatchGAN scores clips frame by frame, the 3D one space-time patches."""

import pytest
import torch

from vtok.losses.gan import LeCam, PatchDiscriminator, PatchDiscriminator3d
from vtok.losses.total import LossWeights, critic_loss, generator_loss
from vtok.train.model_check import discriminator_output


def test_the_2d_critic_scores_each_frame_of_a_clip():
    torch.manual_seed(0)
    disc, clips = PatchDiscriminator(8, 2), torch.rand(2, 3, 3, 32, 32)
    side = discriminator_output(32, 2)
    assert disc(clips).shape == (6, 1, side, side)
    assert torch.equal(disc(clips), disc(clips.flatten(0, 1)))


@pytest.mark.parametrize("frames,scored", [(1, 1), (5, 2), (17, 5)])  # halved twice
def test_the_3d_critic_scores_space_time_patches(frames, scored):
    torch.manual_seed(0)
    disc = PatchDiscriminator3d(8, 2)
    side = discriminator_output(32, 2)  # the 2D critic's map in space
    clips = torch.rand(2, frames, 3, 32, 32)
    assert disc(clips).shape == (2, 1, scored, side, side)
    if frames == 1:  # an image is a one-frame clip
        assert torch.equal(disc(clips[:, 0]), disc(clips))
    else:  # it sees motion: the first scores change with the second frame
        moved = clips.clone()
        moved[:, 1] = torch.rand_like(moved[:, 1])
        assert not torch.allclose(disc(moved)[:, :, 0], disc(clips)[:, :, 0])


def test_the_3d_critic_trains_against_a_clip_generator():
    torch.manual_seed(0)
    x = torch.rand(2, 5, 3, 32, 32)
    last = torch.nn.Parameter(torch.randn(3, 3))
    out = {"recon": torch.rand(2, 5, 3, 32, 32) * last.sum(), "quant_loss": torch.tensor(0.0)}
    disc = PatchDiscriminator3d(8, 2)
    weights = LossWeights(gan=0.1, lecam=0.001)
    total, terms, recon = generator_loss(x, out, weights, disc=disc, gan_on=True,
                                         last_layer=last)
    total.backward()
    assert last.grad is not None and all(p.grad is None for p in disc.parameters())
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in disc.parameters()]
    d_loss, hinge = critic_loss(disc, LeCam(), x, recon, weights)
    d_loss.backward()
    opt.step()
    assert torch.isfinite(d_loss) and hinge.item() >= 0
    assert all(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))
