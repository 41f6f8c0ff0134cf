"""Tiny random-weight LLaVA and Qwen2-VL models (transformers' own classes) and their inputs."""

from __future__ import annotations

import torch

transformers = __import__("pytest").importorskip("transformers")

IMAGE = 5  # placeholder token id in both tiny vocabularies
VIDEO = 6
PAD = 0


def _tiny_towers():
    """The tiny CLIP vision tower and Llama language model of both LLaVA variants."""
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=PAD)
    return vision, text


def tiny_llava(attn: str = "sdpa", strategy: str = "default", seed: int = 0):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision, text = _tiny_towers()
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE,
                         vision_feature_layer=-2, vision_feature_select_strategy=strategy,
                         projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn)
    return model


def llava_tokens(strategy: str = "default") -> int:
    return 16 if strategy == "default" else 17


def llava_prompts(g: torch.Generator, image_tokens, text_lengths):
    """Left-padded (input_ids, attention_mask): per sample, its text tokens, then for each of
    its images that many placeholders and one text token, then 2 text tokens."""
    rows = []
    for counts, length in zip(image_tokens, text_lengths, strict=True):
        row = torch.randint(7, 64, (length,), generator=g).tolist()
        for n in counts:
            row += [IMAGE] * n + torch.randint(7, 64, (1,), generator=g).tolist()
        rows.append(row + torch.randint(7, 64, (2,), generator=g).tolist())
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


def llava_batch(images_per_sample=(1, 2), text_lengths=(3, 6), seed: int = 1,
                strategy: str = "default"):
    """Left-padded prompts, each `text` tokens then its images' placeholders then 2 tokens."""
    g = torch.Generator().manual_seed(seed)
    n = llava_tokens(strategy)
    ids, mask = llava_prompts(g, [[n] * images for images in images_per_sample], text_lengths)
    pixels = torch.rand(sum(images_per_sample), 3, 32, 32, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def split_llava(batch: dict, images_per_sample) -> list[dict]:
    """Each sample of `llava_batch` (or `llava_next_batch`) alone, without padding."""
    out, first = [], 0
    for i, images in enumerate(images_per_sample):
        real = batch["attention_mask"][i].bool()
        one = {k: batch[k][i][real][None] for k in ("input_ids", "attention_mask")}
        for key in ("pixel_values", "image_sizes"):
            if key in batch:
                one[key] = batch[key][first:first + images]
        out.append(one)
        first += images
    return out


def tiny_qwen2_vl(attn: str = "sdpa", seed: int = 0):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 48, "num_heads": 4,
                       "patch_size": 4, "spatial_merge_size": 2, "temporal_patch_size": 2},
        text_config={"vocab_size": 64, "hidden_size": 48, "intermediate_size": 96,
                     "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 512, "pad_token_id": PAD,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [2, 2, 2]}},
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=3,
        vision_end_token_id=4)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn)
    return model


QWEN_PATCH = 3 * 2 * 4 * 4  # channels x temporal patch x patch x patch


def qwen_batch(items_per_sample=(("image",), ("image", "video")), text_lengths=(3, 6),
               seed: int = 1):
    """Left-padded Qwen2-VL prompts: images are 8x4 patches (8 tokens), videos 2x8x4 (16)."""
    g = torch.Generator().manual_seed(seed)
    grids = {"image": (1, 8, 4), "video": (2, 8, 4)}
    token = {"image": IMAGE, "video": VIDEO}
    rows, types, pixels = [], [], {"image": [], "video": []}
    for items, length in zip(items_per_sample, text_lengths, strict=True):
        row = torch.randint(7, 64, (length,), generator=g).tolist()
        kind_row = [0] * length
        for kind in items:
            t, h, w = grids[kind]
            n = t * h * w // 4
            row += [3] + [token[kind]] * n + [4]
            kind_row += [0] + [1 if kind == "image" else 2] * n + [0]
            pixels[kind].append(torch.rand(t * h * w, QWEN_PATCH, generator=g))
        rows.append(row + torch.randint(7, 64, (2,), generator=g).tolist())
        types.append(kind_row + [0, 0])
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mm = torch.zeros(len(rows), width, dtype=torch.int)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (row, kinds) in enumerate(zip(rows, types, strict=True)):
        ids[i, width - len(row):] = torch.tensor(row)
        mm[i, width - len(row):] = torch.tensor(kinds, dtype=torch.int)
        mask[i, width - len(row):] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": mm}
    for kind in ("image", "video"):
        if pixels[kind]:
            key = "pixel_values" if kind == "image" else "pixel_values_videos"
            batch[key] = torch.cat(pixels[kind])
            batch[f"{kind}_grid_thw"] = torch.tensor([grids[kind]] * len(pixels[kind]))
    return batch


def split_qwen(batch: dict, items_per_sample) -> list[dict]:
    out, used = [], {"image": 0, "video": 0}
    sizes = {"image": 32, "video": 64}
    for i, items in enumerate(items_per_sample):
        real = batch["attention_mask"][i].bool()
        one = {k: batch[k][i][real][None]
               for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        for kind in ("image", "video"):
            count = items.count(kind)
            if count:
                key = "pixel_values" if kind == "image" else "pixel_values_videos"
                one[key] = batch[key][used[kind] * sizes[kind]:(used[kind] + count) * sizes[kind]]
                one[f"{kind}_grid_thw"] = batch[f"{kind}_grid_thw"][used[kind]:used[kind] + count]
                used[kind] += count
        out.append(one)
    return out


def tiny_llava_next(attn: str = "sdpa", seed: int = 0, onevision: bool = False):
    """LLaVA-NeXT (anyres tiles + a newline token per row of features), the tiny LLaVA's sizes;
    `onevision`: LLaVA-OneVision, the same image path (it adds videos, not used here)."""
    import transformers

    name = "LlavaOnevision" if onevision else "LlavaNext"
    options = {"video_token_id": VIDEO} if onevision else {}
    torch.manual_seed(seed)
    vision, text = _tiny_towers()
    config = getattr(transformers, f"{name}Config")(
        vision_config=vision, text_config=text, image_token_id=IMAGE, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]], **options)
    model = getattr(transformers, f"{name}ForConditionalGeneration")(config).eval()
    model.set_attn_implementation(attn)
    return model


NEXT_SIZES = ((30, 60), (64, 64), (60, 30))  # image (height, width): 3, 5 and 3 tiles


def llava_next_batch(model, images_per_sample=(1, 2), text_lengths=(3, 6), seed: int = 1):
    """Left-padded LLaVA-NeXT prompts; each image's placeholder count is what the model's own
    packing gives its size (tiles, unpadding, newline tokens)."""
    g = torch.Generator().manual_seed(seed)
    count = sum(images_per_sample)
    sizes = torch.tensor(NEXT_SIZES[:count])
    pixels = torch.rand(count, 5, 3, 32, 32, generator=g)  # up to 5 tiles per image
    with torch.no_grad():
        features = model.model.get_image_features(
            pixels, sizes, vision_feature_layer=-2,
            vision_feature_select_strategy="default").pooler_output
    tokens = [int(f.shape[0]) for f in features]
    starts = [sum(images_per_sample[:i]) for i in range(len(images_per_sample))]
    ids, mask = llava_prompts(g, [tokens[a:a + n] for a, n in zip(starts, images_per_sample)],
                              text_lengths)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels,
            "image_sizes": sizes}, tokens
