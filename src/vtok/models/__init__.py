"""Tokenizers: 2D convolutional (`conv2d`), causal 3D convolutional for video and images
(`conv3d`) and 1D transformer (`titok`), the published ones (`llamagen-vq`, `taming-vqgan`,
`titok-published`; `vtok.models.convert` reads their release checkpoints), presets, loading.

Importing `vtok.models` is cheap: `list_pretrained` (and `vtok.models.shipped`) read the
shipped folders' config.json without torch; the other names import the models on first use.
"""

import importlib

_HOMES = {
    "ARCHITECTURES": "vtok.models.base",
    "Tokenizer": "vtok.models.base",
    "TokenizerConfig": "vtok.models.base",
    "Tokens": "vtok.models.base",
    "ConvTokenizer": "vtok.models.conv2d",
    "ConvTokenizerConfig": "vtok.models.conv2d",
    "Conv3dTokenizer": "vtok.models.conv3d",
    "Conv3dTokenizerConfig": "vtok.models.conv3d",
    "TiTokConfig": "vtok.models.titok",
    "TiTokTokenizer": "vtok.models.titok",
    "LlamaGenVQ": "vtok.models.vqgan",
    "TamingVQGAN": "vtok.models.vqgan",
    "PublishedTiTok": "vtok.models.titok_published",
    "PRESETS": "vtok.models.presets",
    "create_tokenizer": "vtok.models.presets",
    "load": "vtok.models.presets",
    "preset_config": "vtok.models.presets",
    "list_pretrained": "vtok.models.shipped",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vtok.models' has no attribute {name!r}")
    if home != "vtok.models.shipped":
        importlib.import_module("vtok.models.presets")  # registers every architecture
    return getattr(importlib.import_module(home), name)
