import pytest
import torch
import torch.nn.functional as F

from vtok.quant import create_quantizer


def test_ema_step_with_no_decay_moves_codes_to_cluster_means():
    q = create_quantizer("vq", dim=2, codebook_size=2, decay=0.0, eps=0.0, kmeans_init=False)
    q.codebook.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    x = torch.tensor([[-2.0, 1.0], [-4.0, 3.0], [3.0, 0.0], [5.0, 2.0], [4.0, -2.0]])
    out = q.train()(x)
    assert out.indices.tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(q.codebook, torch.tensor([[-3.0, 2.0], [4.0, 0.0]]))


def test_kmeans_init_finds_separated_clusters():
    centers = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    x = centers.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2)
    q = create_quantizer("vq", dim=2, codebook_size=4, decay=1.0, restart_dead_codes=False)
    q.train()(x)
    # every center has a code next to it, so each code found its own cluster
    assert torch.cdist(centers, q.codebook).min(1).values.max() < 0.1
    assert bool(q.initialized)


def test_loaded_state_is_not_reinitialized_by_kmeans():
    q = create_quantizer("vq", dim=4, codebook_size=8)
    q.train()(torch.randn(64, 4))
    fresh = create_quantizer("vq", dim=4, codebook_size=8, decay=1.0, restart_dead_codes=False)
    fresh.load_state_dict(q.state_dict())
    fresh.train()(torch.randn(64, 4) * 100)  # k-means here would move codes far away
    assert torch.allclose(fresh.codebook, q.codebook, atol=1e-3)


def test_dead_codes_are_restarted_from_recent_inputs_and_reported():
    torch.manual_seed(0)
    q = create_quantizer("vq", dim=3, codebook_size=64, dead_code_window=5.0, kmeans_init=False)
    q.codebook.mul_(100)  # most codes far from the data: never chosen
    q.ema_sum.mul_(100)
    x = torch.randn(256, 3)
    first = q.train()(x)
    # dead = unused for 5 * 64 = 320 vectors: not yet after 256, but after 512
    assert first.metrics["restarts"] == 0
    second = q(x)
    assert second.metrics["restarts"] > 30 and second.metrics["dead_fraction"] > 0.4
    # the codes used by neither call were replaced by copies of input vectors
    unused = sorted(set(range(64)) - set(first.indices.tolist()) - set(second.indices.tolist()))
    assert len(unused) == second.metrics["restarts"]
    copies = (q.codebook[unused][:, None] == x[None]).all(-1).any(1)
    assert copies.all()
    assert q.eval()(x).metrics["usage"] > first.metrics["usage"]


def test_learned_codebook_gets_gradient_only_from_its_loss():
    q = create_quantizer("vq", dim=4, codebook_size=16, ema=False, kmeans_init=False)
    out = q.train()(torch.randn(32, 4, requires_grad=True))
    out.z_q.sum().backward()
    assert q.codebook.grad is None  # the straight-through path carries no codebook gradient
    out = q(torch.randn(32, 4))
    out.loss.backward()
    assert q.codebook.grad.abs().sum() > 0


def test_ema_codebook_is_not_a_parameter():
    q = create_quantizer("vq", dim=4, codebook_size=16)
    assert list(q.parameters()) == []
    assert "codebook" in q.state_dict() and "ema_sum" in q.state_dict()


def test_rotation_trick_value_is_the_code_and_gradient_is_rotated_and_scaled():
    torch.manual_seed(0)
    q = create_quantizer("vq", dim=6, codebook_size=32, rotation_trick=True, kmeans_init=False)
    x = torch.randn(10, 6, requires_grad=True)
    out = q.eval()(x)
    assert torch.equal(out.z_q, q.decode(out.indices))
    g = torch.randn(10, 6)
    (out.z_q * g).sum().backward()
    # the map is a rotation times |q|/|x|, so it scales gradient norms by that ratio
    ratio = out.z_q.detach().norm(dim=1) / x.detach().norm(dim=1)
    assert torch.allclose(x.grad.norm(dim=1), ratio * g.norm(dim=1), rtol=1e-4)
    assert not torch.allclose(x.grad, g)  # unlike the straight-through copy


def test_cosine_distance_codes_are_unit_vectors():
    q = create_quantizer("vq", dim=5, codebook_size=20, distance="cosine")
    out = q.train()(torch.randn(100, 5) * 7)
    assert torch.allclose(q.codebook.norm(dim=1), torch.ones(20), atol=1e-5)
    assert torch.allclose(out.z_q.norm(dim=1), torch.ones(100), atol=1e-5)


def test_codebook_dim_projects_and_decodes():
    q = create_quantizer("vq", dim=16, codebook_size=8, codebook_dim=2)
    assert q.codebook.shape == (8, 2)
    out = q.eval()(torch.randn(3, 5, 16))
    assert q.decode(out.indices).shape == (3, 5, 16)


@pytest.mark.parametrize("ema", [True, False])
def test_training_reduces_quantization_error(ema):
    torch.manual_seed(0)
    q = create_quantizer("vq", dim=4, codebook_size=64, ema=ema, kmeans_init=False)
    opt = torch.optim.Adam(q.parameters(), lr=0.05) if not ema else None
    x = torch.randn(2048, 4) * 0.5 + 2  # far from the N(0, 1) initial codes
    before = (q.eval()(x).z_q - x).pow(2).mean()
    q.train()
    for _ in range(60):
        out = q(x)
        if opt:
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    after = (q.eval()(x).z_q - x).pow(2).mean()
    assert after < 0.2 * before


@pytest.mark.parametrize("ema,distance,codebook_dim", [
    (True, "l2", None), (False, "l2", None), (True, "cosine", None), (True, "l2", 2)])
def test_grown_codebook_keeps_old_codes_and_splits_the_busiest(ema, distance, codebook_dim):
    options = dict(dim=4, ema=ema, distance=distance, codebook_dim=codebook_dim,
                   kmeans_init=False)
    vq = create_quantizer("vq", codebook_size=8, **options)
    if ema:
        vq.ema_count.copy_(torch.tensor([1.0, 9.0, 2.0, 7.0, 3.0, 3.0, 1.0, 5.0]))
        vq.ema_sum.copy_(vq.codebook * vq.ema_count[:, None] * 0.9)
    else:  # the most recently used codes are split
        vq.idle.copy_(torch.tensor([50, 3, 40, 0, 9, 70, 60, 1]))
    state = vq.grown_state(11, seed=3)
    big = create_quantizer("vq", codebook_size=11, **options)
    big.load_state_dict(state)
    big.eval()
    old = torch.arange(8)
    assert torch.equal(big.decode(old), vq.decode(old))
    split = torch.tensor([1, 3, 7]) if ema else torch.tensor([3, 7, 1])
    moved = (big.codes()[8:] - vq.codes()[split]).norm(dim=1)
    assert bool((moved > 0).all()) and bool((moved < 0.1).all())
    if ema:  # each split pair shares the old code's statistics half and half
        assert torch.equal(big.ema_count[split], vq.ema_count[split] / 2)
        assert torch.equal(big.ema_count[8:], big.ema_count[split])
        assert torch.equal(big.ema_sum[split], vq.ema_sum[split] / 2)
        assert torch.equal(big.ema_sum[:8][[0, 2]], vq.ema_sum[[0, 2]])
        if distance == "cosine":  # sums of unit vectors: the twin's sum is as long
            lengths = big.ema_sum[8:].norm(dim=1) / big.ema_sum[split].norm(dim=1)
            assert torch.allclose(lengths, torch.ones(3))
        direction = F.cosine_similarity(big.ema_sum[8:], big.codebook[8:], dim=1)
        assert torch.allclose(direction, torch.ones(3))
    assert torch.equal(vq.grown_state(11, seed=3)["codebook"], state["codebook"])  # seeded


def test_an_untrained_codebook_does_not_grow():
    vq = create_quantizer("vq", dim=4, codebook_size=8)  # k-means would overwrite it
    with pytest.raises(ValueError, match="only a trained codebook grows"):
        vq.grown_state(12)


@pytest.mark.parametrize("size", [8, 7, 17, 12.0])
def test_grown_codebook_refuses_sizes_it_cannot_reach(size):
    vq = create_quantizer("vq", dim=4, codebook_size=8, kmeans_init=False)
    with pytest.raises(ValueError, match=f"grows to between 9 and 16 codes, not {size}"):
        vq.grown_state(size)
