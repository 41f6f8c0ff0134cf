"""attach(): hooks into the installed timm's ViT/DeiT and vtok's TiTok encoder."""

import pytest
import torch
from torch import nn

from vtok.models import create_tokenizer
from vtok.reduce import REDUCERS, attach

timm_vit = pytest.importorskip("timm.models.vision_transformer")
timm_deit = pytest.importorskip("timm.models.deit")

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)
PATCHES = 16  # 4 x 4 patches of 8 px


def vit(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return timm_vit.VisionTransformer(**{**TINY, **overrides}).eval()


def deit() -> nn.Module:
    torch.manual_seed(0)
    return timm_deit.VisionTransformerDistilled(**TINY).eval()


def titok() -> nn.Module:
    torch.manual_seed(0)
    return create_tokenizer("test-titok", depth=3).eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def repeated_patches() -> torch.Tensor:
    """Two kinds of 8x8 patch, alternating by row: each patch has identical twins."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    rows = [torch.cat([a if i % 2 == 0 else b] * 4, -1) for i in range(4)]
    return torch.cat(rows, -2)


def latents(tok: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TiTok's encoder output for the latent tokens (before quantization)."""
    seen = []
    hook = tok.to_latent.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        tok.encode(x)
    finally:
        hook.remove()
    return seen[0]


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               + len(m._forward_pre_hooks_with_kwargs) for m in model.modules())


def amounts(name: str) -> list[dict]:
    return [{"keep": 0.5}] if name in ("pool2d", "pool3d") else [{"keep": 0.3}, {"r": 3}]


@torch.no_grad()
@pytest.mark.parametrize("build", [vit, deit, titok])
def test_leaving_restores_the_model_bit_for_bit(build):
    model, x = build(), images()
    run = (lambda: latents(model, x)) if build is titok else (lambda: model(x))
    before, modules = run(), list(model.modules())
    with attach(model, "tome", keep=0.25):
        assert not torch.equal(run(), before)
    assert torch.equal(run(), before)
    assert list(model.modules()) == modules and all_hooks(model) == 0


@torch.no_grad()
@pytest.mark.parametrize("build", [vit, deit, titok])
@pytest.mark.parametrize("amount", [{"keep": 1.0}, {"r": 0}])
def test_reducing_nothing_is_exact(build, amount):
    model, x = build(), images()
    run = (lambda: latents(model, x)) if build is titok else (lambda: model(x))
    before = run()
    with attach(model, "tome", **amount) as handle:
        assert torch.equal(run(), before)
    n = PATCHES + (8 if build is titok else model.num_prefix_tokens)
    assert handle.tokens_per_block == [n] * 3 and handle.plan is None


@torch.no_grad()
@pytest.mark.parametrize("name", REDUCERS.names())
def test_every_method_runs_on_timm_vit_and_deit(name):
    for model in (vit(), deit()):
        x = images()
        prefix = model.num_prefix_tokens
        for amount in amounts(name):
            with attach(model, name, **amount) as handle:
                logits, feats = model(x), model.forward_features(x)
            assert logits.shape == (2, 10) and torch.isfinite(logits).all()
            assert feats.shape == (2, PATCHES + prefix, 32) and torch.isfinite(feats).all()
            assert handle.tokens_per_block[0] == PATCHES + prefix
            assert (handle.plan.kept[:, :prefix] == torch.arange(prefix)).all()  # CLS first


@torch.no_grad()
@pytest.mark.parametrize("name", REDUCERS.names())
def test_every_method_keeps_titok_latents(name):
    tok, x = titok(), images()
    for amount in amounts(name):
        with attach(tok, name, **amount) as handle:
            z = latents(tok, x)
            out = tok(x)
        assert z.shape == (2, 8, 4) and torch.isfinite(z).all()
        assert out["recon"].shape == x.shape and torch.isfinite(out["recon"]).all()
        plan = handle.plan
        # the 8 latents (the last tokens) are the first outputs, unmerged
        assert (plan.kept[:, :8] == torch.arange(PATCHES, PATCHES + 8)).all()
        assert (plan.sizes[:, :8] == 1).all()
        assert (plan.assign[:, PATCHES:] == torch.arange(8)).all()


@torch.no_grad()
@pytest.mark.parametrize("options, expected", [
    ({"r": 3}, [17, 14, 11]),  # ToMe: N - i*r tokens enter block i
    ({"r": 2, "layers": [0, 2]}, [15, 15, 13]),
    ({"keep": 0.5}, [17, 9, 9]),  # 8 of 16 patches + CLS, after the first block
    ({"keep": 0.25, "layers": 2}, [17, 17, 5]),
    ({"keep": 0.5, "layers": 0}, [9, 9, 9]),
])
def test_tokens_entering_each_block_follow_the_schedule(options, expected):
    model = vit()
    with attach(model, "tome", **options) as handle:
        model(images())
    assert handle.tokens_per_block == expected
    assert handle.plan.num_outputs == expected[-1]
    assert handle.plan.sizes.sum(1).tolist() == [17.0, 17.0]


@torch.no_grad()
@pytest.mark.parametrize("method", ["tome", "kcenter", "dpc_knn"])
def test_similarity_chooses_what_the_reducer_compares(method):
    """Default: the tokens entering the block; "keys": the previous block's keys, heads
    averaged. The adapter's plan is the reducer's own plan on exactly those features."""
    model, x = vit(), images()
    seen = {}
    hooks = [model.blocks[1].register_forward_pre_hook(
                 lambda m, args: seen.__setitem__("tokens", args[0])),
             model.blocks[0].attn.qkv.register_forward_hook(
                 lambda m, args, out: seen.__setitem__("qkv", out))]
    plans = {}
    for similarity in ("tokens", "keys"):
        with attach(model, method, keep=0.5, similarity=similarity) as handle:
            model(x)
        plans[similarity] = handle.plan.assign
    for hook in hooks:
        hook.remove()
    B, N, _ = seen["qkv"].shape
    keys = seen["qkv"][..., 32:64].reshape(B, N, 2, 16).transpose(1, 2)  # 2 heads of 16
    tokens = seen["tokens"]
    reducer = REDUCERS.create(method, keep=0.5, protected=1)
    assert torch.equal(plans["tokens"], reducer(tokens).assign)
    assert torch.equal(plans["keys"], reducer(tokens, keys=keys).assign)
    assert not torch.equal(plans["tokens"], plans["keys"])


@torch.no_grad()
def test_titok_schedule_counts_latents_as_protected():
    tok = titok()
    with attach(tok, "tome", r=4) as handle:
        tok.encode(images())
    assert handle.tokens_per_block == [24, 20, 16]


@torch.no_grad()
def test_a_one_block_encoder_reduces_at_its_input():
    torch.manual_seed(0)
    tok = create_tokenizer("test-titok").eval()  # depth 1: no earlier block to take keys from
    with attach(tok, "tome", keep=0.5) as handle:
        z = latents(tok, images())
    assert handle.tokens_per_block == [8 + 8] and torch.isfinite(z).all()


@torch.no_grad()
@pytest.mark.parametrize("options", [{"r": 4}, {"keep": 0.5},
                                     {"keep": 0.25, "round_share": 0.5}])
def test_proportional_attention_makes_merging_twins_exact(options):
    # Without position embeddings, twin patches stay identical through every block; merging
    # them with proportional attention must then give the unreduced outputs. (At keep 0.25 on
    # this layout, only the paper's full rounds merge nothing but twins.)
    model, x = vit(), repeated_patches()
    model.pos_embed.zero_()
    before = model.forward_features(x)
    with attach(model, "tome", **options) as handle:
        after = model.forward_features(x)
    assert handle.tokens_per_block[-1] < 17
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    with attach(model, "tome", proportional=False, **options):
        assert (model.forward_features(x) - before).abs().max() > 1e-3


@torch.no_grad()
def test_proportional_attention_in_titok():
    tok, x = titok(), repeated_patches()
    tok.patch_pos.zero_()
    before = latents(tok, x)
    with attach(tok, "tome", r=4):
        torch.testing.assert_close(latents(tok, x), before, rtol=0, atol=1e-5)


@torch.no_grad()
def test_average_pooling_sees_the_mean_of_what_survived():
    model = vit(class_token=False, global_pool="avg")
    x = images()
    with attach(model, "random", keep=0.5) as handle:
        feats = model.forward_features(x)
    assert feats.shape == (2, PATCHES, 32) and handle.tokens_per_block == [16, 8, 8]
    dropped = handle.plan.assign < 0
    kept_mean = (feats * ~dropped[..., None]).sum(1) / (~dropped).sum(1, keepdim=True)
    torch.testing.assert_close(feats[dropped], kept_mean.repeat_interleave(8, 0))


@torch.no_grad()
def test_runs_under_autocast():
    model = vit()
    with torch.autocast("cpu", dtype=torch.bfloat16), attach(model, "tome", r=3):
        out = model(images())
    assert out.shape == (2, 10) and torch.isfinite(out.float()).all()


@torch.no_grad()
def test_protected_index_lists_may_count_from_the_end():
    tok, x = titok(), images()
    with attach(tok, "kcenter", keep=0.5):
        default = latents(tok, x)
    with attach(tok, "kcenter", keep=0.5, protected=list(range(-8, 0))) as handle:
        assert torch.equal(latents(tok, x), default)
    assert handle.tokens_per_block == [24, 16, 16]


def test_nested_attach_is_refused_and_allowed_again_after():
    model = vit()
    with attach(model, "tome", r=2), pytest.raises(ValueError, match="already has"):
        attach(model, "random", keep=0.5)
    with attach(model, "random", keep=0.5):
        pass
    assert all_hooks(model) == 0


def test_an_exception_inside_the_block_still_removes_the_hooks():
    model = vit()
    with pytest.raises(RuntimeError, match="boom"), attach(model, "tome", r=2):
        model(images())
        raise RuntimeError("boom")
    assert all_hooks(model) == 0
    with pytest.raises(ValueError, match="r must be smaller"), attach(model, "tome", r=16):
        model(images())
    assert all_hooks(model) == 0


@pytest.mark.parametrize("call, message", [
    (lambda m: attach(nn.Linear(2, 2), "tome", r=1), "cannot attach to Linear"),
    (lambda m: attach(m, "tome", keep=1.5), "keep must be in \\(0, 1\\], got 1.5"),
    (lambda m: attach(m, "tome", r=-1), "got -1"),
    (lambda m: attach(m, "tome"), "exactly one of keep"),
    (lambda m: attach(m, "tome", keep=0.5, r=2), "exactly one of keep"),
    (lambda m: attach(m, "nope", r=2), "unknown reducer 'nope'"),
    (lambda m: attach(m, "pool2d", r=2), "has no option r"),
    (lambda m: attach(m, "tome", r=2, layers=[1, 3]), "got \\[1, 3\\]"),
    (lambda m: attach(m, "tome", keep=0.5, layers=[1, 2]), "one block index"),
    (lambda m: attach(m, "tome", keep=0.5, protected="cls"), "protected must be"),
    (lambda m: attach(m, "tome", keep=0.5, similarity="values"),
     "similarity must be 'tokens' or 'keys', got 'values'"),
    (lambda m: attach(m, "tome", keep=0.5, proportional="yes"), "proportional must be true"),
    (lambda m: attach(vit(class_token=False, global_pool="avg"), "cls_attn", keep=0.5),
     "class token"),
])
def test_bad_arguments_are_named(call, message):
    model = vit()
    with pytest.raises(ValueError, match=message):
        call(model)
    assert all_hooks(model) == 0


@torch.no_grad()
def test_a_callers_attention_mask_is_refused_once_tokens_are_reduced():
    model = vit()
    with attach(model, "random", keep=0.5), pytest.raises(ValueError, match="attention mask"):
        model(images(), attn_mask=torch.zeros(1, 1, 17, 17))


def test_grad_checkpointing_is_refused():
    model = vit()
    model.set_grad_checkpointing(True)
    with pytest.raises(ValueError, match="checkpointing"):
        attach(model, "tome", r=2)
