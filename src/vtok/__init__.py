"""vtok: turn images into compact tokens and back, store and measure them.

Importing `vtok` is cheap; the subpackages (`vtok.quant`, ...) import torch when used.
"""

__version__ = "0.2.0"

__all__ = ["__version__", "create_quantizer", "create_tokenizer", "list_pretrained", "load"]
_LAZY = {
    "create_quantizer": "vtok.quant",
    "create_tokenizer": "vtok.models",
    "list_pretrained": "vtok.models",
    "load": "vtok.models",
}


def __getattr__(name: str):
    # Lazy re-exports keep `vtok --version` and `import vtok` free of the torch import.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vtok' has no attribute {name!r}")
