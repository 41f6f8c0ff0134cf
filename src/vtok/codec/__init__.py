"""Token files: the .vtok container, raw bit packing and entropy coding with a learned prior."""

from vtok.codec.container import ImageTokens, VtokFile, VtokFormatError
from vtok.codec.raw import RawCoder
from vtok.codec.tokens_file import from_vtok, read_vtok, to_vtok, write_vtok

__all__ = ["ImageTokens", "RawCoder", "VtokFile", "VtokFormatError", "from_vtok", "read_vtok",
           "to_vtok", "write_vtok"]
