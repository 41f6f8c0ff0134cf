"""The presets of the released configurations have the released models' sizes (counted on the
meta device: nothing is allocated)."""

import pytest
import torch

from vtok.models import create_tokenizer, preset_config

# Weights (all parameters, codebook included). LlamaGen's README publishes 72M (VQ-16) and
# 70M (VQ-8). taming-transformers and TiTok publish no count: theirs are pinned here as
# counted from the architecture their fixtures document (tests/models/published/fixtures).
PUBLISHED = {"llamagen-vq-16": 72e6, "llamagen-vq-8": 70e6}
COUNTED = {"llamagen-vq-16": 71_883_403, "llamagen-vq-8": 70_109_835,
           "taming-vqgan-f16-16384": 76_073_859, "taming-vqgan-f16-1024": 72_141_699,
           "titok-published-l-32": 641_054_735, "titok-published-b-64": 204_814_095,
           "titok-published-s-128": 83_674_639}


def count(name: str) -> tuple[int, int]:
    """(every weight, the weights outside the quantizer)."""
    with torch.device("meta"):
        model = create_tokenizer(name)
    params = dict(model.named_parameters())
    return (sum(p.numel() for p in params.values()),
            sum(p.numel() for n, p in params.items() if not n.startswith("quantizer.")))


@pytest.mark.parametrize("name", COUNTED)
def test_published_presets_have_the_released_sizes(name):
    total, outside = count(name)
    assert total == COUNTED[name]
    if name in PUBLISHED:  # the README rounds to the nearest million
        assert round(total / 1e6) == PUBLISHED[name] / 1e6
    assert preset_config(name).parameter_estimate() == outside  # the estimate is exact


def test_published_presets_describe_the_releases():
    vq16 = preset_config("llamagen-vq-16")
    assert (vq16.channels, vq16.channel_mult, vq16.num_res_blocks, vq16.z_channels,
            vq16.latent_dim, vq16.quantizer_options["codebook_size"],
            vq16.quantizer_options["distance"]) == (128, (1, 1, 2, 2, 4), 2, 256, 8, 16384,
                                                    "cosine")
    assert preset_config("llamagen-vq-8").downsample == 8
    taming = preset_config("taming-vqgan-f16-1024")
    assert (taming.latent_dim, taming.quantizer_options["codebook_size"],
            taming.attention_factors) == (256, 1024, (16,))
    for name, width, depth, tokens in (("l-32", 1024, 24, 32), ("b-64", 768, 12, 64),
                                       ("s-128", 512, 8, 128)):
        c = preset_config(f"titok-published-{name}")
        assert (c.width, c.depth, c.heads, c.num_latent_tokens, c.latent_dim,
                c.quantizer_options["codebook_size"], c.image_size) == (
            width, depth, width // 64, tokens, 12, 4096, 256)
