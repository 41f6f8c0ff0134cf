import math

import pytest
import torch
from torch import nn

from vtok.train import core


def test_schedule_warms_up_peaks_and_ends_at_the_floor():
    f = [core.lr_factor(s, 100, warmup=10, min_ratio=0.1) for s in range(101)]
    assert f[0] == 0.1 and f[4] == 0.5 and f[9] == 1.0 and f[10] == 1.0
    assert f[55] == pytest.approx(0.55) and f[100] == pytest.approx(0.1)
    assert f[10:] == sorted(f[10:], reverse=True)
    assert core.lr_factor(500, 100, warmup=10, min_ratio=0.1) == f[100]  # flat past the end
    assert core.lr_factor(0, 10) == 1.0 and core.lr_factor(10, 10) == pytest.approx(0.0)


def test_overlapping_schedule_ramps_a_cosine_that_spans_the_run():
    f = [core.lr_factor(s, 100, warmup=5, overlap=True) for s in range(101)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0 * 0.5 * (1 + math.cos(
        math.pi * 0.04)))
    assert f[50] == pytest.approx(0.5) and f[100] == pytest.approx(0.0)


# the formulas each trainer used before the schedule was shared, verbatim
def _old_loop(step, steps, warmup, min_ratio):
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    return min_ratio + (1 - min_ratio) * cosine


def _old_distill(step, steps, warmup, min_ratio):
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _old_vit(step, warmup, steps):
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def _old_prior(s, steps):
    warm = max(1, steps // 20)
    return min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))


@pytest.mark.parametrize("steps,warmup,min_ratio", [(3600, 200, 0.1), (100, 10, 0.05),
                                                    (3000, 200, 0.05), (7, 0, 0.0),
                                                    (50, 60, 0.1)])
def test_schedule_is_bit_identical_to_each_trainers_old_one(steps, warmup, min_ratio):
    for s in range(steps + 3):
        new = core.lr_factor(s, steps, warmup, min_ratio)
        assert new == _old_loop(s, steps, warmup, min_ratio)
        assert new == _old_distill(s, steps, warmup, min_ratio)
        assert core.lr_factor(s, steps, warmup, 0.01) == _old_vit(s, warmup, steps)
        assert core.lr_factor(s, steps, max(1, steps // 20), overlap=True) == _old_prior(s, steps)


def test_param_groups_decay_matrices_only_and_skip_frozen_and_named():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Conv2d(3, 2, 1))
    model.register_parameter("pos", nn.Parameter(torch.zeros(1, 5, 3)))
    model[2].bias.requires_grad_(False)
    groups = core.param_groups(model, 0.05, no_decay={"pos"})
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert _ids(groups[0]) == _ids({"params": [model[0].weight, model[2].weight]})
    assert _ids(groups[1]) == _ids({"params": [model.pos, model[0].bias, model[1].weight,
                                               model[1].bias]})
    model[0].weight.requires_grad_(False)
    assert _ids(core.param_groups(model, 0.05)[0]) == _ids({"params": [model.pos,
                                                                       model[2].weight]})


def _ids(group):
    return [id(p) for p in group["params"]]


def test_ema_update_known_values():
    model = nn.Linear(2, 1)
    model.register_buffer("count", torch.zeros(()))
    ema = core.ema_copy(model)
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
        ema.weight.zero_()
        ema.bias.zero_()
        model.count.fill_(7)
    model.bias.requires_grad_(False)  # frozen: left alone
    core.update_ema(ema, model, step=0, decay=0.999)  # capped at 1/10: moves 0.9 of the way
    assert torch.allclose(ema.weight, torch.full((1, 2), 0.9)) and ema.bias.item() == 0.0
    assert ema.count.item() == 7
    core.update_ema(ema, model, step=10_000, decay=0.5)  # the cap no longer binds: 0.5
    assert torch.allclose(ema.weight, torch.full((1, 2), 0.95))


def test_progress_bar_is_none_when_off():
    assert core.progress_bar(False, 10, "x") is None
    bar = core.progress_bar(True, 10, "x", initial=3)
    assert bar.total == 10 and bar.n == 3
    bar.close()
