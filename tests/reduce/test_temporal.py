"""Video reducers on frame sequences: known decisions and values."""

from __future__ import annotations

import pytest
import torch

from vtok.reduce import create_reducer


def frames_with_a_static_region(T=3, h=2, w=2, dim=8, seed=0):
    """[1, T*h*w, dim]: place 0 is the same in every frame, the other places change."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, h * w, dim, generator=g)
    x[:, 0] = x[0, 0]
    return x.reshape(1, T * h * w, dim)


def test_static_gate_keeps_the_first_frame_and_what_changed():
    x = frames_with_a_static_region()
    plan = create_reducer("static_gate", keep=0.5, frames=3)(x)  # 6 of 12: frame 0 + 2 more
    kept = plan.kept[0][plan.mask[0]].tolist()
    assert kept[:4] == [0, 1, 2, 3] and len(kept) == 6
    assert 4 not in kept and 8 not in kept  # place 0 never changed after frame 0
    # the static place's later tokens merged into frame 0's token: size 3, value unchanged
    slot = plan.assign[0, 0]
    assert plan.assign[0, 4] == slot and plan.assign[0, 8] == slot
    assert plan.sizes[0, slot] >= 3
    torch.testing.assert_close(plan.apply(x)[0, slot], x[0, 0])


def test_static_gate_sends_a_dropped_place_to_its_last_kept_frame():
    x = torch.randn(1, 4 * 4, 5)  # 4 frames of 4 places, keep 5: frame 0 + 1 more
    x[0, 8:12] = -x[0, 4:8]  # frame 2 is frame 1 negated: the biggest change
    plan = create_reducer("static_gate", keep=5 / 16, frames=4)(x)
    kept = set(plan.kept[0][plan.mask[0]].tolist())
    assert {0, 1, 2, 3} < kept and len(kept & set(range(8, 12))) == 1
    (place,) = [k - 8 for k in kept if k >= 8]
    # frame 3 at that place goes to frame 2's kept token; other places go back to frame 0
    assert plan.assign[0, 12 + place] == plan.assign[0, 8 + place]
    other = (place + 1) % 4
    assert plan.assign[0, 12 + other] == plan.assign[0, other]


def test_pool3d_averages_frames_then_space():
    x = torch.randn(1, 2 * 3 * 3, 4)
    plan = create_reducer("pool3d", stride=(2, 1, 1), frames=2, grid=(3, 3))(x)
    out = plan.apply(x)
    assert plan.num_kept.tolist() == [9]
    torch.testing.assert_close(out[0], (x[0, :9] + x[0, 9:]) / 2)
    # keep 1/4 of 4 frames: time pooled first, all four frames into one, space untouched
    x = torch.randn(1, 4 * 4, 3)
    plan = create_reducer("pool3d", keep=0.25, frames=4)(x)
    assert plan.num_kept.tolist() == [4]
    torch.testing.assert_close(plan.apply(x)[0], x[0].view(4, 4, 3).mean(0))


@pytest.mark.parametrize(("name", "options", "message"), [
    ("static_gate", {"keep": 0.5, "frames": 0}, r"frames must be a positive integer"),
    ("pool3d", {"stride": (2, 2)}, r"stride must be \(frames, rows, columns\)"),
    ("pool3d", {"keep": 0.5, "grid": (2, 0)}, r"grid must be .* pair of them, got \(2, 0\)"),
])
def test_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_reducer(name, **options)


def test_frames_must_split_the_tokens():
    with pytest.raises(ValueError, match="do not split into frames=4"):
        create_reducer("static_gate", keep=0.5, frames=4)(torch.randn(1, 10, 3))
    with pytest.raises(ValueError, match=r"grid=\(3, 3\) needs 9 tokens a frame, got 8"):
        create_reducer("pool3d", keep=0.5, frames=2, grid=(3, 3))(torch.randn(1, 16, 3))
