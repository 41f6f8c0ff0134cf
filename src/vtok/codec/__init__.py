"""Token files: the .vtok container, raw bit packing and entropy coding with a learned prior.

Reading a file (`read_vtok`, the container) needs numpy only; the functions that convert
between files and a tokenizer's `Tokens` import torch, on first use.
"""

from vtok.codec.container import ImageTokens, VtokFile, VtokFormatError, read_vtok
from vtok.codec.raw import RawCoder

__all__ = ["ImageTokens", "RawCoder", "VtokFile", "VtokFormatError", "from_vtok", "read_vtok",
           "to_vtok", "write_vtok"]
_NEED_TORCH = ("from_vtok", "to_vtok", "write_vtok")


def __getattr__(name: str):
    if name in _NEED_TORCH:
        from vtok.codec import tokens_file

        return getattr(tokens_file, name)
    raise AttributeError(f"module 'vtok.codec' has no attribute {name!r}")
