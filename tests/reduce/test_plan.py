"""The shared core: building plans, applying, un-merging, composing, counts and top-k."""

import torch

from vtok.reduce import ReductionPlan, build_plan, kept_count
from vtok.reduce.base import kept_counts
from vtok.reduce.select import evenly_spaced, top_k_mask


def simple_plan():
    """5 tokens: 0 protected, 1 and 3 merge into 3, 2 kept, 4 dropped."""
    dest = torch.tensor([[0, 3, 2, 3, -1]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    protected = torch.tensor([[True, False, False, False, False]])
    return build_plan(dest, mask, torch.ones(1, 5), protected)


def test_build_plan_orders_protected_first_then_by_representative():
    plan = simple_plan()
    assert plan.kept.tolist() == [[0, 2, 3]]
    assert plan.assign.tolist() == [[0, 2, 1, 2, -1]]
    assert plan.sizes.tolist() == [[1.0, 1.0, 2.0]]
    assert plan.mask.all()


def test_apply_averages_merged_tokens_by_size_and_unmerge_copies_back():
    plan = simple_plan()
    x = torch.tensor([[[1.0], [2.0], [3.0], [6.0], [100.0]]])
    assert plan.apply(x).tolist() == [[[1.0], [3.0], [4.0]]]
    sizes = torch.tensor([[1.0, 3.0, 1.0, 1.0, 1.0]])
    assert plan.apply(x, sizes=sizes)[0, 2, 0].item() == (3 * 2.0 + 6.0) / 4
    assert plan.apply(x, mode="sum").tolist() == [[[1.0], [3.0], [8.0]]]
    assert plan.unmerge(plan.apply(x), fill=-7.0).tolist() == [[[1.0], [4.0], [3.0], [4.0],
                                                                 [-7.0]]]


def test_apply_takes_any_trailing_shape():
    plan = simple_plan()
    pos = torch.arange(5 * 2 * 3, dtype=torch.float64).reshape(1, 5, 2, 3)
    out = plan.apply(pos)
    assert out.shape == (1, 3, 2, 3)
    torch.testing.assert_close(out[0, 2], (pos[0, 1] + pos[0, 3]) / 2)
    assert plan.unmerge(out).shape == pos.shape


def test_padded_output_slots_are_zero_and_masked():
    dest = torch.tensor([[0, 1, 1, 3], [0, 0, 2, -1]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    plan = build_plan(dest, mask, torch.ones(2, 4), torch.zeros(2, 4, dtype=torch.bool))
    assert plan.num_kept.tolist() == [3, 2]
    assert plan.mask.tolist() == [[True, True, True], [True, True, False]]
    assert plan.kept[1, 2].item() == -1
    out = plan.apply(torch.ones(2, 4, 3))
    assert (out[1, 2] == 0).all() and plan.sizes[1].tolist() == [2.0, 1.0, 0.0]


def test_dropped_and_padded_inputs_never_reach_an_output_in_any_mode():
    dest = torch.tensor([[0, 1, 1, -1], [0, 0, 0, -1]])  # sample 0 drops 3; sample 1 pads it
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    plan = build_plan(dest, mask, torch.ones(2, 4), torch.zeros(2, 4, dtype=torch.bool))
    x = torch.arange(24.0).reshape(2, 4, 3)
    x[:, 3] = float("nan")
    x[1, 3, 0] = float("inf")
    for mode in ("mean", "sum", "take"):
        out = plan.apply(x, mode=mode)
        assert torch.isfinite(out).all(), mode
        assert (out[1, 1] == 0).all(), mode  # sample 1 has one output, then padding
    assert plan.apply(x)[0].tolist() == [x[0, 0].tolist(), ((x[0, 1] + x[0, 2]) / 2).tolist()]
    back = plan.unmerge(plan.apply(x), fill=-1.0)
    assert back[:, 3].eq(-1).all() and not plan.complete and not plan.full
    whole = build_plan(torch.tensor([[0, 0, 2]]), torch.ones(1, 3, dtype=torch.bool),
                       torch.ones(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    assert whole.full and whole.complete
    assert whole.unmerge(torch.tensor([[[5.0], [7.0]]])).tolist() == [[[5.0], [5.0], [7.0]]]


def test_then_equals_applying_twice():
    first = simple_plan()
    dest = torch.tensor([[0, 2, 2]])
    second = build_plan(dest, first.mask, first.sizes, torch.tensor([[True, False, False]]))
    both = first.then(second)
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(both.apply(x), second.apply(first.apply(x)))
    assert both.sizes.tolist() == [[1.0, 3.0]]
    assert both.assign.tolist() == [[0, 1, 1, 1, -1]]
    assert both.kept.tolist() == [[0, 3]]
    y = torch.randn(1, 2, 4)
    assert torch.equal(both.unmerge(y), first.unmerge(second.unmerge(y)))


def test_identity_plan_composes_away():
    plan = simple_plan()
    ident = ReductionPlan.identity_plan(plan.mask, plan.sizes)
    assert plan.then(ident) is plan
    assert torch.equal(ReductionPlan.identity_plan(plan.input_mask, plan.input_sizes)
                       .then(plan).assign, plan.assign)


def test_kept_count_rounds_half_up_and_keeps_at_least_one():
    assert kept_count(7, keep=0.5) == 4
    assert kept_count(10, keep=0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floats
    assert kept_count(10, keep=0.7) == 7
    assert kept_count(4, keep=0.1) == 1
    assert kept_count(576, keep=0.25) == 144
    assert kept_count(196, r=16) == 180
    assert kept_count(3, r=5) == 1 and kept_count(0, keep=0.5) == 0
    n = torch.arange(0, 300)
    for keep in (0.1, 0.25, 0.3, 0.5, 0.7, 0.95):
        assert kept_counts(n, keep=keep).tolist() == [kept_count(v, keep=keep) for v in range(300)]


def test_top_k_mask_prefers_high_scores_and_low_indices_on_ties():
    score = torch.tensor([[0.5, 0.9, 0.9, float("nan"), 0.1], [1.0, 2.0, 3.0, 4.0, 5.0]])
    cand = torch.tensor([[True, True, True, True, True], [True, False, True, True, False]])
    got = top_k_mask(score, cand, torch.tensor([3, 2]))
    assert got.tolist() == [[True, True, True, False, False], [False, False, True, True, False]]
    # candidates win over non-candidates even at -inf
    inf = torch.full((1, 4), float("-inf"))
    got = top_k_mask(inf, torch.tensor([[False, True, False, True]]), torch.tensor([2]))
    assert got.tolist() == [[False, True, False, True]]


def test_evenly_spaced_hits_exact_counts():
    for total in range(1, 30):
        for count in range(0, total + 1):
            rank = torch.arange(total)[None]
            hit = evenly_spaced(rank, torch.tensor([total]), torch.tensor([count]))
            want = {i * total // count for i in range(count)}
            assert set(hit[0].nonzero()[:, 0].tolist()) == want
