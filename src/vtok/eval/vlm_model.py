"""A small LLaVA-architecture vision-language model, built from Hugging Face `transformers`'
own classes, that scores token reduction inside a VLM on trained weights.

It answers a fixed question about a photo ("what is in the photo?" and two rephrasings) with
the EfficientNet-Lite0 teacher's ImageNet label (the first lemma of the class, lowercased:
"golden retriever"). Trained by scripts/train_vlm.py; shipped in benchmarks/vlm/.

- Vision tower: an HF `ViTModel` converted exactly from the repo's distilled timm ViT
  classifier (benchmarks/classifier, `vit_tiny_patch16_224`); it reads [0, 1] pixels,
  224x224, without normalization. LLaVA takes `hidden_states[-2]` (the input of the last
  block, before any final norm: the patch tokens the classifier's CLS token reads last) and
  drops CLS (`vision_feature_select_strategy="default"`): 196 image tokens.
- Projector: LLaVA's 2-layer MLP with GELU.
- Language model: a small Llama (`LlamaConfig`, tied embeddings, grouped-query attention).
- Tokenizer: word level (`tokenizers` WordLevel split on whitespace, so an answer decodes back
  to the exact label string), wrapped as a `PreTrainedTokenizerFast` that pads on the left.

A model folder is `config.json` + `model.safetensors` + `generation_config.json` + tokenizer
files (the Hugging Face layout; no pickle): `save_vlm` / `load_vlm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

IMAGE_TOKENS = 196  # 224 / 16 = 14 patches a side
FEATURE_LAYER = -2
PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE)  # ids 0..4 in this order
QUESTIONS = ("what is in the photo?", "what is this?", "name the main object in this picture.")


class VlmLoadError(ValueError):
    """A VLM folder that cannot be loaded; the message names the folder and what is wrong."""


def label_answers() -> list[str]:
    """The answer for each of the 1000 ImageNet classes in logit order: the first lemma of
    its name, lowercased ('golden retriever'). A few classes share an answer ('crane')."""
    from vtok.eval.classifier import imagenet_labels

    return [" ".join(name.split(",")[0].lower().split()) for name in imagenet_labels()]


def prompt(question: str, image_tokens: int = IMAGE_TOKENS) -> str:
    """The text of one prompt: `<s> USER: <image>x196 {question} ASSISTANT:`."""
    return f"{BOS} USER: {IMAGE * image_tokens} {question} ASSISTANT:"


def build_tokenizer(answers: Sequence[str], questions: Sequence[str] = QUESTIONS):
    """A word-level `PreTrainedTokenizerFast` whose vocabulary is the special tokens, the
    prompt's words and the answers' words (sorted, so the ids do not depend on order)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {w for text in [*questions, *answers, "USER: ASSISTANT:"] for w in text.split()}
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({w: len(SPECIALS) + i for i, w in enumerate(sorted(words - set(SPECIALS)))})
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(list(SPECIALS))  # matched before splitting: "<image><image>"
    # no decoder: tokens are joined by single spaces, which gives the label back exactly
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE}, padding_side="left")


def prompt_batch(tokenizer, questions: Sequence[str], answers: Sequence[str] | None = None,
                 image_tokens: int = IMAGE_TOKENS) -> dict[str, Tensor]:
    """`input_ids` and `attention_mask` of one prompt per question, padded on the left.

    With `answers`, each sequence ends with the answer and `</s>`, and `labels` holds their
    ids there and -100 everywhere else (the loss is on the answer tokens only)."""
    if answers is not None and len(answers) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    texts = [prompt(q, image_tokens) for q in questions]
    if answers is not None:
        texts = [f"{t} {a} {EOS}" for t, a in zip(texts, answers)]
    batch = dict(tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt"))
    if answers is not None:
        labels = torch.full_like(batch["input_ids"], -100)
        for row, answer in enumerate(answers):
            n = len(tokenizer(f"{answer} {EOS}", add_special_tokens=False)["input_ids"])
            labels[row, -n:] = batch["input_ids"][row, -n:]
        batch["labels"] = labels
    return batch


def answer_of(tokenizer, generated: Tensor) -> list[str]:
    """The answer text of each row of generated ids (the new tokens only): everything before
    the first `</s>`, special tokens removed."""
    answers = []
    for row in generated.tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


@torch.no_grad()
def generate_answers(model: nn.Module, tokenizer, pixel_values: Tensor,
                     questions: Sequence[str], max_new_tokens: int = 6) -> list[str]:
    """Greedy answers of `model` for one image and one question per row, as one batch."""
    batch = prompt_batch(tokenizer, questions, image_tokens=model.config.image_seq_length)
    batch = {k: v.to(pixel_values.device) for k, v in batch.items()}
    out = model.generate(**batch, pixel_values=pixel_values, do_sample=False,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return answer_of(tokenizer, out[:, batch["input_ids"].shape[1]:])


@torch.no_grad()
def image_features(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """What the LLaVA projector reads: `[B, 196, width]`, the vision tower's hidden state
    `config.vision_feature_layer` without CLS (precomputed once for a frozen tower)."""
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


def embeds_with_features(model: nn.Module, input_ids: Tensor, features: Tensor) -> Tensor:
    """`inputs_embeds` for `model(inputs_embeds=...)`: the token embeddings with the image
    tokens replaced by the projected `features` (as LLaVA's own forward does from pixels)."""
    embeds = model.get_input_embeddings()(input_ids)
    projected = model.model.multi_modal_projector(features.to(embeds.dtype))
    mask = (input_ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    return embeds.masked_scatter(mask, projected)


# -- the vision tower: timm ViT -> HF ViTModel ----------------------------------------------
def vit_config_from_timm(model: nn.Module):
    """The `ViTConfig` of a plain timm `VisionTransformer` (CLS token, pre-norm blocks, GELU,
    LayerNorm eps 1e-6, qkv bias)."""
    from transformers import ViTConfig

    embed = model.patch_embed
    return ViTConfig(
        hidden_size=model.embed_dim, num_hidden_layers=len(model.blocks),
        num_attention_heads=model.blocks[0].attn.num_heads,
        intermediate_size=model.blocks[0].mlp.fc1.out_features, hidden_act="gelu",
        layer_norm_eps=model.norm.eps, image_size=embed.img_size[0],
        patch_size=embed.patch_size[0], num_channels=3, qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def timm_vit_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and split the fused qkv of) a timm ViT state dict to `ViTModel`'s keys; the
    classifier head is dropped."""
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    block = {"norm1": "layernorm_before", "norm2": "layernorm_after",
             "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("head."):
            continue
        if key in top:
            out[top[key]] = value
            continue
        parts = key.split(".")
        if parts[0] != "blocks" or len(parts) < 4:
            raise ValueError(f"unexpected timm ViT weight {key!r}")
        prefix, layer, field = f"layers.{parts[1]}.", ".".join(parts[2:-1]), parts[-1]
        if layer == "attn.qkv":
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}attention.{name}.{field}"] = part.clone()
        elif layer in block:
            out[f"{prefix}{block[layer]}.{field}"] = value
        else:
            raise ValueError(f"unexpected timm ViT weight {key!r}")
    return out


def vision_tower_from_timm(model: nn.Module) -> nn.Module:
    """An HF `ViTModel` with exactly the weights of timm ViT `model` (its pooler, unused by
    LLaVA, is zero)."""
    from transformers import ViTModel

    tower = ViTModel(vit_config_from_timm(model))
    state = timm_vit_to_hf(model.state_dict())
    state.update({k: torch.zeros_like(v) for k, v in tower.state_dict().items()
                  if k.startswith("pooler.")})
    tower.load_state_dict(state, strict=True)
    return tower.eval()


# -- the whole model ------------------------------------------------------------------------
def build_vlm(tokenizer, vision_tower: nn.Module, hidden_size: int = 128, layers: int = 4,
              heads: int = 4, kv_heads: int = 2, intermediate_size: int = 384,
              feature_layer: int = FEATURE_LAYER, seed: int = 0,
              attn_implementation: str = "sdpa"):
    """A `LlavaForConditionalGeneration` with `vision_tower` (an HF `ViTModel`, weights kept),
    a fresh projector and a fresh small Llama (random weights seeded by `seed`)."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision_config = vision_tower.config
    grid = vision_config.image_size // vision_config.patch_size
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        intermediate_size=intermediate_size, max_position_embeddings=512,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(
        vision_config=vision_config, text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE), image_seq_length=grid * grid,
        projector_hidden_act="gelu", vision_feature_select_strategy="default",
        vision_feature_layer=feature_layer, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation)
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_vlm(model: nn.Module, tokenizer, directory: str | Path,
             dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the model (weights cast to `dtype`, default float16) and its tokenizer."""
    import copy

    directory = Path(directory)
    stored = copy.deepcopy(model).to(dtype) if dtype is not None else model
    stored.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def load_vlm(directory: str | Path, attn_implementation: str = "sdpa",
             dtype: torch.dtype = torch.float32):
    """(model in eval mode as `dtype`, tokenizer) from a folder written by `save_vlm`.
    Reads JSON and safetensors only; VlmLoadError when the folder is missing or damaged."""
    from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

    directory = Path(directory)
    needed = ("config.json", "model.safetensors", "tokenizer.json")
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise VlmLoadError(f"{directory}: not a VLM folder (missing {', '.join(missing)})")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
        model = LlavaForConditionalGeneration.from_pretrained(
            directory, dtype=dtype, attn_implementation=attn_implementation,
            use_safetensors=True)
    except Exception as err:  # transformers raises many types for a damaged file
        raise VlmLoadError(f"{directory}: cannot load the VLM ({type(err).__name__}: "
                           f"{err})") from None
    if tokenizer.convert_tokens_to_ids(IMAGE) != model.config.image_token_id:
        raise VlmLoadError(f"{directory}: the tokenizer's {IMAGE} id does not match the "
                           f"config's image_token_id {model.config.image_token_id}")
    return model.eval(), tokenizer
