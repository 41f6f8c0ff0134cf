"""Visual-token reduction inside transformers' LLaVA and Qwen2-VL (tiny random-weight models)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

from tests.reduce.vlm_models import (
    llava_batch,
    llava_next_batch,
    qwen_batch,
    split_llava,
    split_qwen,
    tiny_llava,
    tiny_llava_next,
    tiny_qwen2_vl,
)
from vtok.reduce import REDUCERS, attach

LLAVA_ITEMS = (1, 2)
QWEN_ITEMS = (("image",), ("image", "video"))
# (where, method, options): every place, and methods of every kind (merge, prune, attention)
LLAVA_CASES = [
    ("vision", "tome", {}),
    ("vision", "cls_attn", {}),
    ("projector", "divprune", {}),
    ("projector", "pool2d", {}),
    ("llm", "fastv", {"layer": 2}),
    ("llm", "random", {"layer": 1, "seed": 0}),
]
QWEN_CASES = [
    ("projector", "tome", {}),
    ("projector", "pool2d", {}),
    ("projector", "static_gate", {}),
    ("llm", "pool3d", {"layer": 1}),
    ("llm", "fastv", {"layer": 2}),
    ("llm", "kcenter", {"layer": 1}),
]


def generate(model, inputs, **options):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, **options)
    return out[:, -4:]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def hook_counts(model):
    """Forward hooks per module (transformers installs some of its own)."""
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


@functools.cache
def shared_model(kind, attn):
    """One model per kind and attention for the tests that leave it as they found it (every
    attach here is removed again, which `test_keep_one_is_bit_exact_and_detach_restores`
    checks)."""
    builders = {"llava": tiny_llava, "qwen": tiny_qwen2_vl, "llava_next": tiny_llava_next,
                "llava_onevision": functools.partial(tiny_llava_next, onevision=True)}
    return builders[kind](attn)


def model_and_batches(kind, attn):
    if kind.startswith("llava_"):  # each image's token count comes from the model's packing
        model = shared_model(kind, attn)
        batch, _ = llava_next_batch(model, LLAVA_ITEMS)
        return model, batch, split_llava(batch, LLAVA_ITEMS)
    if kind == "llava":
        model, batch = shared_model(kind, attn), llava_batch(LLAVA_ITEMS)
        return model, batch, split_llava(batch, LLAVA_ITEMS)
    model, batch = shared_model(kind, attn), qwen_batch(QWEN_ITEMS)
    return model, batch, split_qwen(batch, QWEN_ITEMS)


CASES = [("llava", *c) for c in LLAVA_CASES] + [("qwen", *c) for c in QWEN_CASES]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llava", "qwen", "llava_next", "llava_onevision"])
def test_keep_one_is_bit_exact_and_detach_restores(kind, attn):
    model, batch, _ = model_and_batches(kind, attn)
    reference = logits(model, batch)
    hooks = hook_counts(model)  # after a first forward: transformers adds some lazily
    method = "fastv" if kind == "qwen" else "tome"
    with attach(model, method, keep=1.0, where="llm", layer=1):
        assert torch.equal(logits(model, batch), reference)
    with attach(model, "divprune", keep=0.25, where="llm", layer=1):
        assert logits(model, batch).shape[1] < reference.shape[1]
    assert torch.equal(logits(model, batch), reference)
    assert hook_counts(model) == hooks


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("kind", "where", "method", "options"), CASES)
def test_batch_gives_each_sample_what_it_gives_alone(kind, where, method, options, attn):
    """Left padding and different numbers of images per sample change nothing per sample."""
    model, batch, singles = model_and_batches(kind, attn)
    full_length = batch["input_ids"].shape[1]
    with attach(model, method, keep=0.25, where=where, **options) as handle:
        out = logits(model, batch)
        before, after = handle.last_counts
        assert after < before and out.shape[1] < full_length
        together = generate(model, batch)
        for i, single in enumerate(singles):
            alone = logits(model, single)
            torch.testing.assert_close(out[i, -1], alone[0, -1], atol=2e-5, rtol=1e-5)
            assert torch.equal(together[i], generate(model, single)[0])


@pytest.mark.parametrize("method", REDUCERS.names())
def test_every_method_batches_like_single_samples(method):
    """Every registered reducer, at the place it suits, on a left-padded LLaVA batch with one
    and two images per sample: each sample's last logits as when it runs alone."""
    where = "projector" if method == "cls_attn" else "llm"
    options = {"layer": 2} if where == "llm" else {}
    model, batch, singles = model_and_batches("llava", "sdpa")
    with attach(model, method, keep=0.25, where=where, **options) as handle:
        out = logits(model, batch)
        assert handle.last_counts[1] < handle.last_counts[0]
        for i, single in enumerate(singles):
            torch.testing.assert_close(out[i, -1], logits(model, single)[0, -1],
                                       atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("kind", "where", "method", "options"),
                         [c for c in CASES if c[2] != "fastv"])
def test_cached_generation_equals_uncached(kind, where, method, options):
    """Decisions that do not depend on the last token prune the same tokens at every step,
    so the pruned KV cache must give exactly what recomputing everything gives."""
    model, batch, _ = model_and_batches(kind, "sdpa")
    with attach(model, method, keep=0.25, where=where, **options):
        cached = generate(model, batch)
        assert torch.equal(cached, generate(model, batch, use_cache=False))
    assert not torch.equal(cached, generate(model, batch))  # the reduction did something


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_a_hand_written_decoding_loop_continues_the_original_positions(kind):
    """A loop that passes only the new token and the cache (no positions, no mask) gets the
    logits of a forward over the whole sequence without a cache: positions continue from the
    original sequence, not from the pruned cache's length."""
    model, _, singles = model_and_batches(kind, "sdpa")
    prompt = {k: v for k, v in singles[1].items() if k != "attention_mask"}
    with attach(model, "random", keep=0.25, where="projector", seed=0), torch.no_grad():
        out = model(**prompt, use_cache=True)
        ids, cache = prompt["input_ids"], out.past_key_values
        for _ in range(2):
            token = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            ids = torch.cat([ids, token], 1)
            whole = {**prompt, "input_ids": ids}
            if "mm_token_type_ids" in prompt:  # the generated tokens are text
                types = prompt["mm_token_type_ids"]
                whole["mm_token_type_ids"] = torch.cat(
                    [types, types.new_zeros(1, ids.shape[1] - types.shape[1])], 1)
            torch.testing.assert_close(out.logits[0, -1], model(**whole).logits[0, -1],
                                       atol=1e-5, rtol=1e-5)


def test_pruned_tokens_keep_their_mrope_positions():
    """Pruning at layer 0 equals running the language model on the kept embeddings with the
    kept tokens' original 3D (M-RoPE) positions."""
    model = tiny_qwen2_vl()
    inputs = split_qwen(qwen_batch(QWEN_ITEMS), QWEN_ITEMS)[1]
    seen = {}
    lm = model.model.language_model
    hook = lm.register_forward_pre_hook(
        lambda m, a, k: seen.update(embeds=k["inputs_embeds"], pos=k["position_ids"]),
        with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    hook.remove()
    with attach(model, "random", keep=0.5, where="llm", layer=0, seed=1) as handle:
        with torch.no_grad():
            pruned = model.model(**inputs).last_hidden_state
        kept = handle.layout.index[0]
    assert kept.numel() < inputs["input_ids"].shape[1]
    with torch.no_grad():
        reference = lm(inputs_embeds=seen["embeds"][:, kept],
                       position_ids=seen["pos"][:, :, kept]).last_hidden_state
    torch.testing.assert_close(pruned, reference, atol=1e-5, rtol=1e-5)


def test_fastv_scores_by_the_last_tokens_attention():
    """fastv keeps exactly the visual tokens with the largest last-token attention of layer
    K-1, computed here from eager attention weights."""
    model = tiny_llava("eager")
    inputs = split_llava(llava_batch(LLAVA_ITEMS), LLAVA_ITEMS)[0]
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    row = out.attentions[1][0, :, -1].mean(0)  # layer 1, last query, heads averaged
    visual = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    expected = visual[row[visual].topk(4).indices].sort().values
    with attach(model, "fastv", keep=0.25, where="llm", layer=2) as handle:
        with torch.no_grad():
            model(**inputs)
        kept = handle.layout.index[0]
    assert torch.equal(kept[torch.isin(kept, visual)], expected)


def static_video():
    """One Qwen sample with a video whose two frames are the same picture."""
    inputs = split_qwen(qwen_batch(QWEN_ITEMS), QWEN_ITEMS)[1]
    video = inputs["pixel_values_videos"].clone()
    video[32:] = video[:32]  # rows come frame after frame: 8 x 4 patches each
    return {**inputs, "pixel_values_videos": video}


@pytest.mark.parametrize(("method", "options"), [("static_gate", {}), ("pool3d", {})])
def test_video_reducers_see_the_frames(method, options):
    """A video of two equal frames: static_gate keeps frame 0 and merges frame 1 into it;
    pool3d at keep 0.5 pools the two frames together, each window kept at frame 0."""
    model = shared_model("qwen", "sdpa")
    inputs = static_video()
    ids = inputs["input_ids"][0]
    video = (ids == model.config.video_token_id).nonzero().flatten()
    with attach(model, method, keep=0.5, where="projector", **options) as handle:
        with torch.no_grad():
            model(**inputs)
        kept = handle.layout.index[0]
    assert torch.equal(kept[torch.isin(kept, video)], video[:8])


def test_text_only_inputs_run_unchanged_with_one_warning():
    model = tiny_llava()
    inputs = {"input_ids": torch.tensor([[9, 10, 11, 12]])}
    reference = logits(model, inputs)
    with attach(model, "tome", keep=0.5, where="projector"), warnings.catch_warnings():
        warnings.simplefilter("error")  # decoding steps bring no image tokens: no warning
        generate(model, llava_batch(LLAVA_ITEMS))
    with attach(model, "tome", keep=0.5, where="projector"):
        with pytest.warns(UserWarning, match=r"tome reduction is attached but this prompt holds "
                          r"no image or video tokens \(ids \[5\]\): it runs unreduced"):
            assert torch.equal(logits(model, inputs), reference)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per attach
            logits(model, inputs)


@pytest.mark.parametrize(("options", "message"), [
    ({"method": "tome", "keep": 1.5}, r"keep must be"),
    ({"method": "tome", "keep": 0.5, "where": "lm"}, r"where must be one of"),
    ({"method": "fastv", "keep": 0.5, "where": "llm", "layer": 4}, r"layer must be .*\[0, 4\)"),
    ({"method": "fastv", "keep": 0.5, "where": "llm", "layer": 0}, r"fastv needs layer >= 1"),
    ({"method": "fastv", "keep": 0.5, "where": "vision"}, r"use where='llm'"),
    ({"method": "cls_attn", "keep": 0.5, "where": "llm"}, r"cls_attn needs the vision"),
    ({"method": "tome", "keep": 0.5, "where": "vision", "layer": 1}, r"layer= is for"),
    ({"method": "nope", "keep": 0.5}, r"unknown reduction method 'nope'"),
    ({"method": "tome", "keep": 0.5, "layers": [1]}, r"on a vision-language model give"),
])
def test_bad_options_leave_the_model_unchanged(options, message):
    model = tiny_llava()
    logits(model, llava_batch(LLAVA_ITEMS))
    hooks = hook_counts(model)
    with pytest.raises(ValueError, match=message):
        attach(model, **options)
    assert hook_counts(model) == hooks


def test_refusals_name_the_problem():
    qwen = tiny_qwen2_vl()
    with pytest.raises(ValueError, match="patch merger packs 2x2"):
        attach(qwen, "tome", keep=0.5, where="vision")
    model = tiny_llava()
    model.set_attn_implementation("flex_attention")
    with pytest.raises(ValueError, match="attn_implementation 'sdpa' or 'eager'"):
        attach(model, "tome", keep=0.5)
    model = tiny_llava()
    with attach(model, "tome", keep=0.5):
        with pytest.raises(ValueError, match="already has a token reduction"):
            attach(model, "divprune", keep=0.5)
        batch = llava_batch(LLAVA_ITEMS)
        embeds = model.get_input_embeddings()(batch.pop("input_ids"))
        with pytest.raises(ValueError, match="needs input_ids"):
            model(inputs_embeds=embeds, **batch)
    with pytest.raises(ValueError, match="where= and layer= are for vision-language models"):
        attach(torch.nn.ModuleList(), "tome", keep=0.5, where="llm")
