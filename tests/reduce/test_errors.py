"""Bad options and bad input fail with ValueError naming the value."""

import pytest
import torch

from vtok.reduce import create_reducer

from .cases import VARIANTS

NAMES = sorted({name for name, _ in VARIANTS.values()} - {"pool2d", "pool3d"})


@pytest.mark.parametrize("name", NAMES + ["pool2d", "pool3d"])
@pytest.mark.parametrize("keep,shown", [
    (1.5, "1.5"), (0, "0"), (0.0, "0.0"), (-0.2, "-0.2"), (float("nan"), "nan"),
    ("0.5", "'0.5'"), (True, "True"),
])
def test_bad_keep_ratio_names_the_value(name, keep, shown):
    with pytest.raises(ValueError, match=rf"keep must be in \(0, 1\], got {shown}$"):
        create_reducer(name, keep=keep)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("r,shown", [(-1, "-1"), (2.0, "2.0"), (1.5, "1.5"), (True, "True")])
def test_bad_r_names_the_value(name, r, shown):
    with pytest.raises(ValueError, match=rf"r must be a non-negative integer .*got {shown}$"):
        create_reducer(name, r=r)


@pytest.mark.parametrize("name", NAMES)
def test_r_must_leave_a_token(name):
    x = torch.randn(2, 9, 4)
    reducer = create_reducer(name, r=8, protected=1)
    with pytest.raises(ValueError, match=r"r must be smaller than the 8 reducible tokens, got r=8"):
        reducer(x)
    assert create_reducer(name, r=7, protected=1)(x).num_kept.tolist() == [2, 2]


@pytest.mark.parametrize("name", NAMES)
def test_keep_and_r_are_exclusive(name):
    with pytest.raises(ValueError, match=r"exactly one of keep .* got keep=0.5, r=2"):
        create_reducer(name, keep=0.5, r=2)
    with pytest.raises(ValueError, match=r"exactly one of keep .* got keep=None, r=None"):
        create_reducer(name)


@pytest.mark.parametrize("name,options,message", [
    ("pool2d", {"keep": 0.5, "stride": 2}, r"exactly one of keep .* or stride"),
    ("pool2d", {"r": 3}, r"reducer 'pool2d' has no option r"),
    ("pool2d", {"stride": 0}, r"stride must be a positive integer or a pair of them, got 0"),
    ("pool2d", {"stride": 2, "grid": (3,)}, r"grid must be .*, got \(3,\)"),
    ("kcenter", {"keep": 0.5, "distance": "l1"}, r"distance must be one of 'l2', 'cosine', got"),
    ("dpc_knn", {"keep": 0.5, "k": 0}, r"k must be an integer >= 1 .*got 0"),
    ("kmedoids", {"keep": 0.5, "segments": 0}, r"segments must be an integer >= 1, got 0"),
    ("kmedoids", {"keep": 0.5, "iters": -1}, r"iters must be an integer >= 0, got -1"),
    ("cls_attn", {"keep": 0.5, "contextual": 1.5}, r"contextual must be a fraction .*got 1.5"),
    ("random", {"keep": 0.5, "seed": -3}, r"seed must be a non-negative integer, got -3"),
    ("tome", {"keep": 0.5, "colour": "red"}, r"reducer 'tome' has no option colour"),
    ("nope", {}, r"unknown reducer 'nope'; registered: cls_attn, divprune"),
])
def test_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_reducer(name, **options)


def test_bad_input_is_refused():
    reducer = create_reducer("tome", keep=0.5)
    x = torch.randn(2, 9, 4)
    with pytest.raises(ValueError, match=r"must be \[batch, tokens, channels\], got \(9, 4\)"):
        reducer(x[0])
    with pytest.raises(ValueError, match=r"mask must be a bool \[2, 9\] tensor"):
        reducer(x, torch.ones(2, 9))
    with pytest.raises(ValueError, match=r"keys must be \[2, 9, D\]"):
        reducer(x, keys=torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match=r"protected must be a count in \[0, 9\], got 10"):
        reducer(x, protected=10)
    with pytest.raises(ValueError, match=r"list of distinct indices in \[0, 9\), got \[1, 1\]"):
        reducer(x, protected=[1, 1])
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 0] = False
    with pytest.raises(ValueError, match=r"protected tokens must be real tokens"):
        reducer(x, mask, protected=1)
    with pytest.raises(ValueError, match=r"square number of reducible tokens, got 8"):
        create_reducer("pool2d", stride=2, protected=1)(x)
    with pytest.raises(ValueError, match=r"grid=\(3, 2\) needs 6 tokens, got 9"):
        create_reducer("pool2d", stride=2, grid=(3, 2))(x)
    with pytest.raises(ValueError, match=r"cls_attn needs attn="):
        create_reducer("cls_attn", keep=0.5)(x)
    with pytest.raises(ValueError, match=r"apply expects a \[batch=2, tokens=9, \.\.\.\]"):
        create_reducer("tome", keep=0.5)(x).apply(x[:, :5])
