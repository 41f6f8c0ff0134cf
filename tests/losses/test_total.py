import torch
from torch import nn

from vtok.losses.gan import LeCam, PatchDiscriminator
from vtok.losses.total import LossWeights, critic_loss, generator_loss


def test_generator_loss_sums_weighted_terms():
    x = torch.zeros(1, 3, 8, 8)
    out = {"recon": torch.full((1, 3, 8, 8), 0.5), "quant_loss": torch.tensor(0.25)}
    total, terms, recon = generator_loss(x, out, LossWeights(l1=2.0, l2=4.0))
    assert list(terms) == ["l1", "l2", "quant"]
    assert terms["l1"].item() == 0.5 and terms["l2"].item() == 0.25
    assert total.item() == 2.0 * 0.5 + 4.0 * 0.25 + 0.25 and recon.dtype == torch.float32


def test_gan_terms_are_logged_from_the_start_and_train_only_the_generator():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    last = nn.Parameter(torch.randn(3, 3))
    out = {"recon": torch.rand(2, 3, 32, 32) * last.sum(), "quant_loss": torch.tensor(0.0)}
    disc, lecam = PatchDiscriminator(8, 2), LeCam()
    weights = LossWeights(gan=0.1, lecam=0.001)
    _, terms, _ = generator_loss(x, out, weights, disc=disc, gan_on=False)
    assert terms["gan_g"].item() == terms["gan_d"].item() == 0.0
    total, terms, recon = generator_loss(x, out, weights, disc=disc, gan_on=True,
                                         last_layer=last)
    total.backward()
    assert last.grad is not None and all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())
    d_loss, hinge = critic_loss(disc, lecam, x, recon, weights)
    assert torch.isfinite(d_loss) and hinge.item() >= 0


class _Pairs(torch.nn.Module):
    """A stand-in for LPIPS that keeps the frame pairs it is given."""

    def forward(self, a, b):
        self.pairs = (a, b)
        return (a - b).abs().flatten(1).mean(1)


def test_clips_lose_over_every_frame_and_lpips_compares_frames():
    clips = torch.arange(10.0).view(2, 5, 1, 1, 1).expand(2, 5, 3, 8, 8)  # frame b*5+t
    out = {"recon": clips + 0.5, "quant_loss": torch.tensor(0.0)}
    lpips = _Pairs()
    _, terms, _ = generator_loss(clips, out, LossWeights(lpips=1.0), lpips)
    assert terms["l1"].item() == 0.5 and terms["lpips"].item() == 0.5
    a, b = lpips.pairs
    assert a.shape == b.shape == (10, 3, 8, 8)
    assert b[:, 0, 0, 0].tolist() == list(range(10))  # every frame, in order
    for count in (2, 5, 9):
        generator_loss(clips, out, LossWeights(lpips=1.0), lpips, lpips_frames=count)
        a, b = lpips.pairs
        frames = b[:, 0, 0, 0].view(2, -1)
        assert a.shape[0] == 2 * min(count, 5) and torch.equal(a - b, torch.full_like(a, 0.5))
        assert frames[0].unique().numel() == min(count, 5)  # distinct frames of each clip
        assert ((frames[0] < 5).all() and (frames[1] >= 5).all())
