"""Properties every registered reducer must have, checked on a batch with mixed padding."""

import pytest
import torch

from vtok.reduce import create_reducer, kept_count

from .cases import (
    DIM,
    LENGTHS,
    MERGING,
    PROTECTED,
    VARIANTS,
    all_registered,
    build,
    identity_options,
    padded_batch,
    plain_batch,
)

ALL = sorted(VARIANTS)


def expected_count(variant: str, n: int) -> int:
    reducer = build(variant)
    return reducer.static_count(n)


def test_every_registered_reducer_is_covered():
    assert {name for name, _ in VARIANTS.values()} == all_registered()


@pytest.mark.parametrize("variant", ALL)
def test_each_sample_of_a_padded_batch_matches_the_sample_alone(variant):
    x, mask = padded_batch()
    reducer = build(variant)
    plan = reducer(x, mask)
    out = plan.apply(x)
    assert not out.isnan().any(), "padding leaked into the outputs"
    for b in range(x.shape[0]):
        alone_x = x[b][mask[b]][None]
        alone = reducer(alone_x)
        k = int(plan.num_kept[b])
        assert k == int(alone.num_kept[0]) == alone.num_outputs
        assert not plan.mask[b, k:].any() and plan.mask[b, :k].all()
        torch.testing.assert_close(out[b, :k], alone.apply(alone_x)[0], rtol=1e-6, atol=1e-6)
        assert torch.equal(plan.sizes[b, :k], alone.sizes[0])
        assert (out[b, k:] == 0).all() and (plan.sizes[b, k:] == 0).all()
        # the same input tokens go to the same outputs
        assert torch.equal(plan.assign[b][mask[b]], alone.assign[0])
        assert (plan.assign[b][~mask[b]] == -1).all()
        position = (mask[b].cumsum(0) - 1)
        assert torch.equal(position[plan.kept[b, :k]], alone.kept[0])


@pytest.mark.parametrize("variant", ALL)
def test_kept_counts_are_exact(variant):
    x, mask = padded_batch()
    plan = build(variant)(x, mask)
    want = [PROTECTED + expected_count(variant, n) for n in LENGTHS]
    assert plan.num_kept.tolist() == want
    assert plan.num_outputs == max(want)
    if "keep" in VARIANTS[variant][1] and not variant.startswith(("pool2d", "pool3d")):
        keep = VARIANTS[variant][1]["keep"]
        assert want == [PROTECTED + kept_count(n, keep=keep) for n in LENGTHS]


@pytest.mark.parametrize("variant", ALL)
def test_merging_conserves_the_size_weighted_sum(variant):
    x, mask = padded_batch(seed=1, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    sizes = torch.rand(x.shape[:2], generator=g, dtype=torch.float64) + 0.5
    plan = build(variant)(x, mask, sizes=sizes)
    out = plan.apply(x)
    went = plan.assign >= 0
    inputs = torch.where(went[..., None], x * sizes[..., None], 0).sum(1)
    outputs = (out * plan.sizes[..., None]).sum(1)
    torch.testing.assert_close(outputs, inputs, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(plan.sizes.sum(1), torch.where(went, sizes, 0).sum(1))
    if variant.split("-")[0] in MERGING and "keep-only" not in variant:
        assert (went == mask).all(), "a merging reducer dropped a real token"
    else:
        assert torch.equal(went.sum(1), plan.num_kept), "a pruning reducer merged tokens"


@pytest.mark.parametrize("variant", ALL)
def test_unmerge_sends_every_token_back_to_its_own_output(variant):
    x, mask = padded_batch(seed=3)
    plan = build(variant)(x, mask)
    B, M = plan.mask.shape
    slot_ids = torch.arange(M, dtype=torch.float32).expand(B, M)[..., None]
    back = plan.unmerge(slot_ids, fill=-1.0)
    assert back.shape == (B, x.shape[1], 1)
    assert torch.equal(back[..., 0].long(), plan.assign)
    # 2D positions: a token that was only kept (not merged) gets its own position back
    rows = torch.arange(x.shape[1], dtype=torch.float32)
    pos = torch.stack([rows // 5, rows % 5], -1).expand(B, -1, 2)
    restored = plan.unmerge(plan.apply(pos))
    alone = plan.apply(torch.ones_like(pos[..., 0]), mode="sum")
    single = alone.gather(1, plan.assign.clamp(min=0)) == 1
    keep_own = single & (plan.assign >= 0)
    assert torch.equal(restored[keep_own], pos[keep_own])
    # integer bookkeeping takes the representative token
    index = torch.arange(x.shape[1]).expand(B, -1)
    assert torch.equal(plan.apply(index)[plan.mask], plan.kept[plan.mask])


@pytest.mark.parametrize("variant", ALL)
def test_two_reductions_compose(variant):
    x, mask = padded_batch(seed=4, dtype=torch.float64)
    reducer = build(variant)
    first = reducer(x, mask)
    x1 = first.apply(x)
    second = reducer(x1, first.mask, sizes=first.sizes)
    x2 = second.apply(x1)
    total = first.then(second)
    torch.testing.assert_close(total.apply(x), x2, rtol=1e-9, atol=1e-9)
    assert torch.equal(total.sizes, second.sizes)
    if variant.split("-")[0] in MERGING and "keep-only" not in variant:
        # sizes accumulate: every real token is counted once after two merges
        assert torch.equal(total.sizes.sum(1), mask.sum(1).to(total.sizes.dtype))
    y = torch.randn(x2.shape, dtype=torch.float64)
    back = first.unmerge(second.unmerge(y))
    assert back.shape == x.shape
    assert torch.equal(back, total.unmerge(y))
    assert (second.num_kept <= first.num_kept).all()
    # protected tokens went through both reductions untouched
    assert torch.equal(x2[:, :PROTECTED], x[:, :PROTECTED])


@pytest.mark.parametrize("variant", ALL)
def test_reducing_nothing_is_the_identity_bit_for_bit(variant):
    name = VARIANTS[variant][0]
    reducer = create_reducer(name, protected=PROTECTED, **identity_options(variant))
    x, mask = padded_batch(seed=5)
    for args in ((x, mask), (x[:1, :],)):
        plan = reducer(*args)
        assert plan.identity
        assert plan.apply(args[0]) is args[0]
        y = torch.randn(args[0].shape)
        assert plan.unmerge(y) is y
    x = plain_batch(n=16)
    plan = reducer(x)
    assert torch.equal(plan.sizes, torch.ones(x.shape[:2]))
    assert torch.equal(plan.attention_bias()[:, 0, 0], torch.zeros(x.shape[:2]))


@pytest.mark.parametrize("variant", [v for v in ALL if not v.startswith("pool2d")])
def test_keeping_every_token_without_the_identity_shortcut_is_still_exact(variant):
    name, options = VARIANTS[variant]
    options = {k: v for k, v in options.items() if k not in ("keep", "r")}
    x, mask = padded_batch(seed=6)
    # keep=0.99 rounds up to every token, so the general merge path must reproduce x exactly
    plan = create_reducer(name, protected=PROTECTED, keep=0.99, **options)(x, mask)
    assert not plan.identity
    out = plan.apply(x)
    for b in range(x.shape[0]):
        assert torch.equal(out[b][plan.mask[b]], x[b][mask[b]])


@pytest.mark.parametrize("variant", ALL)
def test_protected_tokens_stay_first_and_unchanged(variant):
    x, mask = padded_batch(seed=7)
    plan = build(variant)(x, mask)
    out = plan.apply(x)
    assert torch.equal(out[:, :PROTECTED], x[:, :PROTECTED])
    assert torch.equal(plan.kept[:, :PROTECTED], torch.arange(PROTECTED).expand(3, -1))
    assert (plan.sizes[:, :PROTECTED] == 1).all()
    # an index list: protected tokens anywhere come first, in index order
    x = plain_batch(n=16, seed=8)
    protect = [0, 9] if not variant.startswith("pool2d") else [0, 17]
    plan = build(variant, protected=protect)(x)
    assert torch.equal(plan.apply(x)[:, :2], x[:, protect])
    assert (plan.assign[:, protect] == torch.tensor([0, 1])).all()


@pytest.mark.parametrize("variant", ALL)
def test_keys_drive_the_choice_when_given(variant):
    """Passing x itself as keys changes nothing; the plan depends on keys, not on x."""
    x, mask = padded_batch(seed=9)
    reducer = build(variant)
    plain = reducer(x, mask)
    with_keys = reducer(torch.zeros_like(x), mask, keys=x)
    assert torch.equal(plain.assign, with_keys.assign)
    heads = x[:, None].expand(-1, 3, -1, -1)  # [B, H, N, D], heads averaged
    assert torch.equal(reducer(x, mask, keys=heads).assign, plain.assign)


def test_outputs_keep_the_input_dtype():
    x = plain_batch(n=16).to(torch.bfloat16)
    for variant in ("tome", "pool2d", "divprune"):
        out = build(variant)(x).apply(x)
        assert out.dtype == torch.bfloat16 and out.shape[-1] == DIM
