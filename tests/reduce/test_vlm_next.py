"""LLaVA-NeXT and LLaVA-OneVision (anyres tiles, newline tokens, a different token count per
image): reduction inside the language model, where each run of image placeholders is one
image (keep=1 and detach are checked with the other models in test_vlm)."""

from __future__ import annotations

import functools

import pytest
import torch

from tests.reduce import test_vlm
from tests.reduce.test_vlm import LLAVA_ITEMS, generate, hook_counts, logits
from tests.reduce.vlm_models import llava_next_batch
from vtok.reduce import attach, kept_count

KINDS = ["llava_next", "llava_onevision"]


@functools.cache
def model_and_batches(kind: str, attn: str):
    model, batch, singles = test_vlm.model_and_batches(kind, attn)
    _, tokens = llava_next_batch(model, LLAVA_ITEMS)
    return model, batch, singles, tokens


@pytest.mark.parametrize("kind", KINDS)
def test_images_of_different_sizes_give_different_token_counts(kind):
    *_, tokens = model_and_batches(kind, "sdpa")
    assert len(set(tokens)) > 1  # the per-image bookkeeping is really exercised


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("method", "options"), [("fastv", {"layer": 2}),
                                                 ("divprune", {"layer": 1}),
                                                 ("random", {"layer": 1, "seed": 0})])
def test_batch_gives_each_sample_what_it_gives_alone(kind, method, options, attn):
    model, batch, singles, tokens = model_and_batches(kind, attn)
    with attach(model, method, keep=0.25, where="llm", **options) as handle:
        out = logits(model, batch)
        before, after = handle.last_counts
        assert before == sum(tokens)
        assert after == sum(kept_count(n, 0.25) for n in tokens)  # each image its own share
        together = generate(model, batch)
        for i, single in enumerate(singles):
            torch.testing.assert_close(out[i, -1], logits(model, single)[0, -1],
                                       atol=2e-5, rtol=1e-5)
            assert torch.equal(together[i], generate(model, single)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_cached_generation_equals_uncached(kind):
    model, batch, _, _ = model_and_batches(kind, "sdpa")
    with attach(model, "divprune", keep=0.25, where="llm", layer=1):
        cached = generate(model, batch)
        assert torch.equal(cached, generate(model, batch, use_cache=False))
    assert not torch.equal(cached, generate(model, batch))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["vision", "projector"])
def test_vision_and_projector_sides_are_refused_by_name(kind, where):
    model, batch, _, _ = model_and_batches(kind, "sdpa")
    hooks = hook_counts(model)
    name = "LlavaNextModel" if kind == "llava_next" else "LlavaOnevisionModel"
    with pytest.raises(ValueError, match=f"{name} packs image features in tiles; only "
                       "where='llm' is supported"):
        attach(model, "tome", keep=0.5, where=where)
    assert hook_counts(model) == hooks


def test_images_that_follow_each_other_are_refused():
    """Two images with no token between them form one run of placeholders, which cannot be
    split into images: refused, not reduced as one."""
    model, batch, _, tokens = model_and_batches("llava_next", "sdpa")
    ids = torch.tensor([[9, 10] + [5] * (tokens[0] + tokens[1]) + [11, 12]])
    adjacent = {"input_ids": ids, "pixel_values": batch["pixel_values"][:2],
                "image_sizes": batch["image_sizes"][:2]}
    logits(model, adjacent)  # the model itself takes them
    with (attach(model, "divprune", keep=0.25, where="llm", layer=1),
          pytest.raises(ValueError, match="the prompts hold 1 runs for 2 items: put a text "
                        "token between images")):
        logits(model, adjacent)
