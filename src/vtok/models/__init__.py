"""Tokenizers: 2D convolutional (`conv2d`) and 1D transformer (`titok`), presets, loading."""

from vtok.models.base import ARCHITECTURES, Tokenizer, TokenizerConfig, Tokens
from vtok.models.conv2d import ConvTokenizer, ConvTokenizerConfig
from vtok.models.presets import PRESETS, create_tokenizer, list_pretrained, load, preset_config
from vtok.models.titok import TiTokConfig, TiTokTokenizer

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "ConvTokenizer",
    "ConvTokenizerConfig",
    "TiTokConfig",
    "TiTokTokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "Tokens",
    "create_tokenizer",
    "list_pretrained",
    "load",
    "preset_config",
]
