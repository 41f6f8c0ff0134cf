"""vtok: turn images and videos into compact tokens and back, store and measure them.

Importing `vtok` is cheap; the subpackages (`vtok.quant`, ...) import torch when used.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "create_quantizer"]


def __getattr__(name: str):
    # Lazy re-exports keep `vtok --version` and `import vtok` free of the torch import.
    if name == "create_quantizer":
        from vtok.quant import create_quantizer

        return create_quantizer
    raise AttributeError(f"module 'vtok' has no attribute {name!r}")
