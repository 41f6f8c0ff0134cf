"""Small cases whose answer is known by hand, one or more per method."""

import math

import pytest
import torch
import torch.nn.functional as F

from vtok.reduce import cls_attention, create_reducer


def points_1d(values):
    return torch.tensor(values, dtype=torch.float64)[None, :, None]


def kept_indices(plan, b=0):
    return plan.kept[b][plan.mask[b]].tolist()


def test_tome_merges_two_identical_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 5, generator=g)
    x[0, 2] = x[0, 3]  # A token 2 (rank 2) and B token 3 (rank 3) are identical
    plan = create_reducer("tome", r=1)(x)
    assert plan.kept.tolist() == [[0, 1, 3, 4, 5]]
    assert plan.sizes.tolist() == [[1.0, 1.0, 2.0, 1.0, 1.0]]
    assert torch.equal(plan.apply(x)[0, 2], x[0, 3])
    assert plan.assign.tolist() == [[0, 1, 2, 2, 3, 4]]


def test_tome_merges_the_most_similar_pairs_first_and_protects_cls():
    # 1D features of unit vectors in 2D: angles in degrees
    angles = torch.tensor([0.0, 200, 201, 90, 91, 300, 0])
    x = torch.stack([angles.deg2rad().cos(), angles.deg2rad().sin()], -1)[None]
    x[0, 0] = x[0, 1]  # the CLS is identical to token 1 but protected: never merged
    plan = create_reducer("tome", r=2, protected=1)(x)
    # reducible ranks: 1->A, 2->B, 3->A, 4->B, 5->A, 6->B; best pairs 1~2 and 3~4
    assert plan.kept.tolist() == [[0, 2, 4, 5, 6]]
    assert plan.sizes.tolist() == [[1.0, 2.0, 2.0, 1.0, 1.0]]


def test_tome_with_keys_merges_by_keys_and_averages_features():
    x = torch.tensor([0.0, 1, 2, 5], dtype=torch.float64)[None, :, None].repeat(1, 1, 2)
    keys = torch.tensor([[[1.0, 0], [0, 1], [0.2, 1], [1, 0.1]]])
    plan = create_reducer("tome", r=2)(x, keys=keys)
    # A = {0, 2}, B = {1, 3}: 0 ~ 3 and 2 ~ 1 by keys
    assert plan.assign.tolist() == [[1, 0, 0, 1]]
    assert plan.apply(x)[0, :, 0].tolist() == [1.5, 2.5]


def test_tome_round_share_splits_a_one_shot_merge_into_gentler_rounds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, 8, generator=g)
    rounds = lambda reducer: [r[2] for r in reducer._rounds(_batch_of(reducer, x))]  # noqa: E731
    default, paper = create_reducer("tome", keep=0.5), create_reducer("tome", keep=0.5,
                                                                      round_share=0.5)
    # keep: at most 40 % of the alive tokens per round (16 of 40, then 4 of the 24 left);
    # 0.5 is the paper's single round, in which every A token merges
    assert rounds(default) == [[16], [4]]
    assert rounds(paper) == [[20]]
    assert torch.equal(default(x).assign, create_reducer("tome", keep=0.5, round_share=0.4)(
        x).assign)
    gentle = create_reducer("tome", keep=0.5, round_share=0.1)
    # 40 tokens -> 20 in rounds of at most 10% of those alive (at least 1)
    assert rounds(gentle) == [[4], [3], [3], [3], [2], [2], [2], [1]]
    for reducer in (default, gentle):
        plan = reducer(x)
        assert plan.mask.sum(1).tolist() == [20, 20]
        assert not torch.equal(plan.assign, paper(x).assign)  # later rounds re-match merges
    # per-block r keeps the paper's one round, even for half the tokens
    assert rounds(create_reducer("tome", r=20)) == [[20]]
    for bad in (0.7, 0, True):
        with pytest.raises(ValueError, match=f"round_share must be in \\(0, 0.5\\], got {bad}"):
            create_reducer("tome", keep=0.5, round_share=bad)


def _batch_of(reducer, x):
    from vtok.reduce.base import check_tokens

    mask, sizes, padded = check_tokens(x, None, None)
    return reducer.prepare(x, mask, sizes, padded, None, None, 0)


def test_kcenter_picks_the_obvious_spread_on_a_line():
    x = points_1d([0, 1, 2, 9, 19, 20])
    plan = create_reducer("kcenter", keep=0.5)(x)
    # starts at 9 (nearest the mean 8.5), then the farthest 20, then 0
    assert kept_indices(plan) == [0, 3, 5]
    assert plan.apply(x)[0, :, 0].tolist() == [0.0, 9.0, 20.0]


def test_divprune_starts_from_the_most_isolated_token():
    angles = torch.tensor([0.0, 5, 10, 180, 90]).deg2rad()
    x = torch.stack([angles.cos(), angles.sin()], -1)[None]
    # 180 is the most isolated (90 degrees to its neighbour), then 0 is farthest, then 90
    plan = create_reducer("divprune", r=2)(x)
    assert kept_indices(plan) == [0, 3, 4]


def test_pool2d_on_a_4x4_grid_equals_avg_pool2d():
    g = torch.Generator().manual_seed(1)
    grid = torch.randn(2, 3, 4, 4, generator=g)  # [B, C, H, W]
    x = grid.flatten(2).transpose(1, 2)
    for options in ({"stride": 2}, {"keep": 0.25}):
        out = create_reducer("pool2d", **options)(x).apply(x)
        want = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
        torch.testing.assert_close(out, want)


def test_pool2d_keeps_the_cls_and_pools_a_ragged_grid_like_ceil_mode():
    g = torch.Generator().manual_seed(2)
    grid = torch.randn(1, 3, 5, 5, generator=g)
    cls = torch.randn(1, 1, 3, generator=g)
    x = torch.cat([cls, grid.flatten(2).transpose(1, 2)], 1)
    plan = create_reducer("pool2d", stride=2, protected=1)(x)
    out = plan.apply(x)
    want = F.avg_pool2d(grid, 2, ceil_mode=True).flatten(2).transpose(1, 2)
    assert torch.equal(out[:, :1], cls)
    torch.testing.assert_close(out[:, 1:], want)
    assert plan.sizes[0, 1:].tolist() == [4.0, 4.0, 2.0, 4.0, 4.0, 2.0, 2.0, 2.0, 1.0]


def test_pool2d_takes_an_explicit_rectangular_grid():
    grid = torch.arange(24, dtype=torch.float32).reshape(1, 1, 4, 6)
    x = grid.flatten(2).transpose(1, 2)
    out = create_reducer("pool2d", stride=(2, 3), grid=(4, 6))(x).apply(x)
    torch.testing.assert_close(out, F.avg_pool2d(grid, (2, 3)).flatten(2).transpose(1, 2))


def test_dpc_knn_finds_one_centre_per_blob_and_merges_each_blob():
    g = torch.Generator().manual_seed(3)
    blob_a = torch.randn(6, 2, generator=g, dtype=torch.float64) * 0.1
    blob_b = torch.randn(5, 2, generator=g, dtype=torch.float64) * 0.1 + 10
    x = torch.cat([blob_a, blob_b])[torch.randperm(11, generator=g)][None]
    plan = create_reducer("dpc_knn", keep=2 / 11, k=3)(x)
    out = plan.apply(x)[0]
    means = sorted([blob_a.mean(0).tolist(), blob_b.mean(0).tolist()])
    got = sorted(out.tolist())
    torch.testing.assert_close(torch.tensor(got), torch.tensor(means))
    assert sorted(plan.sizes[0].tolist()) == [5.0, 6.0]


def test_kmedoids_clusters_within_each_segment():
    # 2 frames of 6 tokens; frame 0 has blobs near 0 and 10, frame 1 near 100 and 110
    base = torch.tensor([0.0, 0.1, 0.2, 10.0, 10.1, 10.2], dtype=torch.float64)
    x = torch.cat([base, base + 100])[None, :, None]
    merge = create_reducer("kmedoids", keep=4 / 12, segments=2)(x)
    torch.testing.assert_close(merge.apply(x)[0, :, 0],
                               torch.tensor([0.1, 10.1, 100.1, 110.1], dtype=torch.float64))
    assert merge.sizes.tolist() == [[3.0, 3.0, 3.0, 3.0]]
    medoids = create_reducer("kmedoids", keep=4 / 12, segments=2, merge=False)(x)
    assert kept_indices(medoids) == [1, 4, 7, 10]
    # one segment: the two far clusters of frame 1 and the close ones of frame 0 mix
    whole = create_reducer("kmedoids", keep=2 / 12, segments=1)(x)
    assert whole.sizes.tolist() == [[6.0, 6.0]]


def test_cls_attn_keeps_dominant_tokens_and_merges_the_rest_into_contextual_ones():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 11, 4, generator=g, dtype=torch.float64)
    attn = torch.tensor([[0.0, 0.01, 0.5, 0.02, 0.3, 0.03, 0.04, 0.01, 0.05, 0.02, 0.02]])
    plan = create_reducer("cls_attn", keep=0.4, contextual=0.5, protected=1)(x, attn=attn)
    # 10 reducible tokens keep 4: 2 dominant (tokens 2 and 4), 2 contextual targets evenly
    # spaced among the other 8 (1, 3, 5, 6, 7, 8, 9, 10; ranks 0 and 4: tokens 1 and 7)
    assert kept_indices(plan) == [0, 1, 2, 4, 7]
    assert plan.sizes.sum().item() == 11
    assert plan.sizes[0, 2].item() == 1 and plan.sizes[0, 3].item() == 1


def test_cls_attn_computes_the_row_from_keys_when_not_given():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 9, 4, generator=g)
    reducer = create_reducer("cls_attn", keep=0.5, protected=1)
    row = cls_attention(x[:, 0], x)
    assert torch.equal(reducer(x).assign, reducer(x, attn=row).assign)


def test_stride_keeps_evenly_spaced_tokens():
    x = torch.randn(1, 11, 2)
    plan = create_reducer("stride", keep=0.3, protected=1)(x)
    assert kept_indices(plan) == [0, 1, 4, 7]  # ranks 0, 3, 6 of 10


def test_random_is_deterministic_per_seed_and_generator():
    x = torch.randn(1, 64, 2)
    picks = lambda **kw: kept_indices(create_reducer("random", keep=0.25, **kw)(x))
    assert picks(seed=1) == picks(seed=1) and picks(seed=1) != picks(seed=2)
    assert len(picks(seed=1)) == 16
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    r1 = create_reducer("random", keep=0.25, generator=g1)
    r2 = create_reducer("random", keep=0.25, generator=g2)
    first, second = kept_indices(r1(x)), kept_indices(r1(x))
    assert first != second  # a fresh draw every call
    assert [first, second] == [kept_indices(r2(x)), kept_indices(r2(x))]
    # roughly uniform: over many seeds every position is kept about keep of the time
    hits = torch.zeros(64)
    for seed in range(200):
        hits[picks(seed=seed)] += 1
    assert math.isclose(hits.mean().item(), 50.0) and hits.min() > 25 and hits.max() < 75
